"""Sweep the WebGPU backend's streaming settings on one large tensor.

For each ``THREADS:CHUNK_MIB:AHEAD`` argument (default: ``6:16:2 8:16:2 10:16:2``)
it measures a 256 MiB download (``Tensor.numpy(out=...)``) and upload (copy,
then a 4-byte download to wait) on the best WebGPU device, median of 7, and
prints GB/s. This is how the defaults were chosen; see docs/performance.md.
Run: ``python benchmarks/probes/stream_sweep.py 8:16:2 6:16:2``.
"""

from __future__ import annotations

import sys

import numpy as np
from _median import median_seconds

import tensorferry as tf
import tensorferry_webgpu as tw

SIZE = 256 << 20


def measure(threads: int, chunk_mib: int, ahead: int, data: np.ndarray) -> tuple[float, float]:
    """Download and upload GB/s with these settings."""
    options = tw.ContextOptions(
        copy_threads=threads,
        staging_chunk=chunk_mib << 20,
        staging_chunks=threads + 2,
        downloads_ahead=ahead,
    )
    with tf.Environment(backends=[]) as env:
        env.register_backend("webgpu", tw.WebGPUBackend(options))
        device = env.device("webgpu")
        tensor = env.from_numpy(data, device)
        host = env.from_numpy(data, copy=False)
        out = np.empty_like(data)

        def upload() -> None:
            env.copy_tensor(host, tensor)
            tensor[:4].numpy()  # waits until the data has landed

        down = median_seconds(lambda: tensor.numpy(out=out))
        up = median_seconds(upload)
    return SIZE / down / 1e9, SIZE / up / 1e9


def main(argv: list[str]) -> None:
    """Print one line per setting."""
    data = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8)
    for spec in argv or ["6:16:2", "8:16:2", "10:16:2"]:
        threads, chunk_mib, ahead = (int(part) for part in spec.split(":"))
        down, up = measure(threads, chunk_mib, ahead, data)
        setting = f"threads={threads} chunk={chunk_mib}MiB ahead={ahead}"
        print(f"{setting}: down {down:.1f} GB/s, up {up:.1f} GB/s")


if __name__ == "__main__":
    main(sys.argv[1:])
