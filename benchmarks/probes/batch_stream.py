"""Measure a model-load-like batch of uploads: many tensors of mixed sizes, one copy.

Like the bench's ``model-load-existing``: ``COUNT`` tensors with sizes
log-uniform from 4 KiB to ``MAX`` (the bench's seed), one
``Environment.copy_tensors`` into existing device tensors, then a 4-byte
download to wait for the device; median of 7, GB/s. One line per
``CHUNK_KIB[:direct]`` setting (``direct`` keeps direct mapping of tensor
buffers on unified memory; without it every byte goes through staging).
Small chunks make a CPU adapter stream as a GPU does with 16 MiB chunks.

Run: ``python benchmarks/probes/batch_stream.py --max 4M 64 256 1024 16384:direct``
(``--device``, ``--count``, ``--threads`` too).
"""

from __future__ import annotations

import argparse

import attrs
import numpy as np
from _median import median_seconds

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry.bench._suites import ModelLoad


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().removesuffix("IB").removesuffix("B")
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def measure(
    sizes: tuple[int, ...], device: str, chunk: int, direct: bool, threads: int | None
) -> float:
    """GB/s of one copy_tensors of ``sizes`` uploads into existing tensors."""
    options = tw.ContextOptions(staging_chunk=chunk, map_storage=None if direct else False)
    if threads is not None:
        options = attrs.evolve(options, copy_threads=threads, staging_chunks=max(4, threads + 2))
    rng = np.random.default_rng(1)
    sources = [rng.integers(0, 255, n, dtype=np.uint8) for n in sizes]
    with tf.Environment(backends=[]) as env:
        env.register_backend("webgpu", tw.WebGPUBackend(options))
        target = env.device(device)
        hosts = [env.from_numpy(a, copy=False) for a in sources]
        tensors = [env.empty(n, np.uint8, target) for n in sizes]
        last = tensors[-1]

        def load() -> None:
            env.copy_tensors(hosts, tensors)
            last[:4].numpy()  # waits until the batch has landed

        seconds = median_seconds(load)
        for host, tensor in zip(
            sources[:3] + sources[-3:], tensors[:3] + tensors[-3:], strict=True
        ):
            assert np.array_equal(tensor.numpy(), host), "wrong bytes"
    return sum(sizes) / seconds / 1e9


def main() -> None:
    """Print one line per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=["64", "256", "16384:direct"])
    parser.add_argument("--device", default="webgpu")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--max", type=_size, default=4 << 20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    sizes = ModelLoad(count=args.count).sizes(args.max)
    print(f"{len(sizes)} tensors, {sum(sizes) / 2**20:.0f} MiB, largest {max(sizes) >> 10} KiB")
    for spec in args.settings:
        kib, _, mode = spec.partition(":")
        rate = measure(sizes, args.device, int(kib) << 10, mode == "direct", args.threads)
        print(f"chunk {kib} KiB{' direct' if mode else ''}: {rate:.2f} GB/s")


if __name__ == "__main__":
    main()
