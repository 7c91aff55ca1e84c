"""Concurrency: copies from several threads at once give what they give alone."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import tensorferry as tf
from tensorferry.conformance._support import assert_bytes, assert_tensor_bytes, random_array
from tensorferry.conformance.plugin import DevicePair

THREADS = 4
TIMEOUT = 120.0
SWITCH_INTERVAL = 1e-5
"""Seconds between forced thread switches while threads run: often, so races show."""


def run_in_threads(work: Callable[[int], None], count: int = THREADS) -> None:
    """Run ``work(k)`` for k in range(count) on as many threads, released together and
    switching often; re-raise the first failure."""
    barrier = threading.Barrier(count)

    def started(k: int) -> None:
        barrier.wait(timeout=TIMEOUT)
        work(k)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(started, k) for k in range(count)]
            for future in futures:
                future.result(timeout=TIMEOUT)
    finally:
        sys.setswitchinterval(interval)


def test_threads_copy_concurrently(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """Threads upload, copy and download their own tensors, and read one shared
    source, all at once; every result is exact."""
    env, pair = tensorferry_env, tensorferry_pair
    shared_data = random_array((1001,), np.uint8, seed=200)
    shared = env.from_numpy(shared_data, pair.src)

    def work(k: int) -> None:
        for round_ in range(6):
            data = random_array((257,), np.float32, seed=1000 * k + round_)
            src = env.from_numpy(data, pair.src)
            dst = env.empty(data.shape, data.dtype, pair.dst)
            copy = env.empty(shared.shape, shared.dtype, pair.dst)
            env.copy_tensors([src, shared], [dst, copy])
            assert_bytes(dst.numpy(), data, f"thread {k}, round {round_}: own tensor")
            assert_bytes(copy.numpy(), shared_data, f"thread {k}, round {round_}: shared")

    run_in_threads(work)


def test_threads_write_neighbouring_views_of_one_storage(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """Threads write interleaved 3-byte views of one destination storage at once:
    a backend that rewrites whole aligned words around a view loses writes here."""
    env, pair = tensorferry_env, tensorferry_pair
    rows, width = 12, 3
    dst_data = random_array((THREADS * rows * width + 2,), np.uint8, seed=201)
    dst = env.from_numpy(dst_data, pair.dst)
    sources = [random_array((rows * width,), np.uint8, seed=202 + k) for k in range(THREADS)]
    expected = dst_data.copy()
    for k, data in enumerate(sources):
        for r in range(rows):
            start = 1 + (r * THREADS + k) * width
            expected[start : start + width] = data[r * width : (r + 1) * width]

    def work(k: int) -> None:
        src = env.from_numpy(sources[k], pair.src)
        for r in range(rows):
            start = 1 + (r * THREADS + k) * width
            env.copy_tensor(src[r * width : (r + 1) * width], dst[start : start + width])

    run_in_threads(work)
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")


HAMMER_THREADS, HAMMER_ROUNDS, HAMMER_BYTES = 4, 40, 256 << 10


def test_thread_hammer(tensorferry_env: tf.Environment, tensorferry_pair: DevicePair) -> None:
    """4 threads x 40 rounds of 256 KiB each: upload, copy across the pair, download,
    all at once; every byte exact (shared scratch memory without a lock fails here)."""
    env, pair = tensorferry_env, tensorferry_pair

    def work(k: int) -> None:
        for round_ in range(HAMMER_ROUNDS):
            data = random_array((HAMMER_BYTES,), np.uint8, seed=10_000 * k + round_)
            src = env.from_numpy(data, pair.src)
            dst = env.empty(data.shape, data.dtype, pair.dst)
            env.copy_tensor(src, dst)
            assert_bytes(dst.numpy(), data, f"thread {k}, round {round_}, {pair}")

    run_in_threads(work, HAMMER_THREADS)


MIXED_THREADS, MIXED_OPS = 8, 500


def test_mixed_operations_from_eight_threads(
    tensorferry_env: tf.Environment, tensorferry_backend: str
) -> None:
    """8 threads x 500 random operations on one environment (uploads, downloads,
    device copies, batches, async batches, fills) over every device of the backend;
    each thread checks every result against numpy."""
    env = tensorferry_env
    devices = list(dict.fromkeys([tf.HOST, *env.backend(tensorferry_backend).devices()]))

    def work(k: int) -> None:
        rng = np.random.default_rng(k)
        for op in range(MIXED_OPS):
            size = int(rng.integers(0, 2048))
            data = random_array((size,), np.uint8, seed=100_000 * k + op)
            a, b = (devices[int(i)] for i in rng.integers(len(devices), size=2))
            kind = op % 6
            what = f"thread {k}, op {op} ({kind}), {a}->{b}"
            src = env.from_numpy(data, a)
            if kind == 0:  # upload and download
                assert_bytes(src.numpy(), data, what)
            elif kind == 1:  # one copy
                dst = env.empty(data.shape, data.dtype, b)
                env.copy_tensor(src, dst)
                assert_bytes(dst.numpy(), data, what)
            elif kind == 2:  # a batch with a dependency
                mid, dst = env.empty(size, np.uint8, b), env.empty(size, np.uint8, a)
                env.copy_tensors([src, mid], [mid, dst])
                assert_bytes(dst.numpy(), data, what)
            elif kind == 3:  # async
                dst = env.empty(data.shape, data.dtype, b)
                env.copy_tensors_async([src], [dst]).wait(timeout=TIMEOUT)
                assert_bytes(dst.numpy(), data, what)
            elif kind == 4:  # fill a view
                start = int(rng.integers(0, size + 1))
                env.fill(src[start:], op % 256)
                expected = data.copy()
                expected[start:] = op % 256
                assert_bytes(src.numpy(), expected, what)
            else:  # overlapping views of one storage, in one batch
                half = size // 2
                env.copy_tensors([src[:half]], [src[size - half :]])
                expected = data.copy()
                expected[size - half :] = data[:half]
                assert_bytes(src.numpy(), expected, what)

    run_in_threads(work, MIXED_THREADS)
