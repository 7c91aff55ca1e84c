"""Downloads into new arrays: does where the array starts matter?

A large ``np.empty`` starts 16 bytes past a page (glibc's chunk header), so the
copy threads' 4 MiB parts each touch three 2 MiB huge pages and neighbouring
threads fault the same huge page. For SIZE MiB (default 1024) on the first
WebGPU device, GB/s (median of ROUNDS runs, the ways alternating) of:

* ``Tensor.numpy(out=np.empty(...))``, what ``Tensor.numpy()`` did before;
* ``Tensor.numpy(out=...)`` into a new ``np.empty`` with 2 MiB to spare, viewed
  from its first 2 MiB boundary (what ``Tensor.numpy()`` does now);
* ``Tensor.numpy()``;
* ``Tensor.numpy(out=...)`` into a new anonymous mmap advised ``MADV_HUGEPAGE``;
* ``Tensor.numpy(out=touched)``, no page faults (the ceiling).

Run: ``python benchmarks/probes/aligned_new.py [SIZE_MIB] [ROUNDS]``.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from _median import alternating_seconds, print_rates

import tensorferry as tf
from tensorferry._host_array import new_array

Bytes = npt.NDArray[np.uint8]


def aligned_empty(nbytes: int) -> Bytes:
    """A new uint8 array of ``nbytes`` as ``Tensor.numpy()`` allocates it (from 4 MiB
    on, it starts on a 2 MiB boundary)."""
    return new_array((nbytes,), np.dtype(np.uint8)).view(np.uint8)


def huge_mmap(nbytes: int) -> Bytes:
    """A new anonymous mapping advised for huge pages, as an array."""
    region = mmap.mmap(-1, nbytes)
    region.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(region, np.uint8)


def main() -> None:
    """Print one line per way."""
    nbytes = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tf.Environment() as env:
        device = env.device("webgpu")
        print(f"# {device}, {nbytes >> 20} MiB")
        data = np.random.default_rng(0).integers(0, 255, nbytes, np.uint8)
        tensor = env.from_numpy(data, device)
        touched = np.ones(nbytes, np.uint8)
        ways: dict[str, Callable[[], object]] = {
            "numpy(out=np.empty)": lambda: tensor.numpy(out=np.empty(nbytes, np.uint8)),
            "numpy(out=2 MiB-aligned np.empty)": lambda: tensor.numpy(out=aligned_empty(nbytes)),
            "numpy()": tensor.numpy,
            "numpy(out=new mmap + MADV_HUGEPAGE)": lambda: tensor.numpy(out=huge_mmap(nbytes)),
            "numpy(out=touched)": lambda: tensor.numpy(out=touched),
        }
        print_rates(nbytes, alternating_seconds(ways, rounds))
        assert np.array_equal(tensor.numpy(out=aligned_empty(nbytes)), data)


if __name__ == "__main__":
    main()
