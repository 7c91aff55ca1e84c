"""Waits that spin before they block, against waits that block at once.

On the first WebGPU device whose name holds the token given (default: the
first), alternating environments with ``ContextOptions(spin_wait=0)`` and the
default ``spin_wait``, twice each: median GB/s of an upload until landed
(``copy_tensor`` + ``synchronize``) and of a download (``numpy(out=...)``) from
4 KiB to 64 MiB, and of one ``copy_tensors`` of 300 tensors of 4 KiB-1 MiB.
Run: ``python benchmarks/probes/spin_wait.py [TOKEN]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _median import webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw

SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)


def _median_gbs(nbytes: int, times: list[float]) -> float:
    return nbytes / float(np.median(times)) / 1e9


def measure(token: str, spin_wait: float) -> str:
    """One environment's row."""
    cells = []
    with tf.Environment(backends=[]) as env:
        env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(spin_wait=spin_wait)))
        device = webgpu_device(env, token)
        clock = time.perf_counter
        for nbytes in SIZES:
            host = env.from_numpy(np.ones(nbytes, np.uint8), copy=False)
            tensor = env.empty(nbytes, np.uint8, device)
            out = np.empty(nbytes, np.uint8)
            up: list[float] = []
            down: list[float] = []
            for run in range(max(5, min(200, (16 << 20) // nbytes)) + 3):
                start = clock()
                env.copy_tensor(host, tensor)
                env.synchronize(device)
                middle = clock()
                tensor.numpy(out=out)
                if run >= 3:
                    up.append(middle - start)
                    down.append(clock() - middle)
            cells.append(f"{_median_gbs(nbytes, up):.3g}/{_median_gbs(nbytes, down):.3g}")
        sizes = (2 ** np.random.default_rng(0).uniform(12, 20, 300)).astype(int) // 4 * 4
        hosts = [env.from_numpy(np.ones(int(n), np.uint8), copy=False) for n in sizes]
        targets = [env.empty(int(n), np.uint8, device) for n in sizes]
        times = []
        for run in range(8):
            start = clock()
            env.copy_tensors(hosts, targets)
            env.synchronize(device)
            if run >= 2:
                times.append(clock() - start)
        cells.append(f"{_median_gbs(int(sizes.sum()), times):.3g}")
    return " | ".join(cells)


def main() -> None:
    """Print the table."""
    token = sys.argv[1] if len(sys.argv) > 1 else ""
    default = tw.ContextOptions().spin_wait
    heads = [f"{n >> 10} KiB" if n < 1 << 20 else f"{n >> 20} MiB" for n in SIZES]
    print("# GB/s up (until landed) / down; last column: 300 tensors in one copy_tensors")
    print("spin_wait | " + " | ".join(heads) + " | batch")
    for spin_wait in (0.0, default, 0.0, default):
        print(f"{spin_wait * 1e6:.0f} us | {measure(token, spin_wait)}", flush=True)


if __name__ == "__main__":
    main()
