"""How long waiting for a map takes: wgpu-py's poll-thread hand-off against a
blocking poll on the calling thread, and what a small tensorferry download costs.

On the best WebGPU device (the first of ``tensorferry_webgpu.adapters()`` in the
backend's order), p50 and p99 in microseconds over 400 runs each:

* copy 4 KiB into a MAP_READ buffer, then ``buffer.map_sync`` (wgpu-py hands
  the wait to its per-device poll thread) and unmap;
* the same copy, then ``wgpuBufferMapAsync`` + a blocking ``wgpuDevicePoll`` on
  the calling thread (tensorferry's wait) and unmap;
* an empty submit + blocking poll (the floor);
* a 4 KiB tensorferry download, ``Tensor.numpy(out=...)``.

Run: ``python benchmarks/probes/map_wait.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _native, _waits

SIZE = 4096
RUNS = 400


def percentiles(work: Callable[[], object]) -> tuple[float, float]:
    """p50 and p99 of ``work`` in microseconds, after 20 untimed runs."""
    for _ in range(20):
        work()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(times, [50, 99]) * 1e6
    return float(p50), float(p99)


def main() -> None:
    """Print one line per measurement."""
    with tf.Environment() as env:
        device = env.device("webgpu")
        context = tw.backend_of(env).context(device)
        gpu = context.gpu
        usage = wgpu.BufferUsage
        source = gpu.create_buffer(size=SIZE, usage=usage.STORAGE | usage.COPY_SRC)
        readback = gpu.create_buffer(size=SIZE, usage=usage.MAP_READ | usage.COPY_DST)

        def copy() -> None:
            encoder = gpu.create_command_encoder()
            encoder.copy_buffer_to_buffer(source, 0, readback, 0, SIZE)
            gpu.queue.submit([encoder.finish()])

        def poll_thread() -> None:
            copy()
            readback.map_sync(wgpu.MapMode.READ, 0, SIZE)
            readback.unmap()

        def blocking_poll() -> None:
            copy()
            _waits.request_map(readback, _native.MAP_READ, 0, SIZE).wait(gpu, lost_after=10)
            readback.unmap()

        def floor() -> None:
            gpu.queue.submit([])
            gpu._poll_wait()  # wgpu-py's own blocking wgpuDevicePoll

        tensor = env.from_numpy(np.ones(SIZE, np.uint8), device)
        out = np.empty(SIZE, np.uint8)
        print(f"device: {device.name}")
        for label, work in (
            ("4 KiB copy + map_sync (wgpu-py poll thread)", poll_thread),
            ("4 KiB copy + map + blocking poll (calling thread)", blocking_poll),
            ("empty submit + blocking poll (floor)", floor),
            ("tensorferry 4 KiB download", lambda: tensor.numpy(out=out)),
        ):
            p50, p99 = percentiles(work)
            print(f"{label}: p50 {p50:.1f} us, p99 {p99:.1f} us")


if __name__ == "__main__":
    main()
