"""Downloads into new arrays: do huge pages pay, and is numpy's choice the right one?

numpy advises the kernel to back large arrays with 2 MiB huge pages
(``madvise(MADV_HUGEPAGE)``, which counts where transparent huge pages are set
to ``madvise``). For SIZE MiB (default 1024) on the first WebGPU device, GB/s
(median of ROUNDS runs, the ways alternating) of:

* ``Tensor.numpy()`` (a 2 MiB-aligned ``np.empty``, numpy's advice);
* ``Tensor.numpy(out=...)`` into the same array made without numpy's advice
  (4 KiB pages);
* ``Tensor.numpy(out=...)`` into a new anonymous ``mmap``, not advised;
* the first touch alone (``fill`` on the calling thread) of a new array, with
  and without numpy's advice.

It prints the kernel's transparent huge page settings first.

Run: ``python benchmarks/probes/page_sizes.py [SIZE_MIB] [ROUNDS]``.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _median import alternating_seconds, print_rates
from aligned_new import Bytes, aligned_empty

import tensorferry as tf

_core = getattr(np, "_core", None) or np.core  # numpy >= 2 names it _core
_set_madvise_hugepage: Callable[[bool], bool] = _core.multiarray._set_madvise_hugepage


def without_advice(nbytes: int) -> Bytes:
    """A new 2 MiB-aligned array that numpy does not advise for huge pages."""
    before = _set_madvise_hugepage(False)
    try:
        return aligned_empty(nbytes)
    finally:
        _set_madvise_hugepage(before)


def plain_mmap(nbytes: int) -> Bytes:
    """A new anonymous mapping, not advised, as an array."""
    return np.frombuffer(mmap.mmap(-1, nbytes), np.uint8)


def main() -> None:
    """Print the THP settings, then one line per way."""
    nbytes = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    thp = Path("/sys/kernel/mm/transparent_hugepage")
    for name in ("enabled", "defrag"):
        path = thp / name
        print(f"THP {name}: {path.read_text().strip() if path.exists() else 'unknown'}")
    with tf.Environment() as env:
        device = env.device("webgpu")
        print(f"# {device}, {nbytes >> 20} MiB")
        data = np.random.default_rng(0).integers(0, 255, nbytes, np.uint8)
        tensor = env.from_numpy(data, device)
        ways: dict[str, Callable[[], object]] = {
            "numpy()": tensor.numpy,
            "numpy(out=array without numpy's advice)": lambda: tensor.numpy(
                out=without_advice(nbytes)
            ),
            "numpy(out=new mmap, not advised)": lambda: tensor.numpy(out=plain_mmap(nbytes)),
            "first touch, numpy's advice": lambda: aligned_empty(nbytes).fill(1),
            "first touch, without it": lambda: without_advice(nbytes).fill(1),
        }
        print_rates(nbytes, alternating_seconds(ways, rounds))
        assert np.array_equal(tensor.numpy(out=without_advice(nbytes)), data)


if __name__ == "__main__":
    main()
