"""Where streamed uploads should stage: ``MAP_WRITE`` chunks against host memory.

``ContextOptions.host_staging`` decides where a stream's chunks live: ``MAP_WRITE``
buffers (on a discrete GPU in its BAR, so the copy threads write across the
link) or host-accessible buffers in cached host memory that the device pulls
from. Two environments on the first WebGPU device whose name holds TOKEN, one
per choice, take turns within each round (uploads from touched host arrays into
existing tensors, then ``synchronize``), and the probe prints GB/s medians of
ROUNDS for each:

* lone uploads of 16 MiB (one chunk: packed, not streamed, the control),
  64 MiB, 256 MiB, 1 GiB and 4000 MiB;
* the bench's ``model-load`` (300 tensors, its seed), allocation included, and
  into existing tensors.

Run: ``python benchmarks/probes/stream_staging.py [TOKEN] [ROUNDS] [MAX_MIB]``
(``MAX_MIB``, 4000 by default, caps the uploads; model tensors stay below a
sixteenth of it, at most 64 MiB).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence

import numpy as np
from _median import alternating_seconds, webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry.bench._suites import ModelLoad

SIZES_MIB = (16, 64, 256, 1024, 4000)


def _ways(
    env: tf.Environment, device: tf.Device, hosts: dict[int, np.ndarray], model: Sequence[int]
) -> dict[str, Callable[[], object]]:
    ways: dict[str, Callable[[], object]] = {}
    for mib, host in hosts.items():
        source = env.from_numpy(host, copy=False)
        target = env.empty(host.shape, np.uint8, device)

        def upload(source: tf.Tensor = source, target: tf.Tensor = target) -> None:
            env.copy_tensor(source, target)
            env.synchronize(device)

        ways[f"upload {mib} MiB"] = upload
    blob = np.ones(sum(model), np.uint8)
    bounds = np.cumsum((0, *model))
    sources = [env.from_numpy(blob[a:b], copy=False) for a, b in itertools.pairwise(bounds)]
    existing = [env.empty((n,), np.uint8, device) for n in model]

    def load() -> list[tf.Tensor]:
        targets = [env.empty((n,), np.uint8, device) for n in model]
        env.copy_tensors(sources, targets)
        env.synchronize(device)
        return targets

    def into_existing() -> None:
        env.copy_tensors(sources, existing)
        env.synchronize(device)

    ways["model-load"] = load
    ways["model-load-existing"] = into_existing
    return ways


def main() -> None:
    """Print a line per workload: each choice's median GB/s and their ratio."""
    token = sys.argv[1] if len(sys.argv) > 1 else ""
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    largest = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    sizes = [mib for mib in SIZES_MIB if mib <= largest]
    model = ModelLoad().sizes(min(64, largest // 16) << 20)
    hosts = {mib: np.ones(mib << 20, np.uint8) for mib in sizes}  # touched
    nbytes = {f"upload {mib} MiB": mib << 20 for mib in sizes}
    nbytes["model-load"] = nbytes["model-load-existing"] = sum(model)
    envs, ways = [], {}
    for host_staging in (False, True):
        env = tf.Environment(backends=[])
        env.register_backend(
            "webgpu", tw.WebGPUBackend(tw.ContextOptions(host_staging=host_staging))
        )
        envs.append(env)
        device = webgpu_device(env, token)
        name = "host" if host_staging else "write-mapped"
        for workload, way in _ways(env, device, hosts, model).items():
            ways[f"{workload} | {name}"] = way
    print(f"# {device}; medians of {rounds} rounds, the two stagings alternating; GB/s")
    times = alternating_seconds(ways, rounds)
    print(f"{'workload':<22}{'write-mapped':>14}{'host':>10}{'host / wm':>11}")
    for workload, n in nbytes.items():
        a, b = (
            n / float(np.median(times[f"{workload} | {s}"])) / 1e9 for s in ("write-mapped", "host")
        )
        print(f"{workload:<22}{a:>14.1f}{b:>10.1f}{b / a:>10.2f}x")
    for env in envs:
        env.close()


if __name__ == "__main__":
    main()
