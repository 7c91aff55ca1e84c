"""tensorferry's own threads: host copies split over threads, and the async batch thread.

numpy releases the GIL for plain copies, so several threads move more bytes
(one thread copies ~7-11 GB/s into or out of staging on the H100 host, eight
~26). These are tensorferry's own daemon threads, not a
``concurrent.futures`` pool: that refuses work once the main thread has
ended, which broke copies made by threads that outlive it. The thread that
waits for a job also runs its parts, so a job completes even when no worker
thread can be started (at interpreter shutdown).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

import numpy as np
import numpy.typing as npt

__all__ = ["PART_MIN", "AsyncBatch", "BatchThread", "CopyJob", "CopyThreads"]

Bytes = npt.NDArray[np.uint8]

PART_MIN = 2 << 20
"""The smallest part :meth:`CopyThreads.copy` hands a thread. Waking a copy thread
that has slept costs 8-170 us on the H200 host, about what it copies in 1-2 MiB
(``benchmarks/probes/wake_latency.py``); parts of at least 2 MiB instead of 1 MiB
took 2-16 MiB downloads and staged uploads 0-10 % faster there
(``benchmarks/probes/split_copies.py``)."""


class CopyJob:
    """Copies in parts that worker threads and the waiter take in turn; a part is a
    list of ``(dst, src)`` pairs, each copied as ``dst[...] = src`` (so that many
    small pieces cost one hand-over, not one each)."""

    def __init__(self, parts: list[list[tuple[Bytes, Bytes]]]) -> None:
        self._parts = deque(parts)
        self._left = len(parts)
        self._done = threading.Condition(threading.Lock())
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """True once every part has been copied (or has failed): no thread writes
        through this job any more."""
        return not self._left

    def run_parts(self) -> None:
        """Copy parts until none is left to take (called by workers and by :meth:`wait`)."""
        while True:
            try:
                part = self._parts.popleft()
            except IndexError:
                return
            try:
                for dst, src in part:
                    np.copyto(dst, src)
            except BaseException as exc:  # surfaced by wait(), on the waiting thread
                self._error = exc
            del part
            with self._done:
                self._left -= 1
                if not self._left:
                    self._done.notify_all()

    def wait(self) -> None:
        """Help until every part is copied; re-raise the first part's error, if any."""
        self.run_parts()
        with self._done:
            while self._left:
                self._done.wait()
        if self._error is not None:
            raise self._error

    def settle(self) -> None:
        """Wait until no part runs any more, whatever happens meanwhile (for cleanup
        after an error: the memory the parts write into may go once this returns).
        Errors of the parts are not raised."""
        while not self.done:
            with contextlib.suppress(BaseException):
                self.wait()


class CopyThreads:
    """Up to ``count`` daemon threads that run :class:`CopyJob` parts, started on first use."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._jobs: SimpleQueue[CopyJob | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self, dst: Bytes, src: Bytes, step: int) -> CopyJob:
        """Start ``dst[...] = src`` in parts of ``step`` bytes; :meth:`CopyJob.wait` ends it."""
        return self.start_parts(
            [[(dst[i : i + step], src[i : i + step])] for i in range(0, dst.nbytes, step)]
        )

    def start_parts(self, parts: list[list[tuple[Bytes, Bytes]]]) -> CopyJob:
        """Start a :class:`CopyJob` of ``parts`` (each a list of ``(dst, src)`` pairs);
        :meth:`CopyJob.wait` ends it."""
        job = CopyJob(parts)
        helpers = min(len(parts), self._started())
        for _ in range(helpers):
            self._jobs.put(job)
        return job

    def copy(self, dst: Bytes, src: Bytes, parallel_min: int) -> None:
        """``dst[...] = src``, split over the threads from ``parallel_min`` bytes (in
        4 KiB-aligned parts of at least :data:`PART_MIN`), on the calling thread below
        that."""
        n = dst.nbytes
        parts = min(self.count, n // PART_MIN) if n >= parallel_min else 1
        if parts < 2:
            np.copyto(dst, src)
            return
        self.start(dst, src, (-(-n // parts) + 4095) & ~4095).wait()

    def _started(self) -> int:
        if len(self._threads) >= self.count or self._closed:
            return len(self._threads)
        with self._lock:
            while len(self._threads) < self.count and not self._closed:
                thread = threading.Thread(target=self._work, name="tensorferry-copy", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no new threads at interpreter shutdown
                    break
                self._threads.append(thread)
            return len(self._threads)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job.run_parts()

    def close(self) -> None:
        """Let the threads end once queued jobs are taken (their waiters finish them)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)


class AsyncBatch:
    """A :class:`tensorferry.TransferHandle` for work run by a :class:`BatchThread`."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._landed = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        """Do the work; remember its error for :meth:`wait`."""
        try:
            self._work()
        except BaseException as exc:
            self._error = exc
        finally:
            self._landed.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch has landed and re-raise its error; ``TimeoutError``
        when ``timeout`` seconds pass first."""
        if not self._landed.wait(timeout):
            raise TimeoutError(f"the async batch did not land within {timeout} s")
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        """True once the batch has landed (or failed): its data is readable."""
        return self._landed.is_set()


class BatchThread:
    """One daemon thread that runs async batches in the order they were submitted.

    Where no thread can be started (interpreter shutdown), a batch runs on the
    submitting thread before :meth:`submit` returns.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: SimpleQueue[AsyncBatch | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> AsyncBatch:
        """Queue ``work``; the handle tells when it has landed."""
        batch = AsyncBatch(work)
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                try:
                    thread.start()
                    self._thread = thread
                except RuntimeError:  # no new threads at interpreter shutdown
                    pass
            started = self._thread is not None
            if started:
                self._queue.put(batch)
        if not started:
            batch.run()
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            batch.run()

    def close(self) -> None:
        """Run the batches already queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
