"""What the probes share: timing helpers, the adapter or tensorferry device a
probe's TOKEN argument names, and a wgpu device with the adapter's largest
buffers."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tw


def median_seconds(work: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``work`` after one untimed run."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def alternating_seconds(
    ways: dict[str, Callable[[], object]], rounds: int
) -> dict[str, list[float]]:
    """Wall times of each way over ``rounds`` rounds, the ways taking turns within
    a round (so that drift hits every way alike), after one untimed run of each.
    A way's result is dropped before the next way runs."""
    for way in ways.values():
        way()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            result = way()
            times[name].append(time.perf_counter() - start)
            del result
    return times


def adapter_named(token: str) -> wgpu.GPUAdapter:
    """The first WebGPU adapter whose summary contains ``token`` (any case; "" takes
    the first)."""
    return next(a for a in tw.adapters() if token.lower() in a.summary.lower())


def webgpu_device(env: tf.Environment, token: str) -> tf.Device:
    """The first WebGPU device of ``env`` with default memory whose name contains
    ``token`` (any case; "" takes the first)."""
    return next(
        d
        for d in env.devices()
        if d.backend == "webgpu"
        and d.memory is tf.MemoryKind.DEFAULT
        and token.lower() in d.name.lower()
    )


def large_device(token: str) -> tuple[wgpu.GPUAdapter, wgpu.GPUDevice]:
    """The first adapter whose summary contains ``token`` (any case; "" takes the
    first), and a device of it allowed the adapter's largest buffers and bindings."""
    adapter = adapter_named(token)
    limits = adapter.limits
    gpu = adapter.request_device_sync(
        required_limits={
            "max-buffer-size": limits["max-buffer-size"],
            "max-storage-buffer-binding-size": limits["max-storage-buffer-binding-size"],
        }
    )
    return adapter, gpu


def print_rates(nbytes: int, times: dict[str, list[float]]) -> None:
    """Print each way's median GB/s for ``nbytes`` a run, then every run's."""
    for name, seconds in times.items():
        values = [nbytes / s / 1e9 for s in seconds]
        print(f"{name}: {np.median(values):.1f} GB/s ({', '.join(f'{v:.1f}' for v in values)})")
