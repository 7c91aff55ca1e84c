"""How long a sleeping copy thread takes to start work it is handed.

A worker thread blocks on a ``queue.SimpleQueue`` (as tensorferry's copy threads
do); the main thread, after sleeping GAP seconds, puts a timestamp and waits
until the worker has seen it. Prints the median and p90 microseconds from the
put to the worker running, and to the main thread seeing it done, for each gap,
and the same for four workers woken at once (until the last of them runs).
No GPU is involved: this is the host's (or the VM's) wake-up cost.
Run: ``python benchmarks/probes/wake_latency.py [ROUNDS]``.
"""

from __future__ import annotations

import sys
import threading
import time
from queue import SimpleQueue

import numpy as np

GAPS = (0.0, 100e-6, 1e-3, 10e-3)


def _worker(inbox: SimpleQueue[float | None], started: list[float], done: threading.Event) -> None:
    while True:
        item = inbox.get()
        if item is None:
            return
        started.append(time.perf_counter() - item)
        done.set()


def measure(workers: int, gap: float, rounds: int) -> tuple[list[float], list[float]]:
    """Put-to-run and put-to-seen-done delays, seconds, for ``workers`` woken at once."""
    inboxes: list[SimpleQueue[float | None]] = [SimpleQueue() for _ in range(workers)]
    events = [threading.Event() for _ in range(workers)]
    started: list[list[float]] = [[] for _ in range(workers)]
    threads = [
        threading.Thread(target=_worker, args=(inboxes[i], started[i], events[i]), daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    seen = []
    for _ in range(rounds):
        if gap:
            time.sleep(gap)
        for event in events:
            event.clear()
        now = time.perf_counter()
        for inbox in inboxes:
            inbox.put(now)
        for event in events:
            event.wait()
        seen.append(time.perf_counter() - now)
    for inbox in inboxes:
        inbox.put(None)
    for thread in threads:
        thread.join()
    last = [max(values) for values in zip(*started, strict=True)]
    return last, seen


def main(argv: list[str]) -> None:
    """One line per (workers, gap)."""
    rounds = int(argv[0]) if argv else 300
    print(f"# put -> worker runs / main sees it done: median and p90 us of {rounds} rounds")
    for workers in (1, 4):
        for gap in GAPS:
            run, seen = measure(workers, gap, rounds)
            r50, r90 = np.percentile(run, [50, 90]) * 1e6
            s50, s90 = np.percentile(seen, [50, 90]) * 1e6
            print(
                f"{workers} worker(s), idle {gap * 1e6:7.0f} us before: "
                f"runs after {r50:6.1f} / {r90:6.1f}, done seen after {s50:6.1f} / {s90:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
