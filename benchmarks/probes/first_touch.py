"""What first-touch page faults cost a download into a new array, and what avoids them.

For ``argv[1]`` MiB (default 1024): the kernel's transparent-huge-page settings,
then GB/s of writing a new numpy array (first touch) and the same array again
(already touched), on 1, 8 and 16 threads; an anonymous mmap with ``madvise
(MADV_HUGEPAGE)``; an mmap with ``MAP_POPULATE`` (the kernel faults every page
in the mmap call); and tensorferry's ``Tensor.numpy()`` (new array) against
``Tensor.numpy(out=touched)`` and into a new huge-page mmap, on the best WebGPU
device with 8 and 16 copy threads.
Run: ``python benchmarks/probes/first_touch.py [MiB]``.
"""

from __future__ import annotations

import mmap
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

import tensorferry as tf
import tensorferry_webgpu as tw

Bytes = npt.NDArray[np.uint8]


def _rate(nbytes: int, work: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    work(*args, **kwargs)
    return nbytes / (time.perf_counter() - start) / 1e9


def _write(dst: Bytes, src: Bytes, threads: int, pool: ThreadPoolExecutor) -> None:
    if threads == 1:
        np.copyto(dst, src)
        return
    parts = np.array_split(np.arange(dst.size // 4096 + 1) * 4096, threads)
    spans = [(int(p[0]), min(int(p[-1]) + 4096, dst.size)) for p in parts if p.size]
    list(pool.map(lambda s: np.copyto(dst[s[0] : s[1]], src[s[0] : s[1]]), spans))


def _mapped(nbytes: int, *, populate: bool, huge: bool) -> tuple[mmap.mmap, Bytes]:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (mmap.MAP_POPULATE if populate else 0)
    region = mmap.mmap(-1, nbytes, flags=flags)
    if huge:
        region.madvise(mmap.MADV_HUGEPAGE)
    return region, np.frombuffer(region, np.uint8)


def main() -> None:
    """Print one line per measurement."""
    nbytes = int(sys.argv[1] if len(sys.argv) > 1 else 1024) << 20
    for name in ("enabled", "defrag"):
        path = Path("/sys/kernel/mm/transparent_hugepage") / name
        print(f"THP {name}: {path.read_text().strip() if path.exists() else 'n/a'}")
    src = np.ones(nbytes, np.uint8)
    with ThreadPoolExecutor(16) as pool:
        for threads in (1, 8, 16):
            for _ in range(2):
                fresh = np.empty(nbytes, np.uint8)
                first = _rate(nbytes, _write, fresh, src, threads, pool)
                again = _rate(nbytes, _write, fresh, src, threads, pool)
                print(
                    f"np.empty, {threads} thread(s): first touch {first:.1f} GB/s, "
                    f"touched {again:.1f} GB/s"
                )
                del fresh
            for huge in (False, True):
                region, fresh = _mapped(nbytes, populate=False, huge=huge)
                first = _rate(nbytes, _write, fresh, src, threads, pool)
                print(
                    f"mmap{' + MADV_HUGEPAGE' if huge else ''}, {threads} thread(s): "
                    f"first touch {first:.1f} GB/s"
                )
                del fresh
                region.close()
            start = time.perf_counter()
            region, fresh = _mapped(nbytes, populate=True, huge=False)
            populate = time.perf_counter() - start
            write = _rate(nbytes, _write, fresh, src, threads, pool)
            print(
                f"mmap MAP_POPULATE: {nbytes / populate / 1e9:.1f} GB/s to populate, then "
                f"{threads} thread(s) write {write:.1f} GB/s"
            )
            del fresh
            region.close()
    for copy_threads in (8, 16):
        env = tf.Environment(backends=[])
        env.register_backend(
            "webgpu", tw.WebGPUBackend(tw.ContextOptions(copy_threads=copy_threads))
        )
        with env:
            tensor = env.from_numpy(src, env.device("webgpu"))
            touched = np.empty(nbytes, np.uint8)
            tensor.numpy(out=touched)
            for _ in range(3):
                new = _rate(nbytes, tensor.numpy)
                region, fresh = _mapped(nbytes, populate=False, huge=True)
                into_huge = _rate(nbytes, tensor.numpy, out=fresh)
                del fresh
                region.close()
                out = _rate(nbytes, tensor.numpy, out=touched)
                print(
                    f"tensorferry {tensor.device}, {copy_threads} copy threads: numpy() {new:.1f} "
                    f"GB/s, numpy(out=new mmap + MADV_HUGEPAGE) {into_huge:.1f}, "
                    f"numpy(out=touched) {out:.1f}"
                )


if __name__ == "__main__":
    main()
