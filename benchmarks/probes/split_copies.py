"""How a transfer of 2-16 MiB should split its host copy over the copy threads.

A copy thread that has slept costs 8-170 us to wake on the H200 host
(``wake_latency.py``), about what it then copies in 1 MiB. For each split policy
below, the context's ``CopyThreads.copy`` is replaced by it, and p50
microseconds of ``Tensor.numpy(out=...)`` and of a lone upload until landed
(``copy_tensor`` + ``synchronize``; lone uploads above ``small_upload`` fill
staging through the same copy) are measured at each size, the policies taking
turns round by round in one environment:

* ``now``: tensorferry's (parts of at least 1 MiB, at most one per thread);
* ``one``: the calling thread alone;
* ``parts>=2M`` / ``parts>=4M``: parts of at least 2 / 4 MiB;
* ``halves``: two parts, the calling thread and one helper.

Run: ``python benchmarks/probes/split_copies.py [TOKEN] [ROUNDS]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from _median import webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._threads import CopyThreads

Bytes = npt.NDArray[np.uint8]
SIZES = (2 << 20, 4 << 20, 8 << 20, 16 << 20)


def _policy(threads: CopyThreads, least: int, most: int) -> Callable[[Bytes, Bytes, int], None]:
    """A ``copy`` that splits into parts of at least ``least`` bytes, at most ``most`` parts."""

    def copy(dst: Bytes, src: Bytes, parallel_min: int) -> None:
        n = dst.nbytes
        parts = min(most, n // least) if n >= parallel_min else 1
        if parts < 2:
            np.copyto(dst, src)
            return
        threads.start(dst, src, (-(-n // parts) + 4095) & ~4095).wait()

    return copy


def main(argv: list[str]) -> None:
    """One line per policy: p50 us down and up at each size."""
    token = argv[0] if argv else ""
    rounds = int(argv[1]) if len(argv) > 1 else 200
    with tf.Environment() as env:
        device = webgpu_device(env, token)
        threads = tw.backend_of(env).context(device).threads
        count = threads.count
        policies = {
            "now": threads.copy,
            "one": _policy(threads, 1 << 62, 1),
            "parts>=2M": _policy(threads, 2 << 20, count),
            "parts>=4M": _policy(threads, 4 << 20, count),
            "halves": _policy(threads, 1, 2),
        }
        print(f"# {device} {device.name}; p50 us of {rounds} rounds, policies taking turns")
        for n in SIZES:
            data = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8)
            host = env.from_numpy(data, copy=False)
            tensor = env.from_numpy(data, device)
            out = np.zeros_like(data)
            times: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in policies}
            for round_ in range(rounds + 10):
                for name, policy in policies.items():
                    threads.copy = policy  # type: ignore[method-assign, assignment]
                    start = time.perf_counter()
                    tensor.numpy(out=out)
                    middle = time.perf_counter()
                    env.copy_tensor(host, tensor)
                    env.synchronize(device)
                    end = time.perf_counter()
                    if round_ >= 10:
                        times[name][0].append(middle - start)
                        times[name][1].append(end - middle)
            assert np.array_equal(out, data), "the round trip is wrong"
            cells = "  ".join(
                f"{name} {np.median(d) * 1e6:6.0f}/{np.median(u) * 1e6:6.0f}"
                for name, (d, u) in times.items()
            )
            print(f"{n >> 20:3} MiB down/up: {cells}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
