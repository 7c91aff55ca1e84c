"""The one timing helper the probes share."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_seconds(work: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``work`` after one untimed run."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
