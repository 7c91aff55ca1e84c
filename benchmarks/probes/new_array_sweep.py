"""Staging, copy part, ring and thread settings for downloads into new arrays.

For each ``CHUNK:PART[:CHUNKS[:THREADS[:AHEAD]]]`` in argv[1:] (MiB, MiB,
chunks, threads, chunks ahead; default 16:4 16:2 16:8 32:4 64:8), a WebGPU
context with ``ContextOptions(staging_chunk=CHUNK, copy_part=PART,
staging_chunks=CHUNKS, copy_threads=THREADS, downloads_ahead=AHEAD)`` (the
defaults where left out) on the best device; GB/s of a SIZE MiB (default 1024)
``Tensor.numpy()`` (a new array each run) and of ``Tensor.numpy(out=touched)``,
median of ROUNDS rounds with the contexts taking turns (so drift of the host
hits every setting alike). Beside them, the host's own copy into a new array
(``numpy.copyto-threads``: 4 MiB parts on one thread per core, into an array
allocated as ``Tensor.numpy()`` allocates it), and for each way the kernel's
transparent huge page counters (``/proc/vmstat``) over its new-array runs: huge
pages faulted, faults that fell back to 4 KiB pages, and direct compactions.
Run: ``SIZE=4000 python benchmarks/probes/new_array_sweep.py [SETTING ...]``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from aligned_new import aligned_empty

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry.bench._numpy import ThreadedNumpyPath

SIZE = int(os.environ.get("SIZE", "1024")) << 20
ROUNDS = int(os.environ.get("ROUNDS", "5"))
COUNTERS = ("thp_fault_alloc", "thp_fault_fallback", "compact_stall")


def vmstat() -> dict[str, int]:
    """The kernel's huge-page counters (empty where /proc/vmstat is missing)."""
    path = Path("/proc/vmstat")
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines())
    return {name: int(value) for name, value in pairs if name in COUNTERS}


def options_of(setting: str) -> tw.ContextOptions:
    """ContextOptions for ``CHUNK:PART[:CHUNKS[:THREADS[:AHEAD]]]``."""
    fields = [int(v) for v in setting.split(":")]
    if not 2 <= len(fields) <= 5:
        raise SystemExit(f"a setting is CHUNK:PART[:CHUNKS[:THREADS[:AHEAD]]], got {setting!r}")
    names = ("staging_chunk", "copy_part", "staging_chunks", "copy_threads", "downloads_ahead")
    named = dict(zip(names[: len(fields)], fields, strict=True))
    named["staging_chunk"] <<= 20
    named["copy_part"] <<= 20
    return tw.ContextOptions(**named)  # type: ignore[arg-type]


def main() -> None:
    """Print one line per setting, then the host's own copy."""
    settings = sys.argv[1:] or ["16:4", "16:2", "16:8", "32:4", "64:8"]
    data = np.random.default_rng(0).integers(0, 255, SIZE, np.uint8)
    touched = np.zeros(SIZE, np.uint8)
    host = ThreadedNumpyPath()
    envs: list[tf.Environment] = []
    ways: dict[str, dict[str, Callable[[], object]]] = {}
    for setting in settings:
        env = tf.Environment(backends=[])
        env.register_backend("webgpu", tw.WebGPUBackend(options_of(setting)))
        tensor = env.from_numpy(data, env.device("webgpu"))
        assert np.array_equal(tensor.numpy(), data)
        envs.append(env)
        ways[setting] = {"new": tensor.numpy, "touched": partial(tensor.numpy, out=touched)}
    ways["host"] = {"new": lambda: host.copy(aligned_empty(SIZE), data)}
    rates: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, dict[str, int]] = {name: dict.fromkeys(COUNTERS, 0) for name in ways}
    for _ in range(ROUNDS + 1):  # the first round warms up and is not kept
        for name, runs in ways.items():
            for kind, run in runs.items():
                before, start = vmstat(), time.perf_counter()
                result = run()
                seconds = time.perf_counter() - start
                after = vmstat()
                del result
                rates.setdefault((name, kind), []).append(SIZE / seconds / 1e9)
                if kind == "new":
                    for counter in after:
                        counts[name][counter] += after[counter] - before.get(counter, 0)
    for name, runs in ways.items():
        line = ", ".join(
            f"{'numpy()' if kind == 'new' else 'numpy(out=touched)'} "
            f"{np.median(rates[name, kind][1:]):.1f} GB/s"
            for kind in runs
        )
        label = "host's own copy into a new array" if name == "host" else f"setting {name}"
        counters = " ".join(f"{k}={v}" for k, v in counts[name].items())
        print(f"{SIZE >> 20} MiB, {label}: {line}; over all rounds {counters}", flush=True)
    for env in envs:
        env.close()
    host.close()


if __name__ == "__main__":
    main()
