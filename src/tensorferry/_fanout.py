"""Concurrency for the manager: the independent groups of a batch run at once.

:class:`FanOut` runs a few callables on a small pool of threads shared by every
batch of one manager and returns once all of them have finished, raising the
first error. :class:`ThreadHandle` runs one callable on a thread of its own and
is a :class:`~tensorferry.TransferHandle` for it (a routed stream started by an
asynchronous batch).

Pool threads only ever run leaf work (a transfer's ``copy_tensors``, or a routed
stream, which waits on threads of its own), never wait for other pool tasks:
however many batches share the pool, every task it queues can finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["FanOut", "ThreadHandle"]


class FanOut:
    """Runs groups of tasks concurrently on up to ``threads`` pool threads (plus the caller's).

    ``threads=0`` runs every task on the calling thread, one after another.
    Raises ``ValueError`` for a negative count and ``TypeError`` for a non-int.
    """

    def __init__(self, threads: int) -> None:
        if type(threads) is not int:
            raise TypeError(f"fan_out_threads must be an int, got {type(threads).__name__}")
        if threads < 0:
            raise ValueError(f"fan_out_threads must be >= 0 (0: no fan-out), got {threads}")
        self._threads = threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def threads(self) -> int:
        """How many pool threads may run tasks besides the caller (0: none)."""
        return self._threads

    def run(self, tasks: Sequence[Callable[[], object]]) -> None:
        """Run every task and return once all have finished (or failed).

        The first task runs on the calling thread, the others on the pool. If
        any raised, the first error in task order is raised, with the others
        added to it as notes; no task is left running either way.
        """
        if len(tasks) <= 1 or not self._threads:
            _run_in_order(tasks)
            return
        pool = self._pool or self._start_pool()
        futures: list[Future[object]] = []
        here = [tasks[0]]
        for task in tasks[1:]:
            try:
                futures.append(pool.submit(task))
            except RuntimeError:  # interpreter shutdown: executors take no new work
                here.append(task)
        errors = _errors_of(here)
        for future in futures:
            try:
                future.result()
            except BaseException as exc:
                errors.append(exc)
        _raise_first(errors)

    def _start_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._threads, thread_name_prefix="tensorferry-fan-out"
                )
            return self._pool

    def close(self) -> None:
        """Stop the pool's threads once their tasks are done; idempotent.

        A later :meth:`run` starts a new pool (the manager refuses copies after
        close before they get here).
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _run_in_order(tasks: Sequence[Callable[[], object]]) -> None:
    _raise_first(_errors_of(tasks))


def _errors_of(tasks: Sequence[Callable[[], object]]) -> list[BaseException]:
    """Run every task on this thread, in order; the errors they raised, in order."""
    errors: list[BaseException] = []
    for task in tasks:
        try:
            task()
        except BaseException as exc:
            errors.append(exc)
    return errors


def _raise_first(errors: Sequence[BaseException]) -> None:
    if not errors:
        return
    first = errors[0]
    for other in errors[1:]:
        first.add_note(f"another group of the batch failed too: {type(other).__name__}: {other}")
    raise first


class ThreadHandle:
    """Runs ``work`` on a new daemon thread; a :class:`~tensorferry.TransferHandle` for it."""

    def __init__(self, work: Callable[[], object], *, name: str) -> None:
        self._landed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:
            self._error = exc
        finally:
            self._landed.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the work has finished; raise its error, or ``TimeoutError`` first."""
        if not self._landed.wait(timeout):
            raise TimeoutError(f"the routed copy did not land within {timeout} s")
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        """True once the work has finished (or failed)."""
        return self._landed.is_set()
