"""Two ways to wait until a queue's work is done, timed after a 4 KiB ``write_buffer``.

* fence: a 4-byte copy into a MAP_READ buffer submitted, its map waited for
  (spinning first), unmapped: what ``Context.synchronize`` does.
* work-done: an empty submit (which carries queued writes), then
  ``wgpuQueueOnSubmittedWorkDone`` and non-blocking polls until its callback ran.

Also checks each is truthful: after a 64 MiB device copy (or ``write_buffer``) into a
mappable buffer and the wait, a map of that buffer must resolve on one non-blocking poll.
A control without a wait shows whether the check can tell: after the copy it cannot
resolve (0 of 3 on lavapipe and the H200); after a ``write_buffer`` it does resolve on
both, so that half of the check does not discriminate.
Run: ``python benchmarks/probes/work_done.py [TOKEN] [ROUNDS]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import wgpu
from _median import large_device

from tensorferry_webgpu import _native, _waits

SPIN = 200e-6
BIG = 64 << 20


def main() -> None:
    """Print p50 / p99 of each wait, alternating blocks, and the truth checks."""
    adapter, gpu = large_device(sys.argv[1] if len(sys.argv) > 1 else "")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"# {adapter.summary}")
    native = _native._native()
    ffi = __import__("wgpu.backends.wgpu_native._ffi", fromlist=["ffi"]).ffi
    lib = native.raw
    poll = native.libf.wgpuDevicePoll
    usage = wgpu.BufferUsage
    queue = gpu.queue
    target = gpu.create_buffer(size=4096, usage=usage.COPY_DST | usage.STORAGE)
    data = np.ones(4096, np.uint8)
    source = gpu.create_buffer(size=4, usage=usage.COPY_SRC)
    fence = gpu.create_buffer(size=4, usage=usage.MAP_READ | usage.COPY_DST)
    done = [0]

    def on_done(status: int, _message: object, _u1: object, _u2: object) -> None:
        done[0] = int(status)

    kind = "void(WGPUQueueWorkDoneStatus, WGPUStringView, void *, void *)"
    callback = ffi.callback(kind)(on_done)  # kept alive: the struct does not hold it
    info = ffi.new("WGPUQueueWorkDoneCallbackInfo *")
    info.mode = lib.WGPUCallbackMode_AllowProcessEvents
    info.callback = callback

    def by_fence() -> None:
        _native.submit_copies(gpu, queue, [(source, 0, fence, 0, 4)])
        _waits.request_map(fence, _native.MAP_READ, 0, 4).wait(gpu, lost_after=10, spin=SPIN)
        fence.unmap()

    def by_work_done() -> None:
        done[0] = 0
        lib.wgpuQueueSubmit(queue._internal, 0, ffi.NULL)
        lib.wgpuQueueOnSubmittedWorkDone(queue._internal, info[0])
        end = time.perf_counter() + SPIN
        while not done[0] and time.perf_counter() < end:
            poll(gpu._internal, False, ffi.NULL)
        while not done[0]:
            poll(gpu._internal, True, ffi.NULL)
        if done[0] != 1:
            raise RuntimeError(f"work done status {done[0]}")

    waits = {"fence": by_fence, "work-done": by_work_done}
    times: dict[str, list[float]] = {name: [] for name in waits}
    for _ in range(rounds):
        for name, wait in waits.items():
            for _ in range(200):
                start = time.perf_counter()
                _native.write_buffer(queue, target, 0, data)
                wait()
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        p50, p99 = np.percentile(values, [50, 99]) * 1e6
        print(f"4 KiB write_buffer + {name}: p50 {p50:.1f} us, p99 {p99:.1f} us")

    waits["no wait (control)"] = lambda: None
    big_src = gpu.create_buffer(size=BIG, usage=usage.COPY_SRC)
    big_dst = gpu.create_buffer(size=BIG, usage=usage.COPY_DST | usage.MAP_READ)
    written = np.ones(BIG, np.uint8)

    def copy() -> None:
        encoder = gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(big_src, 0, big_dst, 0, BIG)
        queue.submit([encoder.finish()])

    def write() -> None:
        _native.write_buffer(queue, big_dst, 0, written)

    for what, work in (("copy", copy), ("write_buffer", write)):
        for name, wait in waits.items():
            resolved = 0
            for _ in range(3):
                work()
                wait()
                request = _waits.request_map(big_dst, _native.MAP_READ, 0, 4)
                poll(gpu._internal, False, ffi.NULL)
                resolved += bool(request.status)
                request.wait(gpu, lost_after=10)
                big_dst.unmap()
            print(f"{name}: after 64 MiB {what} + wait, map resolved on one poll {resolved} of 3")


if __name__ == "__main__":
    main()
