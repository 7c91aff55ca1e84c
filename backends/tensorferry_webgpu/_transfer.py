"""WebGPUDataTransfer: the IDataTransfer of the WebGPU backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple, cast

from tensorferry import ClosedError, CopyPair, Device, HostStorage, Tensor
from tensorferry_webgpu._engine import Bytes, Run
from tensorferry_webgpu._storage import WebGPUStorage

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._backend import WebGPUBackend
    from tensorferry_webgpu._context import Context

__all__ = ["WebGPUDataTransfer"]

_Op = Callable[["Run"], None]


_NOT_MINE = (
    "{tensor!r} is neither WebGPU memory nor host memory; the webgpu transfer "
    "copies between its own devices and host memory"
)


class _FutureHandle:
    """A :class:`tensorferry.TransferHandle` over a future of the transfer's worker."""

    def __init__(self, future: Future[None]) -> None:
        self._future = future

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch has landed; re-raise its error; TimeoutError on timeout."""
        self._future.result(timeout)

    def done(self) -> bool:
        """True once the batch has landed (or failed)."""
        return self._future.done()


class WebGPUDataTransfer:
    """Copies host <-> WebGPU device and within one WebGPU device.

    Claims no pair between two different WebGPU devices: the manager routes
    those through host memory. Each batch runs as one :class:`Run` per context
    (usually one): one submit, and one map per staging chunk of downloads.
    Implements :class:`tensorferry.AsyncDataTransfer` with one worker thread.
    """

    def __init__(self, backend: WebGPUBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._closed = False
        self._worker: ThreadPoolExecutor | None = None
        self._contexts: list[Context] = []

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        """Host <-> own device, or within one own device."""
        owns = self._backend.owns
        if owns(src_device):
            return dst_device == src_device or dst_device.is_host
        return src_device.is_host and owns(dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        """Copy the pairs in order; returns when every destination holds its data.

        Raises :class:`ClosedError` (transfer or context closed),
        :class:`DeviceLostError`, ``ValueError`` for a wrapped buffer that is
        mapped, ``TypeError`` for memory this transfer does not handle.
        Everything is checked before anything is copied.
        """
        if len(pairs) == 1 and self._small_upload(*pairs[0]):
            return
        self._execute(self._plan(pairs))

    def _small_upload(self, src: Tensor, dst: Tensor) -> bool:
        """The latency path for one small aligned upload: ``write_buffer`` and a submit."""
        target = dst.storage
        nbytes = src.nbytes
        if (
            self._closed
            or type(src.storage) is not HostStorage
            or type(target) is not WebGPUStorage
            or not 0 < nbytes <= target.context.options.small_upload
            or nbytes % 4
            or (target.base + dst.offset) % 4
        ):
            return False
        context = self._usable(dst, target)
        if context not in self._contexts:
            self._hold(context)
        source = src.storage.array
        with context.lock:
            if context.closed or context.lost:
                context.check_usable()
            try:
                context.queue.write_buffer(
                    target.buffer,
                    target.base + dst.offset,
                    source[src.offset : src.offset + nbytes],
                )
                context.queue.submit([])
                context.pool.end_batch()
            except Exception as exc:
                translated = context.translate(exc)
                if translated is exc:
                    raise
                raise translated from exc
        return True

    def copy_tensors_async(self, pairs: Sequence[CopyPair]) -> _FutureHandle:
        """Check the pairs, then copy them on the transfer's worker thread."""
        runs = self._plan(pairs)
        with self._lock:
            self._check_open()
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="tensorferry-webgpu")
            return _FutureHandle(self._worker.submit(self._execute, runs))

    def close(self) -> None:
        """Finish copies in flight, then release the contexts it used. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker, self._worker = self._worker, None
            contexts, self._contexts = self._contexts, []
        if worker is not None:
            worker.shutdown(wait=True)
        for context in contexts:
            context.release()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the webgpu data transfer is closed")

    def _gpu_side(self, tensor: Tensor) -> tuple[Context, WebGPUStorage]:
        storage = tensor.storage
        assert isinstance(storage, WebGPUStorage)
        context = storage.context
        if context.closed or context.lost:
            context.check_usable()
        if context.backend is not self._backend:
            raise ValueError(f"{tensor!r} belongs to another WebGPU backend instance")
        if storage.watch_map and storage.buffer is not None:
            state = storage.buffer.map_state
            if state != "unmapped":
                raise ValueError(
                    f"the wgpu buffer behind {tensor!r} is {state}; expected it unmapped "
                    "(unmap it before tensorferry copies to or from it)"
                )
        return context, storage

    def _plan(self, pairs: Sequence[CopyPair]) -> list[tuple[Context, list[_Op]]]:
        """Check every pair and turn the batch into runs of ops, one run per context change."""
        self._check_open()
        runs: list[tuple[Context, list[_Op]]] = []
        ops: list[_Op] = []
        current: Context | None = None
        backend = self._backend
        for src, dst in pairs:
            op: _Op
            source, target = src.storage, dst.storage
            if type(source) is WebGPUStorage or isinstance(source, WebGPUStorage):
                context = source.context
                if (
                    context.closed
                    or context.lost
                    or context.backend is not backend
                    or (source.watch_map and _mapped(source))
                ):
                    self._gpu_side(src)  # raises with the reason
                if isinstance(target, WebGPUStorage):
                    if self._usable(dst, target) is not context:
                        raise ValueError(
                            f"{src!r} and {dst!r} are on different WebGPU devices; "
                            "expected one device (the manager routes others through host)"
                        )
                    op = _device_copy(
                        source,
                        source.base + src.offset,
                        target,
                        target.base + dst.offset,
                        src.nbytes,
                    )
                elif isinstance(target, HostStorage):
                    start = dst.offset
                    host = target.array[start : start + dst.nbytes]
                    download = _Download(
                        source,
                        source.base + src.offset,
                        host,
                        target.address + start,
                        target.array,
                        start,
                    )
                    op = cast("_Op", download)
                else:
                    raise TypeError(_NOT_MINE.format(tensor=dst))
            else:
                if not isinstance(source, HostStorage):
                    raise TypeError(_NOT_MINE.format(tensor=src))
                if not isinstance(target, WebGPUStorage):
                    raise TypeError(f"the webgpu transfer does not copy {src!r} -> {dst!r}")
                context = self._usable(dst, target)
                host = source.array[src.offset : src.offset + src.nbytes]
                op = _upload(host, target, target.base + dst.offset)
            if not src.nbytes:
                continue
            if context is not current:
                ops = []
                runs.append((context, ops))
                current = context
            ops.append(op)
        return runs

    def _usable(self, tensor: Tensor, storage: WebGPUStorage) -> Context:
        context = storage.context
        if (
            context.closed
            or context.lost
            or context.backend is not self._backend
            or (storage.watch_map and _mapped(storage))
        ):
            self._gpu_side(tensor)  # raises with the reason
        return context

    def _hold(self, context: Context) -> None:
        with self._lock:
            if all(c is not context for c in self._contexts):
                self._contexts.append(context.acquire())

    def _execute(self, runs: list[tuple[Context, list[_Op]]]) -> None:
        for context, ops in runs:
            if context not in self._contexts:
                self._hold(context)
            with context.lock:
                context.check_usable()
                run = Run(context, single=len(ops) == 1)
                try:
                    index, count = 0, len(ops)
                    while index < count:
                        op = ops[index]
                        if type(op) is _Download:
                            index = run.downloads(ops, index)  # type: ignore[arg-type]
                        else:
                            op(run)
                            index += 1
                    run.finish()
                except Exception as exc:
                    run.abandon()
                    translated = context.translate(exc)
                    if translated is exc:
                        raise
                    raise translated from exc

    def fill(self, tensor: Tensor, pattern: bytes) -> None:
        """Repeat ``pattern`` over ``tensor`` on the device (the backend's Filler)."""
        self._check_open()
        context, storage = self._gpu_side(tensor)
        if tensor.nbytes == 0:
            return
        offset, nbytes = storage.base + tensor.offset, tensor.nbytes
        op: _Op = lambda run: run.fill(_buffer_of(storage), offset, nbytes, pattern)  # noqa: E731
        self._execute([(context, [op])])


def _mapped(storage: WebGPUStorage) -> bool:
    """Whether a caller has mapped (or is mapping) the storage's buffer."""
    return storage.buffer is not None and storage.buffer.map_state != "unmapped"


def _buffer_of(storage: WebGPUStorage) -> wgpu.GPUBuffer:
    assert storage.buffer is not None, "zero-byte storage is never copied"
    return storage.buffer


# Ops hold the storages, not just their buffers, so that a batch in flight keeps
# its memory out of the pool even if the caller drops the tensors.


def _upload(host: Bytes, target: WebGPUStorage, offset: int) -> _Op:
    return lambda run: run.upload(host, _buffer_of(target), offset)


class _Download(NamedTuple):
    """A download op; runs of them are encoded by :meth:`Run.downloads` in one loop."""

    source: WebGPUStorage
    offset: int
    host: Bytes
    address: int
    flat: Bytes
    first: int

    def __call__(self, run: Run) -> None:
        run.download(_buffer_of(self.source), self.offset, self.host, self.address)


def _device_copy(
    source: WebGPUStorage, src_at: int, target: WebGPUStorage, dst_at: int, n: int
) -> _Op:
    return lambda run: run.device_copy(_buffer_of(source), src_at, _buffer_of(target), dst_at, n)
