"""Where wgpu places mappable buffers, and what that costs each side.

For each buffer usage below (``mappable-primary-buffers`` lets a buffer combine
MAP_READ/MAP_WRITE with other usages), on the first adapter whose summary holds
the token given (default: the first adapter), with 64 MiB buffers:

* the device's copy into it from a device buffer and out of it into one
  (GB/s, median of 5, each until an empty submit's blocking poll returns);
* the host's writes into its mapping and reads out of it (one thread,
  ``numpy.copyto``, GB/s); reads stop early where they crawl (uncached memory
  such as a discrete GPU's BAR).

Device-side copies far above the host link's speed mean the buffer sits in
device memory (the BAR); host reads near memory speed mean cached host memory.
Run: ``python benchmarks/probes/placement.py [TOKEN]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import wgpu
from _median import adapter_named, median_seconds

from tensorferry_webgpu import _native, _waits

SIZE = 64 << 20
U = wgpu.BufferUsage
USAGES = {
    "MAP_READ|COPY_DST": U.MAP_READ | U.COPY_DST,
    "MAP_WRITE|COPY_SRC": U.MAP_WRITE | U.COPY_SRC,
    "MAP_READ|COPY_SRC|COPY_DST": U.MAP_READ | U.COPY_SRC | U.COPY_DST,
    "MAP_WRITE|COPY_SRC|COPY_DST": U.MAP_WRITE | U.COPY_SRC | U.COPY_DST,
    "MAP_READ|MAP_WRITE|COPY_SRC|COPY_DST": U.MAP_READ | U.MAP_WRITE | U.COPY_SRC | U.COPY_DST,
    "MAP_READ|MAP_WRITE|COPY_SRC|COPY_DST|STORAGE": (
        U.MAP_READ | U.MAP_WRITE | U.COPY_SRC | U.COPY_DST | U.STORAGE
    ),
    "MAP_READ|COPY_SRC|COPY_DST|STORAGE": U.MAP_READ | U.COPY_SRC | U.COPY_DST | U.STORAGE,
}


def host_rate(copy: Callable[[], object], nbytes: int) -> str:
    """GB/s of ``copy()`` (moving ``nbytes``), or a note when one run is too slow."""
    start = time.perf_counter()
    copy()
    first = time.perf_counter() - start
    if first > 0.05:
        return f"{nbytes / first / 1e9:.3f} (one run; crawls)"
    return f"{nbytes / median_seconds(copy, 5) / 1e9:.2f}"


def main() -> None:
    """Print one line per usage."""
    token = sys.argv[1] if len(sys.argv) > 1 else ""
    adapter = adapter_named(token)
    gpu = adapter.request_device_sync(required_features=["mappable-primary-buffers"])
    print(f"# {adapter.summary}")
    device_buffer = gpu.create_buffer(size=SIZE, usage=U.STORAGE | U.COPY_SRC | U.COPY_DST)
    data = np.random.default_rng(0).integers(0, 255, SIZE, np.uint8)
    gpu.queue.write_buffer(device_buffer, 0, data)
    small = 1 << 20
    out = np.ones(SIZE, np.uint8)

    def copy(src: wgpu.GPUBuffer, dst: wgpu.GPUBuffer) -> None:
        encoder = gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, SIZE)
        gpu.queue.submit([encoder.finish()])
        _waits.wait_idle(gpu)

    for name, usage in USAGES.items():
        buffer = gpu.create_buffer(size=SIZE, usage=usage)
        parts = [name]
        if usage & U.COPY_DST:
            seconds = median_seconds(partial(copy, device_buffer, buffer), 5)
            parts.append(f"device->it {SIZE / seconds / 1e9:.1f} GB/s")
        if usage & U.COPY_SRC:
            seconds = median_seconds(partial(copy, buffer, device_buffer), 5)
            parts.append(f"it->device {SIZE / seconds / 1e9:.1f} GB/s")
        mode = _native.MAP_READ if usage & U.MAP_READ else _native.MAP_WRITE
        _waits.request_map(buffer, mode, 0, SIZE).wait(gpu, lost_after=10)
        view = _native.mapped_array(buffer, 0, SIZE)
        if usage & U.MAP_WRITE:
            parts.append("host writes " + host_rate(partial(np.copyto, view, data), SIZE))
        if usage & U.MAP_READ:
            rate = host_rate(partial(np.copyto, out[:small], view[:small]), small)
            parts.append(f"host reads {rate} (1 MiB)")
            if "crawls" not in rate:
                rate = host_rate(partial(np.copyto, out, view), SIZE)
                parts.append(f"host reads {rate} (64 MiB)")
        del view
        buffer.unmap()
        buffer.destroy()
        print("; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
