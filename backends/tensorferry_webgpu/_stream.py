"""The upload stream: consecutive uploads of a batch as one byte stream through staging.

Pieces (whole 4-byte words of one or many tensors) are packed back to back,
at ``pack_alignment``, into ``MAP_WRITE`` staging chunks. A chunk is handed
to the copy threads as one job as soon as it is full; when its job is done,
the calling thread records one ``copy_buffer_to_buffer`` per piece (the
queue merges neighbours) and submits the chunk, while the threads fill the
chunks behind it. Up to ``depth`` chunks are in flight, so a batch of many
tensors keeps every copy thread busy the way one large tensor does, and
staging stays within ``StagingPool.limit``.

Order is that of a loop: every command the stream records lands in the order
its pieces were added, and nothing else may be recorded into the batch's
queue while the stream holds pieces (:attr:`UploadStream.active`) unless it
goes through the stream (:meth:`UploadStream.write_inline`) or the stream is
drained first (:meth:`UploadStream.finish`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._align import up_to
from tensorferry_webgpu._native import mapped_array
from tensorferry_webgpu._waits import poll_ready

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._queue import Queue
    from tensorferry_webgpu._threads import CopyJob

__all__ = ["UploadStream"]

Bytes = npt.NDArray[np.uint8]

# A chunk's entry: (position in the chunk, or -1 for an inline write; host bytes or the
# inline write's bytes; destination buffer; destination offset; byte count).
_Entry = tuple[int, Bytes, "wgpu.GPUBuffer", int, int]


class _Chunk:
    """One staging chunk of the stream: its buffer, while open its mapped view, its
    entries in stream order, and once sealed the job that fills it."""

    __slots__ = ("buffer", "entries", "job", "used", "view")

    def __init__(self, buffer: wgpu.GPUBuffer, view: Bytes) -> None:
        self.buffer = buffer
        self.view: Bytes | None = view
        self.used = 0
        self.entries: list[_Entry] = []
        self.job: CopyJob | None = None


class UploadStream:
    """Streams a batch's uploads through staging chunks filled by the copy threads.

    Owns every chunk it acquires until the chunk is submitted (then the queue
    hands it back to the staging pool) or discarded by :meth:`abandon`.
    """

    def __init__(self, context: Context, queue: Queue) -> None:
        self._context = context
        self._queue = queue
        options = context.options
        self._chunk = options.staging_chunk
        self._pack = options.pack_alignment
        self._part = options.copy_part
        staging = context.upload_staging
        # Chunks in flight and the one being packed stay below the pool's limit: the
        # batch's packed chunk, attached to the queue until the stream's first
        # submit, may hold the last one (else acquire would wait for ever).
        self._depth = max(1, min(context.threads.count, staging.limit - 1))
        self._open: _Chunk | None = None
        self._flight: deque[_Chunk] = deque()

    @property
    def active(self) -> bool:
        """True while the stream holds pieces whose copies are not recorded yet."""
        return self._open is not None or bool(self._flight)

    def add(self, src: Bytes, buffer: wgpu.GPUBuffer, offset: int) -> None:
        """Stream host bytes ``src`` (a multiple of 4 bytes) into ``buffer`` at ``offset``
        (a multiple of 4), split over as many chunks as it needs.

        May wait for the oldest chunk in flight; raises the error of its copy job,
        a wgpu error of its submit, or :class:`~tensorferry.DeviceLostError`.
        """
        pos, n, room = 0, src.nbytes, self._chunk
        while pos < n:
            chunk = self._open if self._open is not None else self._open_chunk()
            take = min(n - pos, room - chunk.used)
            chunk.entries.append((chunk.used, src[pos : pos + take], buffer, offset + pos, take))
            chunk.used = up_to(chunk.used + take, self._pack)
            pos += take
            if chunk.used >= room:
                self._seal()

    def write_inline(self, buffer: wgpu.GPUBuffer, offset: int, data: bytes) -> None:
        """Write up to 128 bytes at any byte offset after everything streamed so far
        (recorded when the last chunk lands; at once when the stream is empty)."""
        tail = self._open
        if tail is None and self._flight:
            tail = self._flight[-1]
        if tail is None:
            self._queue.write_inline(buffer, offset, data)
        else:
            tail.entries.append((-1, np.frombuffer(data, np.uint8), buffer, offset, len(data)))

    def finish(self) -> None:
        """Land every chunk: each one's copies are recorded and submitted, in order.

        Raises as :meth:`add` does.
        """
        if self._open is not None:
            self._seal()
        while self._flight:
            self._land()

    def abandon(self) -> None:
        """After an error: let every copy into staging end, then discard the chunks
        (their state is unknown). Never raises."""
        chunks = list(self._flight)
        self._flight.clear()
        if self._open is not None:
            self._open.view = None
            chunks.append(self._open)
            self._open = None
        staging = self._context.upload_staging
        for chunk in chunks:
            if chunk.job is not None:
                chunk.job.settle()  # no thread may write into memory that goes away
            staging.discard(chunk.buffer)

    def _open_chunk(self) -> _Chunk:
        while len(self._flight) >= self._depth:
            self._land()
        staging = self._context.upload_staging
        # The chunk handed out next was copied from several submits ago: resolve its
        # map now, so that acquiring it does not wait for the chunks submitted since.
        poll_ready(self._context.gpu)
        buffer = staging.acquire()
        try:
            view = mapped_array(buffer, 0, self._chunk)
        except BaseException:
            staging.discard(buffer)
            raise
        self._open = _Chunk(buffer, view)
        return self._open

    def _seal(self) -> None:
        """Hand the open chunk to the copy threads: parts of about ``copy_part`` bytes,
        a large piece split, small neighbours grouped."""
        chunk = self._open
        assert chunk is not None
        assert chunk.view is not None
        view, step = chunk.view, self._part
        parts: list[list[tuple[Bytes, Bytes]]] = []
        group: list[tuple[Bytes, Bytes]] = []
        grouped = 0
        for position, src, _, _, n in chunk.entries:
            if position < 0:
                continue
            if n >= step:
                for i in range(0, n, step):
                    take = min(step, n - i)
                    parts.append([(view[position + i : position + i + take], src[i : i + take])])
                continue
            group.append((view[position : position + n], src))
            grouped += n
            if grouped >= step:
                parts.append(group)
                group, grouped = [], 0
        if group:
            parts.append(group)
        del view, group
        chunk.view = None  # from here on only the job's parts see the mapped memory
        self._open = None
        self._flight.append(chunk)
        chunk.job = self._context.threads.start_parts(parts)

    def _land(self) -> None:
        chunk = self._flight.popleft()
        job, staging, queue = chunk.job, self._context.upload_staging, self._queue
        assert job is not None
        try:
            job.wait()
        except BaseException:
            job.settle()
            staging.discard(chunk.buffer)
            raise
        queue.attach(chunk.buffer)  # unmapped by the submit, handed back after it
        copy, inline, staged = queue.copy, queue.write_inline, chunk.buffer
        for position, data, buffer, offset, n in chunk.entries:
            if position < 0:
                inline(buffer, offset, data.tobytes())
            else:
                copy(staged, position, buffer, offset, n)
        queue.submit()
