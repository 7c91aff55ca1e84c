"""Concurrency: copies from several threads at once give what they give alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import tensorferry as tf
from tensorferry.conformance._support import assert_bytes, assert_tensor_bytes, random_array
from tensorferry.conformance.plugin import DevicePair

THREADS = 4
TIMEOUT = 120.0


def run_in_threads(work: Callable[[int], None], count: int = THREADS) -> None:
    """Run ``work(k)`` for k in range(count) on as many threads, released together;
    re-raise the first failure."""
    barrier = threading.Barrier(count)

    def started(k: int) -> None:
        barrier.wait(timeout=TIMEOUT)
        work(k)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(started, k) for k in range(count)]
        for future in futures:
            future.result(timeout=TIMEOUT)


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
