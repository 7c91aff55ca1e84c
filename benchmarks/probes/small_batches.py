"""Batches of 1000 x 1 KiB tensors with and without slabs, and the copy commands they cost.

For each ``slab_max`` (the default, then ``0``: a buffer per tensor), on
``webgpu:0`` or the device named by argv[1]: an upload, a download and a
device copy of 1000 row tensors, each timed until a 4-byte download of the
last destination returns (downloads until the host holds the data), plus a
lone 4 KiB download and upload. Copy commands are counted as they reach
wgpu-native. Run: ``python benchmarks/probes/small_batches.py [webgpu:i]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from _median import median_seconds

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _queue

COUNT, NBYTES = 1000, 1024
_commands = [0]


def _count_commands() -> None:
    # The queue's module globals, as the queue calls them (the spy still copies).
    names = vars(_queue)
    encode, submit = names["encode_copies"], names["submit_copies"]

    def counted_encode(encoder: Any, copies: list[Any]) -> None:
        _commands[0] += len(copies)
        encode(encoder, copies)

    def counted_submit(gpu: Any, queue: Any, copies: list[Any]) -> None:
        _commands[0] += len(copies)
        submit(gpu, queue, copies)

    names["encode_copies"], names["submit_copies"] = counted_encode, counted_submit


def _measure(spec: str, slab_max: int) -> None:
    env = tf.Environment(backends=[])
    env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(slab_max=slab_max)))
    with env:
        device = env.device(spec)
        data = np.random.default_rng(0).integers(0, 256, (COUNT, NBYTES), dtype=np.uint8)
        out = np.empty_like(data)
        host_in, host_out = env.from_numpy(data, copy=False), env.from_numpy(out, copy=False)
        sources = [host_in[i] for i in range(COUNT)]
        landings = [host_out[i] for i in range(COUNT)]
        first = [env.empty((NBYTES,), np.uint8, device) for _ in range(COUNT)]
        second = [env.empty((NBYTES,), np.uint8, device) for _ in range(COUNT)]
        land = np.empty(4, np.uint8)
        lone = env.from_numpy(np.arange(1024, dtype=np.float32), device)
        lone_out = np.empty(1024, np.float32)
        lone_in = env.from_numpy(np.ones(1024, np.float32))

        def upload() -> None:
            env.copy_tensors(sources, first)
            first[-1][:4].numpy(out=land)

        def device_copy() -> None:
            env.copy_tensors(first, second)
            second[-1][:4].numpy(out=land)

        def lone_upload() -> None:
            env.copy_tensor(lone_in, lone)
            lone[:1].numpy()

        paths: dict[str, Callable[[], object]] = {
            "upload": upload,
            "download": lambda: env.copy_tensors(first, landings),
            "device copy": device_copy,
            "4 KiB download": lambda: lone.numpy(out=lone_out),
            "4 KiB upload": lone_upload,
        }
        for name, work in paths.items():
            before = _commands[0]
            work()
            commands = _commands[0] - before
            seconds = median_seconds(work, repeats=30)
            print(f"slab_max={slab_max} {name}: {seconds * 1e3:.3f} ms, {commands} copy commands")
        assert (out == data).all(), "the download batch is not exact"


def main() -> None:
    """Print one line per path and ``slab_max``."""
    spec = sys.argv[1] if len(sys.argv) > 1 else "webgpu:0"
    _count_commands()
    for slab_max in (tw.ContextOptions().slab_max, 0):
        _measure(spec, slab_max)


if __name__ == "__main__":
    main()
