"""Soak tests: many environments and many copies with flat memory.

Deselected unless ``--tensorferry-soak`` is given (the ``soak`` nox session);
the figures they measure appear in the terminal summary.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import assert_bytes, random_array
from tensorferry.conformance.plugin import FIGURES

pytestmark = pytest.mark.tensorferry_soak

CYCLES = 100
COPIES = 100_000
GROWTH_LIMIT = 32 << 20
"""Bytes of resident memory a flat run may still gain (allocator slack, caches)."""


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        pytest.skip("resident memory is read from /proc/self/statm, which this system lacks")
    return pages * os.sysconf("SC_PAGE_SIZE")


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def _use_every_device(
    env: tf.Environment, backend: tf.Backend, data: np.ndarray, cycle: int
) -> None:
    for device in backend.devices():
        tensor = env.from_numpy(data, device)
        assert_bytes(tensor.numpy(), data, f"cycle {cycle} on {device}")


def test_environment_cycles_keep_memory_flat(tensorferry_backend: str) -> None:
    """100 environments made, used on every device and closed, one after another:
    resident memory after the last is within 32 MiB of that after the tenth, and
    (with MemoryUsage) a closed backend holds no storage once its tensors died."""
    samples: dict[int, int] = {}
    data = random_array((1 << 16,), np.uint8, seed=800)
    for cycle in range(1, CYCLES + 1):
        with tf.Environment(backends=[tensorferry_backend]) as env:
            backend = env.backend(tensorferry_backend)
            _use_every_device(env, backend, data, cycle)
        if isinstance(backend, tf.MemoryUsage):
            gc.collect()
            for device in backend.devices():
                assert backend.bytes_in_use(device) == 0, f"cycle {cycle}: {device} holds storage"
        del env, backend
        if cycle in (10, 50, CYCLES):
            gc.collect()
            samples[cycle] = _rss()
    FIGURES.append(
        f"{tensorferry_backend}: {CYCLES} environment cycles, RSS after 10/50/100: "
        + " / ".join(_mib(v) for v in samples.values())
    )
    assert samples[CYCLES] - samples[10] < GROWTH_LIMIT, f"RSS grew: {samples}"


def test_mixed_copies_keep_memory_flat(
    tensorferry_env: tf.Environment, tensorferry_backend: str
) -> None:
    """100,000 mixed copies (uploads, downloads, device copies, batches, async, fills)
    between the backend's devices and the host: resident memory after the last is
    within 32 MiB of that after 40,000 (and every 1,000th result is checked)."""
    env = tensorferry_env
    devices = list(dict.fromkeys([tf.HOST, *env.backend(tensorferry_backend).devices()]))
    rng = np.random.default_rng(801)
    samples: dict[int, int] = {}
    started = time.monotonic()
    copies = 0
    while copies < COPIES:
        size = int(rng.integers(0, 4096))
        a, b = (devices[int(i)] for i in rng.integers(len(devices), size=2))
        data = rng.integers(0, 256, size, np.uint8)
        src, dst = env.from_numpy(data, a), env.empty(size, np.uint8, b)
        kind = copies % 4
        if kind == 0:
            env.copy_tensor(src, dst)
        elif kind == 1:
            env.copy_tensors([src, dst[: size // 2]], [dst, src[size - size // 2 :][: size // 2]])
        elif kind == 2:
            env.copy_tensors_async([src], [dst]).wait(timeout=120)
        else:
            env.fill(dst, copies % 256)
            env.copy_tensor(src, dst)
        if copies % 1000 == 0 and kind != 1:
            assert_bytes(dst.numpy(), data, f"copy {copies}, {a}->{b}")
        copies += 3 if kind == 1 else 2 if kind == 3 else 1
        copies += 1  # the upload of the source
        for mark in (10_000, 40_000, COPIES):
            if copies >= mark and mark not in samples:
                gc.collect()
                samples[mark] = _rss()
    FIGURES.append(
        f"{tensorferry_backend}: {copies} mixed copies in {time.monotonic() - started:.0f} s, "
        "RSS after 10k/40k/100k: " + " / ".join(_mib(v) for v in samples.values())
    )
    assert samples[COPIES] - samples[40_000] < GROWTH_LIMIT, f"RSS grew: {samples}"
