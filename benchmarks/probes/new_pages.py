"""Filling new memory: the host's own ceiling for a download into a new array.

A download into a new array pays the kernel zeroing every page the copy
threads fault, then the copy writes the same bytes again. Linux's
userfaultfd has ``UFFDIO_COPY``: for a range registered as "missing", the
kernel allocates each page and fills it from a source buffer in one pass, no
zeroing first. This probe times, for SIZE MiB (default 1024) copied from a
touched source by THREADS threads (default 12) in 4 MiB parts, medians of
ROUNDS runs with the ways alternating:

* ``np.copyto`` into a new 2 MiB-aligned array (numpy's huge-page advice):
  what ``Tensor.numpy()``'s copy threads do today;
* ``UFFDIO_COPY`` into a new anonymous mapping registered with a userfaultfd
  (4 KiB pages: anonymous ``UFFDIO_COPY`` fills no huge pages);
* ``np.copyto`` into an array touched already (the host's copy rate);
* the same parts copied by 64 KiB, 256 KiB and 1 MiB ``memmove`` calls into
  new and touched arrays (below glibc's non-temporal threshold, so the stores
  go through the cache, where the page the kernel has just zeroed sits);
* with a WebGPU device (TOKEN names it, default the first): ``Tensor.numpy()``
  of the same bytes, and ``Tensor.numpy(out=touched)``.

No download into a new array can beat the fastest host copy into a new array;
this measures both in one process.

It prints whether userfaultfd is available first (it may need
``vm.unprivileged_userfaultfd`` or a seccomp profile that allows it).

Run: ``python benchmarks/probes/new_pages.py [SIZE_MIB] [THREADS] [ROUNDS] [TOKEN]``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from _median import alternating_seconds, print_rates, webgpu_device
from aligned_new import Bytes, aligned_empty

import tensorferry as tf
from tensorferry.bench._numpy import ThreadedNumpyPath

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]

SYS_USERFAULTFD = 323  # x86-64
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F
UFFDIO_REGISTER = 0xC020AA00
UFFDIO_UNREGISTER = 0x8010AA01
UFFDIO_COPY = 0xC028AA03
MODE_MISSING = 1
PART = 4 << 20


class _Api(ctypes.Structure):
    _fields_ = [
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    ]


class _Range(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Register(ctypes.Structure):
    _fields_ = [("range", _Range), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _Copy(ctypes.Structure):
    _fields_ = [
        ("dst", ctypes.c_uint64),
        ("src", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("copy", ctypes.c_int64),
    ]


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def open_uffd() -> int:
    """A userfaultfd, its API handshake done."""
    fd = _libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK | UFFD_USER_MODE_ONLY)
    _check(fd, "userfaultfd")
    api = _Api(UFFD_API, 0, 0)
    _check(_libc.ioctl(fd, UFFDIO_API, ctypes.addressof(api)), "UFFDIO_API")
    return int(fd)


def uffd_copy(fd: int, dst: int, src: int, n: int) -> None:
    """Fill ``n`` bytes at ``dst`` (registered, missing) from ``src``."""
    done = 0
    while done < n:
        op = _Copy(dst + done, src + done, n - done, 0, 0)
        result = _libc.ioctl(fd, UFFDIO_COPY, ctypes.addressof(op))
        if op.copy > 0:
            done += op.copy
        elif result < 0:
            _check(result, "UFFDIO_COPY")


def in_parts(pool: ThreadPoolExecutor, n: int, part: Callable[[int], object]) -> None:
    """Run ``part(i)`` for each :data:`PART`-byte offset ``i`` below ``n`` over the pool."""
    list(pool.map(part, range(0, n, PART)))


def uffd_new(fd: int, src: Bytes, pool: ThreadPoolExecutor) -> Bytes:
    """A new array holding ``src``, its pages filled by UFFDIO_COPY in parts."""
    n = src.nbytes
    area = mmap.mmap(-1, n)
    array = np.frombuffer(area, np.uint8)
    dst = array.ctypes.data
    reg = _Register(_Range(dst, n), MODE_MISSING, 0)
    _check(_libc.ioctl(fd, UFFDIO_REGISTER, ctypes.addressof(reg)), "UFFDIO_REGISTER")
    base = src.ctypes.data
    in_parts(pool, n, lambda i: uffd_copy(fd, dst + i, base + i, min(PART, n - i)))
    rng = _Range(dst, n)
    _check(_libc.ioctl(fd, UFFDIO_UNREGISTER, ctypes.addressof(rng)), "UFFDIO_UNREGISTER")
    return array


_memmove = ctypes.memmove


def blocks_into(dst: Bytes, src: Bytes, pool: ThreadPoolExecutor, block: int) -> Bytes:
    """``dst[...] = src`` in 4 MiB parts over the pool, each part copied ``block``
    bytes at a time (below glibc's non-temporal threshold, so stores go through
    the cache, where a page the kernel has just zeroed still sits)."""
    n, d, s = src.nbytes, dst.ctypes.data, src.ctypes.data

    def part(i: int) -> None:
        end = min(i + PART, n)
        for j in range(i, end, block):
            _memmove(d + j, s + j, min(block, end - j))

    in_parts(pool, n, part)
    return dst


def main() -> None:
    """Print availability, then one line per way."""
    nbytes = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    token = sys.argv[4] if len(sys.argv) > 4 else ""
    knob = Path("/proc/sys/vm/unprivileged_userfaultfd")
    print(f"unprivileged_userfaultfd: {knob.read_text().strip() if knob.exists() else 'unknown'}")
    print(f"# {nbytes >> 20} MiB, {threads} threads, {os.cpu_count()} cpus")
    src = np.random.default_rng(0).integers(0, 255, nbytes, np.uint8)
    touched = np.ones(nbytes, np.uint8)
    host = ThreadedNumpyPath(threads)  # np.copyto in 4 MiB parts, as the bench's reference
    with ThreadPoolExecutor(threads) as pool, tf.Environment() as env:
        ways: dict[str, Callable[[], object]] = {
            "copyto into a new aligned array": lambda: host.copy(aligned_empty(nbytes), src),
            "copyto into a touched array": lambda: host.copy(touched, src),
        }
        for kib in (64, 256, 1024):
            block = kib << 10
            ways[f"{kib} KiB memmoves into a new aligned array"] = partial(
                lambda b: blocks_into(aligned_empty(nbytes), src, pool, b), block
            )
            ways[f"{kib} KiB memmoves into a touched array"] = partial(
                blocks_into, touched, src, pool, block
            )
        try:
            fd = open_uffd()
        except OSError as exc:
            print(f"userfaultfd unavailable: {exc}")
        else:
            ways["UFFDIO_COPY into a new mapping"] = lambda: uffd_new(fd, src, pool)
            assert np.array_equal(uffd_new(fd, src, pool), src)
        try:
            device = webgpu_device(env, token)
        except StopIteration:
            print("no WebGPU device: host ways only")
        else:
            print(f"# {device}")
            tensor = env.from_numpy(src, device)
            ways["Tensor.numpy()"] = tensor.numpy
            ways["Tensor.numpy(out=touched)"] = lambda: tensor.numpy(out=touched)
            assert np.array_equal(tensor.numpy(), src)
        print_rates(nbytes, alternating_seconds(ways, rounds))
    host.close()


if __name__ == "__main__":
    main()
