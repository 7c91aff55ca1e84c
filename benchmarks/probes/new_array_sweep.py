"""Staging chunk and copy part sizes for downloads into new arrays.

For each ``CHUNK:PART`` in argv[1:] (MiB; default 16:4 16:2 16:8 32:4 64:8), a
WebGPU context with ``ContextOptions(staging_chunk=CHUNK, copy_part=PART)`` on
the best device; GB/s of a 1 GiB ``Tensor.numpy()`` (a new array each run) and
of ``Tensor.numpy(out=touched)``, median of ROUNDS rounds with the contexts
taking turns (so drift of the host hits every setting alike).
Run: ``python benchmarks/probes/new_array_sweep.py [CHUNK:PART ...]``.
"""

from __future__ import annotations

import os
import time

import numpy as np

import tensorferry as tf
import tensorferry_webgpu as tw

GIB = 1 << 30
ROUNDS = int(os.environ.get("ROUNDS", "5"))


def main() -> None:
    """Print one line per setting."""
    import sys

    settings = sys.argv[1:] or ["16:4", "16:2", "16:8", "32:4", "64:8"]
    data = np.random.default_rng(0).integers(0, 255, GIB, np.uint8)
    touched = np.zeros(GIB, np.uint8)
    runs: list[tuple[str, tf.Environment, tf.Tensor, dict[str, list[float]]]] = []
    for setting in settings:
        chunk, part = (int(v) << 20 for v in setting.split(":"))
        env = tf.Environment(backends=[])
        options = tw.ContextOptions(staging_chunk=chunk, copy_part=part)
        env.register_backend("webgpu", tw.WebGPUBackend(options))
        tensor = env.from_numpy(data, env.device("webgpu"))
        runs.append((setting, env, tensor, {"new": [], "touched": []}))
    for _ in range(ROUNDS):
        for _, _, tensor, rates in runs:
            for name in ("new", "touched"):
                start = time.perf_counter()
                result = tensor.numpy() if name == "new" else tensor.numpy(out=touched)
                rates[name].append(GIB / (time.perf_counter() - start) / 1e9)
                del result
    for setting, env, tensor, rates in runs:
        assert np.array_equal(tensor.numpy(), data)
        new, old = (np.median(rates[k]) for k in ("new", "touched"))
        print(f"chunk:part {setting} MiB: numpy() {new:.1f} GB/s, numpy(out=touched) {old:.1f}")
        env.close()


if __name__ == "__main__":
    main()
