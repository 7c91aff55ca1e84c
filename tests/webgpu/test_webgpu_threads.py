"""The copy threads' split of one host copy: exact bytes at every part boundary, and
no thread woken for a copy too small to give each thread a whole part."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tensorferry_webgpu as tw
from tensorferry_webgpu._threads import PART_MIN, CopyThreads


def _copy_threads_alive() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "tensorferry-copy" and t.is_alive()}


@pytest.mark.parametrize(
    "nbytes", [2 * PART_MIN - 1, 2 * PART_MIN, 2 * PART_MIN + 4097, 5 * PART_MIN + 3]
)
def test_a_split_copy_is_exact_at_every_part_boundary(nbytes: int) -> None:
    """Parts are cut at 4 KiB multiples; the last one ends at the last byte."""
    threads = CopyThreads(4)
    try:
        src = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
        dst = np.zeros(nbytes + 16, np.uint8)
        threads.copy(dst[8 : 8 + nbytes], src, 0)
        assert np.array_equal(dst[8 : 8 + nbytes], src)
        assert not dst[:8].any(), "bytes before the destination were written"
        assert not dst[8 + nbytes :].any(), "bytes after the destination were written"
    finally:
        threads.close()


def test_no_thread_is_woken_for_less_than_two_parts() -> None:
    """Below two parts of PART_MIN the calling thread copies alone (waking a thread
    costs about what it would copy); from two parts on, the threads share the copy."""
    before = _copy_threads_alive()
    threads = CopyThreads(4)
    try:
        src = np.ones(2 * PART_MIN, np.uint8)
        dst = np.zeros_like(src)
        threads.copy(dst[:-1], src[:-1], 0)
        assert not _copy_threads_alive() - before, "a thread started for one part"
        assert dst[:-1].all()
        threads.copy(dst, src, 0)
        assert _copy_threads_alive() - before, "no thread shared a two-part copy"
        assert dst.all()
    finally:
        threads.close()


@pytest.mark.parametrize(
    ("cores", "expected"), [(None, 2), (1, 2), (4, 4), (8, 8), (12, 10), (16, 14), (96, 14)]
)
def test_default_copy_threads_leave_two_cores_on_larger_hosts(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, expected: int
) -> None:
    """One copy thread per core up to 8 cores (at least 2), then all cores but two, at
    most 14 (the counts measured on the 16-core H200 host, ``copy_threads.py``)."""
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert tw.ContextOptions().copy_threads == expected
