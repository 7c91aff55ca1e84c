"""Where uploads are staged: host bytes into a device buffer, through staging memory.

* A lone aligned upload of up to ``small_upload`` bytes goes through
  ``queue.write_buffer`` (one copy on the calling thread: the fastest way up to
  a few MiB); a larger one is packed into staging by the copy threads.
* In a batch, pieces are packed back to back into pooled ``MAP_WRITE``
  chunks, each piece one ``copy_buffer_to_buffer``: many small tensors cost
  one submit. A full chunk is submitted at once, so the device copies it
  while the host fills the next.
* Once a batch's uploads outgrow one chunk (a body larger than a chunk, or
  one of at least :data:`STREAM_MIN` bytes that does not fit the chunk), they
  are streamed (:class:`~tensorferry_webgpu._stream.UploadStream`): the rest
  of the run of uploads is one byte stream that the copy threads cut into
  chunks, several chunks in flight, each copied by its own submit.
* Bytes before the first and after the last whole 4-byte word of the
  destination are written byte-exact by the patch kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._align import down4, up4, up_to
from tensorferry_webgpu._native import mapped_array
from tensorferry_webgpu._ops import Upload
from tensorferry_webgpu._stream import UploadStream

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._ops import Op
    from tensorferry_webgpu._queue import Queue

__all__ = ["STREAM_MIN", "UploadStager"]

Bytes = npt.NDArray[np.uint8]

STREAM_MIN = 64 << 10
"""The smallest body that starts a stream once a batch's uploads outgrow a chunk
(a quarter chunk where chunks are smaller).

Packing costs the calling thread the whole host copy, one chunk after another;
streaming hands each chunk to the copy threads, several chunks in flight, at
a price per piece on the calling thread (recording it in a chunk, grouping it
into a job, its copy command): on lavapipe a batch of 40000 x 1000-byte
uploads took 2.5x as long streamed as packed (0.74 against 0.30 s for two
batches under cProfile), while one thread copies 64 KiB in ~7 us on the H200
host, eight in ~3 us. So a run of tiny uploads keeps packing; the first body
of at least this size that does not fit the chunk streams, and with it the
rest of the run of uploads (small ones too: switching back would drain the
pipeline), as does any body larger than a chunk.
"""


class UploadStager:
    """Stages the uploads of one batch; owns the open upload chunk and its fill level.

    ``few`` says the batch has few ops (``_batch.FEW_OPS``): its small uploads then
    go by ``write_buffer`` while nothing is encoded, as a lone upload's would.
    """

    def __init__(self, context: Context, queue: Queue, *, few: bool) -> None:
        self._context = context
        self._queue = queue
        self._few = few
        options = context.options
        self._chunk = options.staging_chunk
        self._pack = options.pack_alignment
        self._chunk_buffer: wgpu.GPUBuffer | None = None
        self._view: Bytes | None = None
        self._used = 0
        self._epoch = -1  # the queue epoch the open chunk belongs to
        self._stream: UploadStream | None = None  # made when a batch first streams
        self._stream_min = min(STREAM_MIN, self._chunk // 4)

    def upload(self, src: Bytes, buffer: wgpu.GPUBuffer, offset: int) -> None:
        """Copy host bytes ``src`` into ``buffer`` at byte ``offset`` (any offset and size).

        Raises wgpu's or the host copy's errors (the batch translates them).
        """
        n = src.nbytes
        lo, hi = up4(offset), down4(offset + n)
        stream, queue = self._stream, self._queue
        streaming = stream is not None and stream.active
        if hi > lo:
            body = src[lo - offset : hi - offset]
            size = body.nbytes
            if streaming:
                assert stream is not None
                stream.add(body, buffer, lo)
            elif size > self._chunk or (size >= self._stream_min and self._outgrown(size)):
                # Streaming starts; the open chunk takes nothing more (the queue
                # submits it before the stream's first chunk).
                self._view = None
                self._chunk_buffer = None
                if stream is None:
                    stream = self._stream = UploadStream(self._context, queue)
                stream.add(body, buffer, lo)
                streaming = True
            elif self._few and queue.unencoded and size <= self._context.options.small_upload:
                # A lone upload, or one of a few: write_buffer is the fastest way (in
                # a larger batch, packing pieces into one staging chunk is).
                queue.write_buffer(buffer, lo, body)
            else:
                self._pack_into_chunks(body, buffer, lo)
        # Bytes outside whole words: after what was streamed before them.
        write: Callable[[wgpu.GPUBuffer, int, bytes], None] = queue.write_inline
        if streaming:
            assert stream is not None
            write = stream.write_inline
        if hi <= lo:
            write(buffer, offset, src.tobytes())
            return
        if lo > offset:
            write(buffer, offset, src[: lo - offset].tobytes())
        if offset + n > hi:
            write(buffer, hi, src[hi - offset :].tobytes())

    def _outgrown(self, size: int) -> bool:
        """Whether the batch's uploads outgrow a chunk with ``size`` more bytes: a chunk
        was packed in this batch (it may have been submitted since) and has no room
        for them."""
        return self._chunk_buffer is not None and self._used + size > self._chunk

    @property
    def streaming(self) -> bool:
        """True while streamed uploads are not recorded yet: :meth:`settle` them before
        the batch records anything else."""
        return self._stream is not None and self._stream.active

    def settle(self) -> None:
        """Record and submit every streamed upload (the stream's chunks land in order).

        Raises the error of a chunk's host copy or submit (then :meth:`abandon`).
        """
        if self._stream is not None:
            self._stream.finish()

    def pack_run(
        self, ops: Sequence[Op], index: int, overlaps: Callable[[Bytes], bool] | None
    ) -> int:
        """Encode the consecutive uploads ``ops[index:]`` of whole 4-byte words that fit
        the open chunk, in one tight loop; return the index of the first op not encoded.

        The run ends at an upload the batch's general path must take: one whose
        source a pending download writes (``overlaps``), or one that may map its
        buffer directly (from ``direct_min`` bytes, on unified memory). Neighbouring
        rows of one host array, staged back to back, are staged by one host copy.
        """
        view, staging, queue = self._view, self._chunk_buffer, self._queue
        if view is None or staging is None or self._epoch != queue.epoch:
            return index
        count = len(ops)
        copies = queue.recorded()  # appended to as Queue.copy would, without a call
        last = copies[-1] if copies else None
        used, room, pack = self._used, self._chunk, self._pack - 1
        context = self._context
        direct_min = context.options.direct_min if context.mapped_storage else room + 1
        # The open run: host bytes [origin, end) of ``run``, staged at ``staged``.
        run: Bytes | None = None
        origin = end = staged = 0
        while index < count:
            op = ops[index]
            if type(op) is not Upload:
                break
            target, offset, n, flat, first = op
            if (
                (offset | n) & 3
                or n > room - used
                or n >= direct_min
                or (overlaps is not None and overlaps(flat[first : first + n]))
            ):
                break
            if flat is not run or first != end or used != staged + end - origin:
                if run is not None:
                    view[staged : staged + end - origin] = run[origin:end]
                run, origin, staged = flat, first, used
            end = first + n
            buffer = target.buffer
            if (
                last is not None
                and last[2] is buffer
                and last[0] is staging
                and last[1] + last[4] == used
                and last[3] + last[4] == offset
            ):
                last[4] += n
            else:
                last = [staging, used, buffer, offset, n]
                copies.append(last)
            used = (used + n + pack) & ~pack
            index += 1
        if run is not None:
            view[staged : staged + end - origin] = run[origin:end]
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
        if self._stream is not None:
            self._stream.abandon()
