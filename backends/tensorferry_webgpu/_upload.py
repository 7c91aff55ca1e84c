"""Where uploads are staged: host bytes into a device buffer, through staging memory.

* A lone aligned upload of up to ``small_upload`` bytes goes through
  ``queue.write_buffer`` (the fastest way for one tensor).
* In a batch, pieces are packed back to back into pooled ``MAP_WRITE``
  chunks, each piece one ``copy_buffer_to_buffer``: many small tensors cost
  one submit. A full chunk is submitted at once, so the device copies it
  while the host fills the next.
* Once a batch's uploads outgrow one chunk (a body larger than a chunk, or
  one that does not fit the open chunk), they are streamed
  (:class:`~tensorferry_webgpu._stream.UploadStream`): the rest of the run
  of uploads is one byte stream that the copy threads cut into chunks,
  several chunks in flight, each copied by its own submit.
* Bytes before the first and after the last whole 4-byte word of the
  destination are written byte-exact by the patch kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._native import down4, mapped_array, up4, up_to
from tensorferry_webgpu._ops import Upload
from tensorferry_webgpu._stream import UploadStream

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._ops import Op
    from tensorferry_webgpu._queue import Queue

__all__ = ["UploadStager"]

Bytes = npt.NDArray[np.uint8]


class UploadStager:
    """Stages the uploads of one batch; owns the open upload chunk and its fill level."""

    def __init__(self, context: Context, queue: Queue, *, single: bool) -> None:
        self._context = context
        self._queue = queue
        self._single = single
        options = context.options
        self._chunk = options.staging_chunk
        self._pack = options.pack_alignment
        self._chunk_buffer: wgpu.GPUBuffer | None = None
        self._view: Bytes | None = None
        self._used = 0
        self._epoch = -1  # the queue epoch the open chunk belongs to
        self._stream = UploadStream(context, queue)

    def upload(self, src: Bytes, buffer: wgpu.GPUBuffer, offset: int) -> None:
        """Copy host bytes ``src`` into ``buffer`` at byte ``offset`` (any offset and size).

        The run of uploads is streamed from the first body that does not fit the
        open chunk on (one larger than a chunk, or the batch's uploads outgrowing
        one): packing costs the calling thread the whole host copy, one chunk
        after another, while streaming hands each chunk to the copy threads and
        keeps several in flight. Below a chunk, packing stays (no thread
        hand-over, no extra submit: what a batch of small tensors needs).
        Raises wgpu's or the copy's errors (the batch translates them).
        """
        n = src.nbytes
        lo, hi = up4(offset), down4(offset + n)
        stream, queue = self._stream, self._queue
        if hi > lo:
            body = src[lo - offset : hi - offset]
            if stream.active:
                stream.add(body, buffer, lo)
            elif body.nbytes > self._room():
                # Streaming starts; the open chunk takes nothing more (the queue
                # submits it before the stream's first chunk).
                self._view = None
                self._chunk_buffer = None
                stream.add(body, buffer, lo)
            elif self._single and queue.idle and body.nbytes <= self._context.options.small_upload:
                # A lone upload: write_buffer is the fastest way (in a batch, packing
                # pieces into one staging chunk is).
                queue.write_buffer(buffer, lo, body)
            else:
                self._pack_into_chunks(body, buffer, lo)
        # Bytes outside whole words: after what was streamed before them, or at once.
        write = stream.write_inline
        if hi <= lo:
            write(buffer, offset, src.tobytes())
            return
        if lo > offset:
            write(buffer, offset, src[: lo - offset].tobytes())
        if offset + n > hi:
            write(buffer, hi, src[hi - offset :].tobytes())

    def _room(self) -> int:
        """Bytes a piece may take in the open chunk, or in a fresh one where none is open."""
        if self._chunk_buffer is None or self._epoch != self._queue.epoch:
            return self._chunk
        return self._chunk - self._used

    @property
    def streaming(self) -> bool:
        """True while streamed uploads are not recorded yet: :meth:`settle` them before
        the batch records anything else."""
        return self._stream.active

    def settle(self) -> None:
        """Record and submit every streamed upload (the stream's chunks land in order)."""
        self._stream.finish()

    def pack_run(
        self, ops: Sequence[Op], index: int, overlaps: Callable[[Bytes], bool] | None
    ) -> int:
        """Encode the consecutive uploads ``ops[index:]`` of whole 4-byte words that fit
        the open chunk, in one tight loop; return the index of the first op not encoded.

        The run ends at an upload the batch's general path must take: one whose
        source a pending download writes (``overlaps``), or one that may map its
        buffer directly (from ``direct_min`` bytes, on unified memory).
        """
        view, staging, queue = self._view, self._chunk_buffer, self._queue
        if view is None or staging is None or self._epoch != queue.epoch:
            return index
        copy, count = queue.copy, len(ops)
        used, room, pack = self._used, self._chunk, self._pack - 1
        context = self._context
        direct_min = context.options.direct_min if context.mapped_storage else room + 1
        while index < count:
            op = ops[index]
            if type(op) is not Upload:
                break
            host, target, offset = op
            n = host.nbytes
            buffer = target.buffer
            if (
                (offset | n) & 3
                or n > room - used
                or n >= direct_min
                or (overlaps is not None and overlaps(host))
            ):
                break
            view[used : used + n] = host
            copy(staging, used, buffer, offset, n)
            used = (used + n + pack) & ~pack
            index += 1
        self._used = used
        if used >= room:
            queue.submit()  # the device copies this chunk while the next one fills
        return index

    def _pack_into_chunks(self, body: Bytes, buffer: wgpu.GPUBuffer, lo: int) -> None:
        queue, chunk, threads = self._queue, self._chunk, self._context.threads
        parallel_min = self._context.options.parallel_min
        pos = 0
        while pos < body.nbytes:
            if self._chunk_buffer is None or self._epoch != queue.epoch:
                self._open_chunk()
            assert self._chunk_buffer is not None
            assert self._view is not None
            take = min(body.nbytes - pos, chunk - self._used)
            threads.copy(
                self._view[self._used : self._used + take], body[pos : pos + take], parallel_min
            )
            queue.copy(self._chunk_buffer, self._used, buffer, lo + pos, take)
            self._used = up_to(self._used + take, self._pack)
            pos += take
            if self._used >= chunk:
                queue.submit()  # the device copies this chunk while the next one fills

    def _open_chunk(self) -> None:
        # A submit unmaps and hands back the chunk it was attached with: a new one is due.
        self._view = None
        buffer = self._context.upload_staging.acquire()
        self._queue.attach(buffer)
        self._chunk_buffer = buffer
        self._view = mapped_array(buffer, 0, self._chunk)
        self._used = 0
        self._epoch = self._queue.epoch

    def abandon(self) -> None:
        """After an error: forget the open chunk (the queue discards what it attached)
        and discard the stream's chunks once no copy writes into them."""
        self._view = None
        self._chunk_buffer = None
        self._stream.abandon()
