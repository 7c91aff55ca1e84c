"""What ``wgpuDevicePoll``'s result says while the device still copies.

On the first adapter whose summary holds the token given (default: the first),
three times: a 64 MiB ``copy_buffer_to_buffer`` is submitted, then five
non-blocking polls print (microseconds since the submit, the poll's "queue
empty" result), then a blocking poll, whose return time shows how long the copy
still ran. On lavapipe (this probe) the non-blocking poll answers "empty" while
the copy runs, and on the H200 a wait that trusted it timed a 1 GiB copy at
9 TB/s (``docs/results/h200-1202-spin-bogus-sync-bench.txt``): so ``synchronize``
waits for a fence's map instead.
Run: ``python benchmarks/probes/poll_empty.py [TOKEN]``.
"""

from __future__ import annotations

import sys
import time

import wgpu
from _median import large_device

from tensorferry_webgpu import _native

NBYTES = 64 << 20


def main() -> None:
    """Print one line per copy."""
    adapter, gpu = large_device(sys.argv[1] if len(sys.argv) > 1 else "")
    print(f"# {adapter.summary}")
    native = _native._native()
    poll = native.libf.wgpuDevicePoll
    usage = wgpu.BufferUsage
    source = gpu.create_buffer(size=NBYTES, usage=usage.COPY_SRC)
    target = gpu.create_buffer(size=NBYTES, usage=usage.COPY_DST)
    for _ in range(3):
        encoder = gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(source, 0, target, 0, NBYTES)
        gpu.queue.submit([encoder.finish()])
        start = time.perf_counter()
        answers = []
        for _ in range(5):
            empty = bool(poll(gpu._internal, False, native.null))
            answers.append(f"{(time.perf_counter() - start) * 1e6:.0f} us: {empty}")
        poll(gpu._internal, True, native.null)
        done = (time.perf_counter() - start) * 1e6
        print(
            f"non-blocking polls: {', '.join(answers)}; the blocking poll returned at {done:.0f} us"
        )


if __name__ == "__main__":
    main()
