"""Streamed routes: a copy between two devices that no transfer connects, chunk by chunk.

A routed copy goes device A -> host -> device B. Done as a whole it needs host
memory for the entire tensor and leaves one side idle while the other works.
:class:`RoutedStream` cuts it into chunks that flow through a few reused host
buffers: chunk k is uploaded to B while chunk k+1 is downloaded from A. It uses
only the public transfer API: flat ``uint8`` views of both tensors, the upload
transfer's :class:`~tensorferry.AsyncDataTransfer` capability where it has one
(else one helper thread that uploads in order), and ``copy_tensors`` for downloads.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import attrs
import numpy as np

from tensorferry.storage import HostStorage
from tensorferry.tensor import Tensor
from tensorferry.transfer import AsyncDataTransfer, CopyPair, IDataTransfer, TransferHandle

__all__ = [
    "DEFAULT_CHUNKS",
    "MIN_CHUNK_BYTES",
    "RoutedStream",
    "StreamOptions",
    "chunk_bounds",
    "flat_bytes",
]


DEFAULT_CHUNKS = 3
"""Host buffers a streamed route cycles through: one downloading, up to two uploading."""

MIN_CHUNK_BYTES = 4096
"""The smallest chunk a stream accepts (smaller ones cost more in calls than they save)."""

_ALIGN = 256
"""Interior chunk boundaries fall on this multiple of the destination's byte offset,
so that uploads other than the first and last need no partial-word handling."""


@attrs.frozen
class StreamOptions:
    """How routed copies stream: ``chunk_bytes`` per chunk, through ``chunks`` host buffers.

    ``chunk_bytes=None`` (the default) never streams. Otherwise a routed pair
    larger than one chunk streams; smaller ones take the plain route (one
    download into host memory of their size, then one upload). Streaming is
    opt-in because it was measured slower where it could be measured: lavapipe
    Vulkan -> llvmpipe GL on two shared cores moved 1.0-1.2 GB/s streamed in
    8 MiB chunks against 2.6 GB/s whole (each chunk pays a whole call's cost);
    on several discrete GPUs it is unmeasured. Raises ``TypeError`` for
    non-int values and ``ValueError`` for a chunk smaller than
    :data:`MIN_CHUNK_BYTES` or fewer than 2 buffers (one buffer cannot overlap
    a download with an upload).
    """

    chunk_bytes: int | None = None
    chunks: int = DEFAULT_CHUNKS

    def __attrs_post_init__(self) -> None:
        checks: list[tuple[str, object, int]] = [("stream_chunks", self.chunks, 2)]
        if self.chunk_bytes is not None:
            checks.insert(0, ("stream_chunk_bytes", self.chunk_bytes, MIN_CHUNK_BYTES))
        for name, value, least in checks:
            if type(value) is not int:
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")

    @property
    def staging_bytes(self) -> int:
        """The most host memory one stream holds at a time (0 when not streaming)."""
        return (self.chunk_bytes or 0) * self.chunks

    def streams(self, nbytes: int) -> bool:
        """Whether a routed pair of ``nbytes`` bytes streams (more than one chunk)."""
        return self.chunk_bytes is not None and nbytes > self.chunk_bytes


def flat_bytes(tensor: Tensor) -> Tensor:
    """The bytes of ``tensor`` as a flat ``uint8`` tensor over the same storage."""
    return Tensor(tensor.storage, (tensor.nbytes,), np.uint8, tensor.offset, tensor.owner)


def chunk_bounds(nbytes: int, dst_offset: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` byte ranges covering ``nbytes``, each at most ``chunk_bytes``
    long, with interior boundaries aligned in the destination's storage."""
    start = 0
    while start < nbytes:
        end = (dst_offset + start + chunk_bytes) // _ALIGN * _ALIGN - dst_offset
        end = min(nbytes, end if end > start else start + chunk_bytes)
        yield start, end
        start = end


class RoutedStream:
    """Copies ``src`` (device A) into ``dst`` (device B): ``down`` copies A -> host,
    ``up`` copies host -> B, through at most ``options.chunks`` host buffers of
    ``options.chunk_bytes`` bytes made by ``allocate``.

    Used by :class:`~tensorferry.DataTransferManager` for routed pairs larger than
    one chunk; it validates nothing (the manager has).
    """

    def __init__(
        self,
        down: IDataTransfer,
        up: IDataTransfer,
        src: Tensor,
        dst: Tensor,
        allocate: Callable[[int], HostStorage],
        options: StreamOptions,
    ) -> None:
        self.down = down
        self.up = up
        self.src = src
        self.dst = dst
        self._allocate = allocate
        self._options = options

    @property
    def transfers(self) -> tuple[IDataTransfer, ...]:
        """The transfers the stream uses (one, if both hops are the same object)."""
        return (self.down,) if self.up is self.down else (self.down, self.up)

    def run(self) -> None:
        """Copy every chunk; return once the last upload has landed.

        On the first error nothing more is started, the uploads already started
        are waited for, and the error is raised (later ones added as notes): the
        destination may then hold part of the data, but the call fails.
        """
        source, target = flat_bytes(self.src), flat_bytes(self.dst)
        assert self._options.chunk_bytes is not None, "only streaming options make a stream"
        chunk_bytes = min(self._options.chunk_bytes, source.nbytes)
        buffers: list[Tensor] = []
        free: list[int] = []
        uploading: collections.deque[tuple[TransferHandle, int]] = collections.deque()
        errors: list[BaseException] = []
        uploader = _Uploader(self.up)
        try:
            for start, end in chunk_bounds(source.nbytes, target.offset, chunk_bytes):
                if not free and len(buffers) < self._options.chunks:
                    storage = self._allocate(chunk_bytes)
                    buffers.append(Tensor(storage, (chunk_bytes,), np.uint8, 0, self.src.owner))
                    free.append(len(buffers) - 1)
                if not free:
                    handle, slot = uploading.popleft()
                    handle.wait()
                    free.append(slot)
                slot = free.pop()
                staged = buffers[slot][: end - start]
                self.down.copy_tensors(((source[start:end], staged),))
                uploading.append((uploader.start((staged, target[start:end])), slot))
        except BaseException as exc:
            errors.append(exc)
        finally:
            for handle, _ in uploading:
                try:
                    handle.wait()
                except BaseException as exc:
                    errors.append(exc)
            uploader.close()
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"the routed copy also failed with {type(other).__name__}: {other}")
            raise first


class _Uploader:
    """Starts uploads in the background: the transfer's own async batches where it has
    them, else one helper thread that runs them in order."""

    def __init__(self, up: IDataTransfer) -> None:
        self._up = up
        self._thread: ThreadPoolExecutor | None = None

    def start(self, pair: CopyPair) -> TransferHandle:
        up = self._up
        if isinstance(up, AsyncDataTransfer):
            return up.copy_tensors_async((pair,))
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="tensorferry-route")
        return _FutureHandle(self._thread.submit(up.copy_tensors, (pair,)))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)


class _FutureHandle:
    def __init__(self, future: Future[None]) -> None:
        self._future = future

    def wait(self, timeout: float | None = None) -> None:
        self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()
