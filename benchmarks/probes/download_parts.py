"""Where a small download's time goes, phase by phase, beside tensorferry's own.

On the first adapter whose summary holds the token given (default: the first),
for 4 KiB, 64 KiB, 501 KiB (a decode step's logits) and 4 MiB, p50 in
microseconds over 300 runs of a raw download (a copy from a device buffer
into a persistent MAP_READ buffer, map, blocking poll on the calling thread,
``numpy.copyto`` out of the mapping, unmap), each phase timed apart:

    encode+submit | request map | wait | copy out | unmap | total

then tensorferry's ``Tensor.numpy(out=...)`` of the same size, and with
``--profile=BYTES`` the functions where tensorferry's downloads of that size spend
their time (cProfile, 2000 runs).
Run: ``python benchmarks/probes/download_parts.py [TOKEN] [--profile=BYTES ...]``.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import numpy as np
import wgpu
from _median import webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _native, _waits

RUNS = 300
SIZES = (4 << 10, 64 << 10, 128256 * 4, 4 << 20)
PHASES = ("encode+submit", "request map", "wait", "copy out", "unmap", "total")


def raw_phases(gpu: wgpu.GPUDevice, nbytes: int, capacity: int = 0) -> list[float]:
    """p50 of each phase, microseconds; the MAP_READ buffer holds ``capacity``
    bytes (at least ``nbytes``)."""
    usage = wgpu.BufferUsage
    source = gpu.create_buffer(size=nbytes, usage=usage.STORAGE | usage.COPY_SRC)
    readback = gpu.create_buffer(size=max(nbytes, capacity), usage=usage.MAP_READ | usage.COPY_DST)
    out = np.ones(nbytes, np.uint8)
    samples: list[list[float]] = [[] for _ in PHASES]
    clock = time.perf_counter
    for run in range(RUNS + 20):
        t0 = clock()
        encoder = gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(source, 0, readback, 0, nbytes)
        gpu.queue.submit([encoder.finish()])
        t1 = clock()
        request = _waits.request_map(readback, _native.MAP_READ, 0, nbytes)
        t2 = clock()
        request.wait(gpu, lost_after=10)
        t3 = clock()
        np.copyto(out, _native.mapped_array(readback, 0, nbytes))
        t4 = clock()
        readback.unmap()
        t5 = clock()
        if run >= 20:
            for i, value in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                samples[i].append(value)
    return [float(np.median(s)) * 1e6 for s in samples]


def p50_us(work: object) -> float:
    """p50 of ``work()`` in microseconds after 20 untimed runs."""
    for _ in range(20):
        work()  # type: ignore[operator]
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main() -> None:
    """Print one table row per size, then the profile when asked."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    token = args[0] if args else ""
    with tf.Environment() as env:
        device = webgpu_device(env, token)
        gpu = tw.backend_of(env).context(device).gpu
        print(f"# {device} {device.name}; p50 us over {RUNS} runs")
        print("size | " + " | ".join(PHASES) + " | tensorferry")
        for nbytes in SIZES:
            phases = raw_phases(gpu, nbytes)
            tensor = env.from_numpy(np.ones(nbytes, np.uint8), device)
            out = np.empty(nbytes, np.uint8)
            ours = p50_us(lambda t=tensor, o=out: t.numpy(out=o))
            row = " | ".join(f"{v:.1f}" for v in phases)
            print(f"{nbytes} | {row} | {ours:.1f}", flush=True)
            row = " | ".join(f"{v:.1f}" for v in raw_phases(gpu, nbytes, 16 << 20))
            print(f"{nbytes} (16 MiB MAP_READ buffer) | {row}", flush=True)
        for flag in sys.argv[1:]:
            if flag.startswith("--profile="):
                nbytes = int(flag.partition("=")[2])
                tensor = env.from_numpy(np.ones(nbytes, np.uint8), device)
                out = np.empty(nbytes, np.uint8)
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(2000):
                    tensor.numpy(out=out)
                profile.disable()
                print(f"# profile of 2000 downloads of {nbytes} bytes")
                pstats.Stats(profile).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
