"""Where uploads are staged: host bytes into a device buffer, through staging memory.

* A lone aligned upload of up to ``small_upload`` bytes goes through
  ``queue.write_buffer`` (the fastest way for one tensor).
* In a batch, pieces are packed back to back into pooled ``MAP_WRITE``
  chunks, each piece one ``copy_buffer_to_buffer``: many small tensors cost
  one submit. A full chunk is submitted at once, so the device copies it
  while the host fills the next.
* A body larger than a chunk is streamed: the copy threads fill several
  chunks at once, and each filled chunk is copied by its own submit.
* Bytes before the first and after the last whole 4-byte word of the
  destination are written byte-exact by the patch kernel.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._native import down4, mapped_array, up4, up_to
from tensorferry_webgpu._ops import Upload

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._ops import Op
    from tensorferry_webgpu._queue import Queue
    from tensorferry_webgpu._threads import CopyJob

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

    def upload(self, src: Bytes, buffer: wgpu.GPUBuffer, offset: int) -> None:
        """Copy host bytes ``src`` into ``buffer`` at byte ``offset`` (any offset and size)."""
        n = src.nbytes
        lo, hi = up4(offset), down4(offset + n)
        queue = self._queue
        if hi <= lo:
            queue.write_inline(buffer, offset, src.tobytes())
            return
        if lo > offset:
            queue.write_inline(buffer, offset, src[: lo - offset].tobytes())
        if offset + n > hi:
            queue.write_inline(buffer, hi, src[hi - offset :].tobytes())
        body = src[lo - offset : hi - offset]
        if body.nbytes > self._chunk:
            self._stream(body, buffer, lo)
        elif self._single and queue.idle and body.nbytes <= self._context.options.small_upload:
            # A lone upload: write_buffer is the fastest way (in a batch, packing
            # pieces into one staging chunk is).
            queue.write_buffer(buffer, lo, body)
        else:
            self._pack_into_chunks(body, buffer, lo)

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

    def _stream(self, body: Bytes, buffer: wgpu.GPUBuffer, lo: int) -> None:
        """Upload a body larger than a chunk: the copy threads fill several staging
        chunks at once; each filled chunk is copied by its own submit."""
        queue, context = self._queue, self._context
        queue.submit()  # commands recorded earlier in the batch go first
        staging, threads = context.upload_staging, context.threads
        depth = max(1, min(threads.count, staging.limit - 1))
        jobs: deque[tuple[CopyJob, wgpu.GPUBuffer, int, int]] = deque()

        def land() -> None:
            job, chunk, pos, take = jobs.popleft()
            try:
                job.wait()
            except BaseException:
                staging.discard(chunk)
                raise
            queue.attach(chunk)
            queue.copy(chunk, 0, buffer, lo + pos, take)
            queue.submit()

        try:
            for pos in range(0, body.nbytes, self._chunk):
                while len(jobs) >= depth:
                    land()
                take = min(self._chunk, body.nbytes - pos)
                chunk = staging.acquire()
                try:
                    view = mapped_array(chunk, 0, take)
                except BaseException:
                    staging.discard(chunk)
                    raise
                jobs.append(
                    (
                        threads.start(view, body[pos : pos + take], context.options.copy_part),
                        chunk,
                        pos,
                        take,
                    )
                )
                del view
            while jobs:
                land()
        except BaseException:
            # Let every copy into mapped memory end before its buffer is destroyed.
            for job, chunk, _, _ in jobs:
                with contextlib.suppress(BaseException):  # the first error is the one raised
                    job.wait()
                staging.discard(chunk)
            raise

    def abandon(self) -> None:
        """Forget the open chunk after an error (the queue discards what it attached)."""
        self._view = None
        self._chunk_buffer = None
