"""Repeat a transfer and keep its run times: warm-up excluded, median reported."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping

import attrs

__all__ = ["Samples", "Timing", "measure_interleaved"]


@attrs.frozen
class Timing:
    """How long to measure one case.

    ``warmup`` untimed runs, then timed runs until at least ``min_repeats`` runs
    *and* ``min_seconds`` of them (the runs' own time), or ``max_repeats`` runs,
    whichever comes first.

    Paths take turns in blocks of ``block`` timed runs, each block led by
    ``block_warmup`` untimed ones. One run per turn (``block=1``) spreads the
    machine's noise most evenly; longer blocks keep a path's runs together, so
    a microsecond-scale run is not timed right after the GPU switched from
    another library's device context to this one (on an H200 that switch made
    every path's 4 KiB round trip 3-5x slower, torch's too).
    """

    warmup: int = 2
    min_repeats: int = 5
    min_seconds: float = 0.2
    max_repeats: int = 1000
    block: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    block_warmup: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@attrs.frozen
class Samples:
    """Run times of one case, in seconds, in the order they were taken."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median run time: what every GB/s figure and ratio is computed from."""
        return statistics.median(self.seconds)

    @property
    def p99(self) -> float:
        """The 99th percentile of the run times (the slowest run below 100 runs)."""
        if len(self.seconds) < 2:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[98]

    @property
    def fastest(self) -> float:
        """The fastest run."""
        return min(self.seconds)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.1 means +-5 %); 0 for < 4 runs."""
        if len(self.seconds) < 4:
            return 0.0
        low, _, high = statistics.quantiles(self.seconds, n=4)
        return (high - low) / self.median


def measure_interleaved(
    runs: Mapping[str, Callable[[], object]], timing: Timing
) -> dict[str, Samples | Exception]:
    """Time several paths' runs of one workload, round-robin, so that noise from the
    rest of the machine falls on all of them alike and caches are as cold for each.

    Paths take turns in blocks of ``timing.block`` timed runs, each block led by
    ``timing.block_warmup`` untimed runs. Every path gets ``timing.warmup``
    untimed runs first, then timed runs until it has
    ``min_repeats`` runs *and* ``min_seconds`` of them, or ``max_repeats``. What a
    run returns is released after its time is taken, so freeing what it allocated
    (a new array, new device tensors) is not part of its time. A run
    that raises stops there and its exception is returned in its place. The
    garbage collector is paused while timing, as ``timeit`` does.
    """
    outcome: dict[str, Samples | Exception] = {}
    active = dict(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}

    def attempt(name: str) -> float | None:
        before = time.perf_counter_ns()
        try:
            made = active[name]()
        except Exception as exc:
            outcome[name] = exc
            del active[name]
            return None
        elapsed = (time.perf_counter_ns() - before) / 1e9
        del made  # what the run allocated is freed after the clock stopped
        return elapsed

    for _ in range(timing.warmup):
        for name in list(active):
            attempt(name)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while active:
            for name in list(active):
                for _ in range(timing.block_warmup):
                    if name in active:
                        attempt(name)
                for _ in range(timing.block):
                    if name not in active:
                        break
                    elapsed = attempt(name)
                    if elapsed is None:
                        break
                    taken = times[name]
                    taken.append(elapsed)
                    if len(taken) >= timing.max_repeats or (
                        len(taken) >= timing.min_repeats and sum(taken) >= timing.min_seconds
                    ):
                        outcome[name] = Samples(tuple(taken))
                        del active[name]
    finally:
        if gc_was_enabled:
            gc.enable()
    return outcome
