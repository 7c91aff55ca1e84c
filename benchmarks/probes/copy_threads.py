"""How many host copy threads the WebGPU backend should use on this host.

One environment per count in argv[1:] (default 12 16), each on the first
WebGPU device with ``ContextOptions(copy_threads=N)``; every count's ways take
turns within a round (``ROUNDS`` rounds, env ``ROUNDS``, default 7), medians in
GB/s: a 1 GiB upload until landed (``synchronize``), a 1 GiB download into a
touched array, ``Tensor.numpy()`` (a new array: first-touch page faults
included) of 1 GiB and of 4000 MiB, and the bench's model load (300 tensors,
4 KiB-64 MiB, seeded) into new and into existing tensors.
Run: ``ROUNDS=7 python benchmarks/probes/copy_threads.py 12 16``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from _median import alternating_seconds, print_rates

import tensorferry as tf
import tensorferry_webgpu as tw

GIB = 1 << 30
LARGE = 4000 << 20
Bytes = npt.NDArray[np.uint8]


def _model_sizes(count: int = 300, low: int = 4 << 10, high: int = 64 << 20) -> list[int]:
    rng = np.random.default_rng(0)
    sizes = np.exp(rng.uniform(np.log(low), np.log(high), count)).astype(np.int64)
    return [int(n) // 4 * 4 for n in sizes]


def _ways(
    env: tf.Environment, data: Bytes, touched: Bytes, sizes: list[int], model: Bytes
) -> dict[str, tuple[int, Callable[[], object]]]:
    """Each way of one environment by name: the bytes it moves, and the way."""
    device = env.device("webgpu")
    host = env.from_numpy(data, copy=False)
    tensor = env.empty((data.size,), np.uint8, device)
    large = env.empty((LARGE,), np.uint8, device)
    env.copy_tensor(host, tensor)
    offsets = np.cumsum([0, *sizes])
    sources = [env.from_numpy(model[a:b], copy=False) for a, b in pairwise(offsets)]
    existing = [env.empty((n,), np.uint8, device) for n in sizes]

    def upload() -> None:
        env.copy_tensor(host, tensor)
        env.synchronize(device)

    def load(targets: list[tf.Tensor]) -> list[tf.Tensor]:
        env.copy_tensors(sources, targets)
        env.synchronize(device)
        return targets

    return {
        "upload 1 GiB": (GIB, upload),
        "download 1 GiB": (GIB, lambda: tensor.numpy(out=touched)),
        "numpy() 1 GiB": (GIB, tensor.numpy),
        "numpy() 4000 MiB": (LARGE, large.numpy),
        "model load": (
            model.nbytes,
            lambda: load([env.empty((n,), np.uint8, device) for n in sizes]),
        ),
        "model load, existing": (model.nbytes, lambda: load(existing)),
    }


def main() -> None:
    """Print one line per count and way."""
    counts = [int(a) for a in sys.argv[1:]] or [12, 16]
    rounds = int(os.environ.get("ROUNDS", "7"))
    data = np.ones(GIB, np.uint8)
    touched = np.zeros(GIB, np.uint8)
    sizes = _model_sizes()
    model = np.ones(sum(sizes), np.uint8)
    envs = []
    moved: dict[str, int] = {}
    ways: dict[str, Callable[[], object]] = {}
    for count in counts:
        env = tf.Environment(backends=[])
        env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(copy_threads=count)))
        envs.append(env)
        for name, (nbytes, way) in _ways(env, data, touched, sizes, model).items():
            moved[name] = nbytes
            ways[f"{name}, {count} threads"] = way
    times = alternating_seconds(ways, rounds)
    for name, nbytes in moved.items():
        for count in counts:
            key = f"{name}, {count} threads"
            print_rates(nbytes, {key: times[key]})
    for env in envs:
        env.close()


if __name__ == "__main__":
    main()
