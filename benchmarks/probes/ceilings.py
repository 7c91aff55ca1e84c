"""What the hardware allows, without tensorferry: the ceilings of each step of a
WebGPU transfer, for reading tensorferry's own figures against.

Measures, for one 64 MiB buffer on the first Vulkan adapter: host writes into
mapped upload staging, host-to-host copies, the device-side copy from staging,
the device-to-readback copy plus map, host reads out of mapped readback memory
(each with 1, 4, 8 and 16 threads), a tiny copy-and-map round trip, and a 4 KiB
``queue.write_buffer``. Run: ``python benchmarks/probes/ceilings.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import numpy.typing as npt
import wgpu
from _median import median_seconds

SIZE = 64 << 20
THREADS = (1, 4, 8, 16)
Bytes = npt.NDArray[np.uint8]


def threaded_copy(pool: ThreadPoolExecutor, threads: int, dst: Bytes, src: Bytes) -> None:
    """``dst[...] = src`` split into ``threads`` parts."""
    step = -(-len(src) // threads)
    parts = [
        pool.submit(np.copyto, dst[i : i + step], src[i : i + step])
        for i in range(0, len(src), step)
    ]
    for part in parts:
        part.result()


def main() -> None:
    """Print one line per measurement, in GB/s unless it says otherwise."""
    adapter = next(a for a in wgpu.gpu.enumerate_adapters_sync() if "Vulkan" in a.summary)
    device = adapter.request_device_sync(required_limits={"max-buffer-size": 1 << 30})
    usage = wgpu.BufferUsage
    source = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8)
    target = np.empty_like(source)
    pool = ThreadPoolExecutor(max(THREADS))

    def gbps(seconds: float) -> float:
        return SIZE / seconds / 1e9

    staging = device.create_buffer(
        size=SIZE, usage=usage.MAP_WRITE | usage.COPY_SRC, mapped_at_creation=True
    )
    mapped = np.frombuffer(staging._experimental_get_mapped_range(0, SIZE), np.uint8)
    for n in THREADS:
        seconds = median_seconds(partial(threaded_copy, pool, n, mapped, source))
        print(f"host -> upload staging, {n} threads: {gbps(seconds):.1f}")
    for n in THREADS:
        seconds = median_seconds(partial(threaded_copy, pool, n, target, source))
        print(f"host -> host, {n} threads: {gbps(seconds):.1f}")
    del mapped  # no view of mapped memory may outlive the unmap
    staging.unmap()

    gpu = device.create_buffer(size=SIZE, usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST)
    readback = device.create_buffer(size=SIZE, usage=usage.MAP_READ | usage.COPY_DST)
    tiny = device.create_buffer(size=16, usage=usage.MAP_READ | usage.COPY_DST)

    def copy_then_sync(src: wgpu.GPUBuffer, dst: wgpu.GPUBuffer, wait_on: wgpu.GPUBuffer) -> None:
        encoder = device.create_command_encoder()
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, dst.size)
        if wait_on is tiny and dst is not tiny:
            encoder.copy_buffer_to_buffer(gpu, 0, tiny, 0, 16)
        device.queue.submit([encoder.finish()])
        wait_on.map_sync(wgpu.MapMode.READ)
        wait_on.unmap()

    def staging_to_device() -> None:
        copy_then_sync(staging, gpu, tiny)

    def device_to_readback() -> None:
        copy_then_sync(gpu, readback, readback)

    def tiny_round_trip() -> None:
        copy_then_sync(gpu, tiny, tiny)

    print(f"upload staging -> device: {gbps(median_seconds(staging_to_device)):.1f}")
    print(f"device -> readback + map: {gbps(median_seconds(device_to_readback)):.1f}")
    print(f"16-byte copy + map round trip: {median_seconds(tiny_round_trip) * 1e3:.3f} ms")

    readback.map_sync(wgpu.MapMode.READ)
    view = np.frombuffer(readback.read_mapped(0, SIZE, copy=False), np.uint8)
    for n in THREADS:
        seconds = median_seconds(partial(threaded_copy, pool, n, target, view))
        print(f"readback -> host, {n} threads: {gbps(seconds):.1f}")
    del view
    readback.unmap()

    small = np.ones(4096, np.uint8)

    def write_small() -> None:
        device.queue.write_buffer(gpu, 0, small)
        device.queue.submit([])

    print(f"queue.write_buffer 4 KiB + submit: {median_seconds(write_small, 200) * 1e6:.1f} us")
    pool.shutdown()


if __name__ == "__main__":
    main()
