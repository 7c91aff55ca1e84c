"""CopyHandle: what the asynchronous copy calls return to callers.

Backends hand the manager minimal :class:`~tensorferry.TransferHandle` objects
(``wait`` and ``done``). The manager wraps the handles of one batch in a
:class:`CopyHandle`, which adds what callers need and backend authors should not
have to write: it can be awaited from asyncio without blocking the event loop,
it runs done-callbacks, and it tells the manager when the batch has landed, so
that ``close()`` and ``unregister_data_transfer(wait=True)`` wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from tensorferry.transfer import TransferHandle

__all__ = ["CopyHandle"]

_log = logging.getLogger("tensorferry")


class CopyHandle:
    """A batch of copies in flight; it satisfies :class:`~tensorferry.TransferHandle`.

    * ``wait(timeout)`` blocks until every copy has landed and raises the first
      error a copy raised (each later ``wait`` raises it again), or
      ``TimeoutError`` when ``timeout`` seconds pass first.
    * ``done()`` is true once every copy has landed or failed; it never blocks.
    * ``await handle`` waits on a worker thread of the running event loop's
      default executor, so the loop keeps running; it raises what ``wait`` raises.
    * ``add_done_callback(fn)`` calls ``fn(handle)`` once the batch is done.

    ``parts`` are the backend handles of the batch, waited in order;
    ``on_landed`` is called once, with this handle, when they all are done.
    """

    def __init__(
        self,
        parts: Sequence[TransferHandle] = (),
        *,
        on_landed: Callable[[CopyHandle], None] | None = None,
    ) -> None:
        self._parts = tuple(parts)
        self._on_landed = on_landed
        self._waiting = threading.Lock()  # one thread at a time waits on the parts
        self._state = threading.Lock()  # guards _landed and _callbacks
        self._landed = threading.Event()
        self._error: Exception | None = None
        self._callbacks: list[Callable[[CopyHandle], object]] = []
        self._watcher: threading.Thread | None = None
        if not self._parts:
            self._finish(None)

    def done(self) -> bool:
        """True once every copy of the batch has landed (or failed); never blocks."""
        if self._landed.is_set():
            return True
        if all(part.done() for part in self._parts) and self._waiting.acquire(blocking=False):
            try:
                if not self._landed.is_set():
                    self._finish(self._collect(None))
            finally:
                self._waiting.release()
        return self._landed.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch has landed; raise the first error a copy raised.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the batch
        keeps running; wait again later).
        """
        if not self._landed.is_set():
            deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            if not self._waiting.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                raise TimeoutError(f"the copies did not land within {timeout} s")
            try:
                if not self._landed.is_set():
                    self._finish(self._collect(deadline))
            finally:
                self._waiting.release()
        if self._error is not None:
            raise self._error

    def _collect(self, deadline: float | None) -> Exception | None:
        """Wait for every part in order; return the first error (raise TimeoutError
        only when ``deadline`` passes)."""
        first: Exception | None = None
        for part in self._parts:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                part.wait(remaining)
            except TimeoutError as exc:
                if deadline is not None and not part.done():
                    raise
                first = first or exc
            except Exception as exc:
                first = first or exc
        return first

    def _finish(self, error: Exception | None) -> None:
        self._error = error
        if self._on_landed is not None:
            self._on_landed(self)
        with self._state:
            self._landed.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run(callback)

    def add_done_callback(self, fn: Callable[[CopyHandle], object]) -> None:
        """Call ``fn(handle)`` once the batch is done: at once (in this thread)
        if it is, else from the thread that sees it land.

        A callback that raises is logged to the ``tensorferry`` logger, never
        propagated. Raises ``TypeError`` if ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"add_done_callback needs a callable, got {type(fn).__name__}")
        with self._state:
            if not self._landed.is_set():
                self._callbacks.append(fn)
                if self._watcher is None:
                    # Someone must see the batch land even if nobody waits for it.
                    self._watcher = threading.Thread(
                        target=self._watch, name="tensorferry-copy-handle", daemon=True
                    )
                    self._watcher.start()
                return
        self._run(fn)

    def _watch(self) -> None:
        with contextlib.suppress(Exception):  # the error is for whoever waits
            self.wait()

    def _run(self, callback: Callable[[CopyHandle], object]) -> None:
        try:
            callback(self)
        except Exception:
            _log.exception("a CopyHandle done-callback raised")

    def __await__(self) -> Generator[Any, None, None]:
        """Wait without blocking the running event loop; raise what :meth:`wait` raises."""
        if not self._landed.is_set():
            import asyncio

            future = asyncio.get_running_loop().run_in_executor(None, self.wait)
            yield from future.__await__()
            return
        self.wait()

    def __repr__(self) -> str:
        state = "done" if self._landed.is_set() else "running"
        return f"<CopyHandle {state}, {len(self._parts)} backend handle(s)>"
