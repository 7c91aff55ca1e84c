"""Where a model load's time goes: the bench's ``model-load`` split into its parts.

The bench's workload (300 tensors, sizes log-uniform from 4 KiB to 64 MiB on a
GPU, the bench's seed), on the first WebGPU device, medians of ROUNDS, the
ways alternating, GB/s of the whole payload:

* ``load``: allocate the tensors and one ``copy_tensors`` into them, then
  ``synchronize`` (the bench's ``model-load``);
* ``allocate``: only the 300 ``Environment.empty`` calls (ms);
* ``into existing``: one ``copy_tensors`` into tensors allocated before;
* ``one tensor``: the same bytes as one upload into one tensor;
* then a profile of one ``load``, by internal time.

Run: ``python benchmarks/probes/model_load_parts.py [ROUNDS] [MAX_MIB]``.
"""

from __future__ import annotations

import cProfile
import itertools
import pstats
import sys
from collections.abc import Callable

import numpy as np
from _median import alternating_seconds

import tensorferry as tf
from tensorferry.bench._suites import ModelLoad


def main() -> None:
    """Print one line per way, then the profile."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    largest = (int(sys.argv[2]) if len(sys.argv) > 2 else 64) << 20
    sizes = ModelLoad().sizes(largest)
    total = sum(sizes)
    with tf.Environment() as env:
        device = env.device("webgpu")
        print(f"# {device}; {len(sizes)} tensors, {total / 2**30:.2f} GiB; medians of {rounds}")
        blob = np.random.default_rng(1).integers(0, 255, total, np.uint8)
        bounds = np.cumsum((0, *sizes))
        sources = [env.from_numpy(blob[a:b], copy=False) for a, b in itertools.pairwise(bounds)]
        whole = env.from_numpy(blob, copy=False)
        one = env.empty((total,), np.uint8, device)
        existing = [env.empty((n,), np.uint8, device) for n in sizes]

        def allocate() -> list[tf.Tensor]:
            return [env.empty((n,), np.uint8, device) for n in sizes]

        def load() -> list[tf.Tensor]:
            targets = allocate()
            env.copy_tensors(sources, targets)
            env.synchronize(device)
            return targets

        def into_existing() -> None:
            env.copy_tensors(sources, existing)
            env.synchronize(device)

        def one_tensor() -> None:
            env.copy_tensor(whole, one)
            env.synchronize(device)

        ways: dict[str, Callable[[], object]] = {
            "load": load,
            "allocate": allocate,
            "into existing": into_existing,
            "one tensor": one_tensor,
        }
        times = alternating_seconds(ways, rounds)
        for name, values in times.items():
            seconds = float(np.median(values))
            spread = ", ".join(f"{total / v / 1e9:.1f}" for v in values)
            rate = total / seconds / 1e9
            print(f"{name:<14} {rate:6.1f} GB/s  {seconds * 1e3:7.2f} ms  ({spread})")
        check = load()
        for target, (a, b) in zip(check, itertools.pairwise(bounds), strict=True):
            assert np.array_equal(target.numpy(), blob[a:b]), "a loaded tensor differs"
        del check
        profile = cProfile.Profile()
        profile.enable()
        kept = load()
        profile.disable()
        del kept
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
