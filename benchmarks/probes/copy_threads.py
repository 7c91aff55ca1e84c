"""How many host copy threads the WebGPU backend should use on this host.

For each count in argv[1:] (default 8 16), on the best WebGPU device with
``ContextOptions(copy_threads=N)``, median GB/s of five runs each: a 1 GiB upload
until landed (``synchronize``), a 1 GiB download into a touched array, a 1 GiB
``Tensor.numpy()`` (a new array: first-touch page faults included), and the bench's
model-load batch into existing tensors (300 tensors, 4 KiB-64 MiB, seeded).
Run: ``python benchmarks/probes/copy_threads.py 8 16``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from _median import median_seconds

import tensorferry as tf
import tensorferry_webgpu as tw

GIB = 1 << 30
Bytes = npt.NDArray[np.uint8]


def _rate(nbytes: int, work: Callable[[], object], runs: int = 5) -> float:
    return nbytes / median_seconds(work, runs) / 1e9


def _model_sizes(count: int = 300, low: int = 4 << 10, high: int = 64 << 20) -> list[int]:
    rng = np.random.default_rng(0)
    sizes = np.exp(rng.uniform(np.log(low), np.log(high), count)).astype(np.int64)
    return [int(n) // 4 * 4 for n in sizes]


def _measure(count: int, data: Bytes, touched: Bytes, sizes: list[int], model: Bytes) -> str:
    env = tf.Environment(backends=[])
    env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(copy_threads=count)))
    with env:
        device = env.device("webgpu")
        host = env.from_numpy(data, copy=False)
        tensor = env.empty((data.size,), np.uint8, device)

        def upload() -> None:
            env.copy_tensor(host, tensor)
            env.synchronize(device)

        up = _rate(data.nbytes, upload)
        down = _rate(data.nbytes, lambda: tensor.numpy(out=touched))
        new = _rate(data.nbytes, tensor.numpy)
        offsets = np.cumsum([0, *sizes])
        sources = [env.from_numpy(model[a:b], copy=False) for a, b in pairwise(offsets)]
        targets = [env.empty((n,), np.uint8, device) for n in sizes]

        def load() -> None:
            env.copy_tensors(sources, targets)
            env.synchronize(device)

        loaded = _rate(model.nbytes, load)
    return (
        f"copy_threads={count}: upload {up:.1f} GB/s, download {down:.1f}, "
        f"numpy() new array {new:.1f}, model-load-existing {loaded:.1f}"
    )


def main() -> None:
    """Print one line per thread count."""
    counts = [int(a) for a in sys.argv[1:]] or [8, 16]
    data = np.ones(GIB, np.uint8)
    touched = np.zeros(GIB, np.uint8)
    sizes = _model_sizes()
    model = np.ones(sum(sizes), np.uint8)
    for count in counts:
        print(_measure(count, data, touched, sizes, model))


if __name__ == "__main__":
    main()
