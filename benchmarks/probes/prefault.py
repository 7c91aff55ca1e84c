"""A download into memory the call allocates, with its page faults moved off the drain.

On the first WebGPU device, for SIZE MiB (default 1024), GB/s of allocation plus
download (median of 5, each run allocating anew):

* ``Tensor.numpy()`` (``np.empty``, faults taken by the copy threads as they drain);
* into a new anonymous mmap advised ``MADV_HUGEPAGE`` (2 MiB aligned), faults
  taken by the drain;
* the same, every huge page faulted in first by THREADS threads (one byte
  written per 2 MiB through ``ctypes.memset``, which releases the GIL), then the
  download;
* the same, the faulting threads started beside the download (front to back,
  ahead of the drain).

Run: ``python benchmarks/probes/prefault.py [SIZE_MIB] [THREADS ...]``.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import sys
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from _median import median_seconds

import tensorferry as tf

HUGE = 2 << 20


def huge_array(nbytes: int) -> tuple[mmap.mmap, npt.NDArray[np.uint8], int]:
    """A new anonymous mapping advised for huge pages; the array starts 2 MiB aligned."""
    region = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(region, np.uint8)
    address = whole.__array_interface__["data"][0]
    skip = (-address) % HUGE
    return region, whole[skip : skip + nbytes], address + skip


def fault_in(address: int, nbytes: int, threads: int) -> list[threading.Thread]:
    """Start ``threads`` threads writing one byte per huge page, front to back."""
    pages = itertools.count()
    count = (nbytes + HUGE - 1) // HUGE

    def work() -> None:
        while (page := next(pages)) < count:
            ctypes.memset(address + page * HUGE, 0, 1)

    started = [threading.Thread(target=work) for _ in range(threads)]
    for thread in started:
        thread.start()
    return started


def main() -> None:
    """Print one ``what: GB/s`` line per variant."""
    nbytes = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    counts = [int(a) for a in sys.argv[2:]] or [4, 8]
    with tf.Environment() as env:
        device = env.device("webgpu")
        data = np.random.default_rng(0).integers(0, 255, nbytes, np.uint8)
        tensor = env.from_numpy(data, device)
        print(f"# {device} {device.name}; {nbytes >> 20} MiB", flush=True)

        def huge_plain() -> None:
            region, array, _ = huge_array(nbytes)
            tensor.numpy(out=array)
            del array
            region.close()

        def huge_first(threads: int) -> Callable[[], None]:
            def run() -> None:
                region, array, address = huge_array(nbytes)
                for thread in fault_in(address, nbytes, threads):
                    thread.join()
                tensor.numpy(out=array)
                del array
                region.close()

            return run

        def huge_beside(threads: int) -> Callable[[], None]:
            def run() -> None:
                region, array, address = huge_array(nbytes)
                started = fault_in(address, nbytes, threads)
                tensor.numpy(out=array)
                for thread in started:
                    thread.join()
                del array
                region.close()

            return run

        cases: list[tuple[str, Callable[[], object]]] = [
            ("Tensor.numpy() (np.empty)", tensor.numpy),
            ("huge-page mmap, faults in the drain", huge_plain),
        ]
        for threads in counts:
            cases.append((f"huge-page mmap, {threads} threads fault first", huge_first(threads)))
            cases.append((f"huge-page mmap, {threads} threads fault beside", huge_beside(threads)))
        for name, work in cases:
            print(f"{name}: {nbytes / median_seconds(work, 5) / 1e9:.2f} GB/s", flush=True)
        region, array, _ = huge_array(nbytes)
        tensor.numpy(out=array)
        assert np.array_equal(array, data), "the download changed the data"
        del array
        region.close()


if __name__ == "__main__":
    main()
