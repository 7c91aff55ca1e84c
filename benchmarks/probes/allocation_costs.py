"""What making a model's device buffers costs, by size.

The bench's model load makes 300 tensors of 4 KiB-64 MiB (1.89 GiB) in a fresh
context; ``model_load_parts.py`` put 43 ms of a 108 ms first load into making
them. Here, on the first WebGPU adapter, a wgpu device of its own:

* ``create_buffer`` of each size (tensor usage, sizes in the load's order),
  timed one by one, summed by size class; then every buffer destroyed (timed),
  and the whole round made again (does the allocator keep freed memory?);
* the same sizes in one pass through ``Environment.empty`` in a fresh
  environment (slabs and pool included), twice.

Run: ``python benchmarks/probes/allocation_costs.py [ROUNDS]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import wgpu
from _median import large_device

import tensorferry as tf
from tensorferry.bench._suites import ModelLoad

CLASSES = (
    (64 << 10, "<= 64 KiB"),
    (1 << 20, "<= 1 MiB"),
    (16 << 20, "<= 16 MiB"),
    (1 << 62, "larger"),
)


def _class(nbytes: int) -> str:
    return next(name for limit, name in CLASSES if nbytes <= limit)


def raw_rounds(sizes: tuple[int, ...], rounds: int) -> None:
    """create_buffer by size class, then destroy, ``rounds`` times on one device."""
    _, gpu = large_device("")
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
    for round_ in range(rounds):
        spent: dict[str, list[float]] = {name: [] for _, name in CLASSES}
        buffers = []
        for nbytes in sizes:
            start = time.perf_counter()
            buffers.append(gpu.create_buffer(size=nbytes, usage=usage))
            spent[_class(nbytes)].append(time.perf_counter() - start)
        start = time.perf_counter()
        for buffer in buffers:
            buffer.destroy()
        gone = time.perf_counter() - start
        gpu.queue.submit([])
        made = sum(sum(v) for v in spent.values())
        head = f"round {round_}: create_buffer x{len(sizes)} {made * 1e3:.1f} ms"
        print(f"{head}, destroy {gone * 1e3:.1f} ms")
        for name, values in spent.items():
            if values:
                print(
                    f"  {name:<10} {len(values):4d} buffers {sum(values) * 1e3:7.2f} ms, "
                    f"median {np.median(values) * 1e6:7.1f} us, max {max(values) * 1e6:8.1f} us"
                )


def empty_rounds(sizes: tuple[int, ...]) -> None:
    """``Environment.empty`` of every size in a fresh environment, twice (the second
    round after the first's tensors were freed)."""
    with tf.Environment() as env:
        device = env.device("webgpu")
        for round_ in range(2):
            start = time.perf_counter()
            tensors = [env.empty((n,), np.uint8, device) for n in sizes]
            spent = time.perf_counter() - start
            print(f"Environment.empty x{len(sizes)}, round {round_}: {spent * 1e3:.1f} ms")
            del tensors


def main() -> None:
    """Print the rounds."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    sizes = ModelLoad().sizes(64 << 20)
    print(f"# {len(sizes)} sizes, {sum(sizes) / 2**30:.2f} GiB")
    raw_rounds(sizes, rounds)
    empty_rounds(sizes)


if __name__ == "__main__":
    main()
