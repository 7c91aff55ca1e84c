"""The host's own copy into a new array, alone and while the device writes into
mapped readback memory: the ceiling of a download into a new array.

A ``Tensor.numpy()`` of a large tensor does two things at once: the device
copies the tensor into ``MAP_READ`` staging (DMA into host memory, no host
core), and the host's copy threads copy staging into the new array, after the
kernel has zeroed each of its pages. This probe takes the device's part away
from tensorferry: a thread keeps raw wgpu copies of a 256 MiB buffer into a
256 MiB ``MAP_READ`` buffer going at up to RATE GB/s (default 25, the rate a
download would need; 0 is as fast as the device goes), and beside it the host
copies SIZE MiB (default 1024) into an array allocated as ``Tensor.numpy()``
allocates it, in 4 MiB parts on THREADS threads (default: one per core).
Rounds alternate alone / with the device writing; medians of ROUNDS (default 5).
Run: ``python benchmarks/probes/dma_beside.py [SIZE [THREADS [RATE [ROUNDS]]]] [TOKEN]``.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import wgpu
from _median import large_device
from aligned_new import aligned_empty

from tensorferry.bench._numpy import ThreadedNumpyPath
from tensorferry_webgpu._waits import wait_for_queue

BLOCK = 256 << 20
COPIES = 4  # copies of BLOCK per submit


class DeviceWrites:
    """A thread that copies a device buffer into a MAP_READ buffer, over and over,
    at up to ``rate`` GB/s (0: unthrottled), counting the bytes it moved."""

    def __init__(self, gpu: wgpu.GPUDevice, rate: float) -> None:
        self._gpu, self._rate = gpu, rate
        usage = wgpu.BufferUsage
        self._src = gpu.create_buffer(size=BLOCK, usage=usage.STORAGE | usage.COPY_SRC)
        self._dst = gpu.create_buffer(size=BLOCK, usage=usage.MAP_READ | usage.COPY_DST)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.moved = 0
        self.seconds = 0.0

    def __enter__(self) -> DeviceWrites:
        self._stop.clear()
        self.moved, self.seconds = 0, 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.05)  # the first submits are in flight before the host starts
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        queue, start = self._gpu.queue, time.perf_counter()
        while not self._stop.is_set():
            encoder = self._gpu.create_command_encoder()
            for _ in range(COPIES):
                encoder.copy_buffer_to_buffer(self._src, 0, self._dst, 0, BLOCK)
            queue.submit([encoder.finish()])
            wait_for_queue(self._gpu, queue, lost_after=10.0)
            self.moved += COPIES * BLOCK
            elapsed = time.perf_counter() - start
            if self._rate:
                ahead = self.moved / (self._rate * 1e9) - elapsed
                if ahead > 0:
                    time.sleep(ahead)
        self.seconds = time.perf_counter() - start


def main() -> None:
    """Print the host's copy rate alone and beside the device's writes."""
    args = [a for a in sys.argv[1:] if a.replace(".", "").isdigit()]
    token = next((a for a in sys.argv[1:] if not a.replace(".", "").isdigit()), "")
    size = int(args[0]) << 20 if args else 1 << 30
    threads = int(args[1]) if len(args) > 1 else os.cpu_count() or 1
    rate = float(args[2]) if len(args) > 2 else 25.0
    rounds = int(args[3]) if len(args) > 3 else 5
    _, gpu = large_device(token)
    writes = DeviceWrites(gpu, rate)
    host = ThreadedNumpyPath(threads)
    data = np.random.default_rng(0).integers(0, 255, size, np.uint8)

    def copy_new() -> float:
        start = time.perf_counter()
        out = host.copy(aligned_empty(size), data)
        seconds = time.perf_counter() - start
        assert out[-1] == data[-1]
        return size / seconds / 1e9

    copy_new()
    alone, beside, device = [], [], []
    for _ in range(rounds):
        alone.append(copy_new())
        with writes:
            beside.append(copy_new())
        device.append(writes.moved / writes.seconds / 1e9)
    host.close()
    runs = "; ".join(
        f"{name} {', '.join(f'{v:.1f}' for v in values)}"
        for name, values in (("alone", alone), ("beside", beside))
    )
    print(
        f"{size >> 20} MiB into a new array on {threads} threads: alone "
        f"{np.median(alone):.1f} GB/s, beside the device writing {np.median(beside):.1f} GB/s "
        f"(device at {np.median(device):.1f} GB/s, limit {rate or 'none'}); {runs}"
    )


if __name__ == "__main__":
    main()
