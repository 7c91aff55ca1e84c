"""Where downloads are staged: device bytes into host arrays, through staging memory.

* Pieces are copied back to back into pooled ``MAP_READ`` chunks, each piece
  one ``copy_buffer_to_buffer``; a chunk is mapped once and its pieces are
  copied out to their host arrays (neighbouring rows of one host array in one
  copy). A batch of small tensors is one submit and one map.
* When a chunk fills, it is submitted while the next fills; at most
  ``staging_chunks`` exist, so the oldest is drained before a new one opens.
* A range larger than a chunk is streamed: copies into several chunks are in
  flight while the copy threads drain the ones already mapped.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._align import down4, up4, up_to
from tensorferry_webgpu._native import MAP_READ, mapped_array
from tensorferry_webgpu._ops import Download
from tensorferry_webgpu._waits import request_map

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._ops import Op
    from tensorferry_webgpu._queue import Queue
    from tensorferry_webgpu._threads import CopyJob

__all__ = ["DownloadStager"]

Bytes = npt.NDArray[np.uint8]
_Entries = list[tuple[int, Bytes]]  # (position in the chunk, host bytes it lands in)


class DownloadStager:
    """Stages the downloads of one batch: the open chunk, the chunks waiting to be
    drained, and the host ranges they will write (:meth:`overlaps`)."""

    def __init__(self, context: Context, queue: Queue) -> None:
        self._context = context
        self._queue = queue
        options = context.options
        self._chunk = options.staging_chunk
        self._pack = options.pack_alignment
        self._parallel_min = options.parallel_min
        self._open: wgpu.GPUBuffer | None = None
        self._used = 0
        self._entries: _Entries = []
        self._epoch = 0  # the queue epoch of the latest copy into the open chunk
        self._waiting: deque[tuple[wgpu.GPUBuffer, int, _Entries, int]] = deque()
        self._host_writes: list[tuple[int, int]] = []

    def fits(self, op: Download) -> bool:
        """Whether ``op`` fits the open chunk (then :meth:`pack_run` takes it)."""
        span = up4(op.offset + op.nbytes) - down4(op.offset)
        return self._open is not None and span <= self._chunk - self._used

    def pack_run(self, ops: Sequence[Op], index: int) -> int:
        """Encode the consecutive downloads ``ops[index:]`` that fit the open chunk, in
        one tight loop; return the index of the first op not encoded."""
        down, count = self._open, len(ops)
        if down is None:
            return index
        copies = self._queue.recorded()  # appended to as Queue.copy would, without a call
        last = copies[-1] if copies else None
        entries, writes, used, room = self._entries, self._host_writes, self._used, self._chunk
        pack = self._pack - 1
        # Neighbouring rows of one host storage, staged back to back, land in one host
        # copy: the open run is rows [origin, end) of ``run``, staged from ``staged``,
        # at host ``address``; it becomes an entry when a row does not continue it.
        run: Bytes | None = None
        origin = end = staged = staged_end = address = 0
        while index < count:
            op = ops[index]
            if type(op) is not Download:
                break
            storage, offset, size, host, flat, first = op
            start, stop = offset & ~3, (offset + size + 3) & ~3
            if stop - start > room - used:
                break
            buffer, size4 = storage.buffer, stop - start
            if (
                last is not None
                and last[0] is buffer
                and last[2] is down
                and last[1] + last[4] == start
                and last[3] + last[4] == used
            ):
                last[4] += size4
            else:
                assert buffer is not None, "zero-byte storage is never copied"
                last = [buffer, start, down, used, size4]
                copies.append(last)
            position = used + offset - start
            if flat is not run or position != staged_end or first != end:
                if run is not None:
                    entries.append((staged, run[origin:end]))
                    writes.append((address, address + end - origin))
                run, origin, staged, address = flat, first, position, host.address + first
            staged_end, end = position + size, first + size
            used = (used + size4 + pack) & ~pack
            index += 1
        if run is not None:
            entries.append((staged, run[origin:end]))
            writes.append((address, address + end - origin))
        self._used = used
        self._epoch = self._queue.epoch
        return index

    def download(self, buffer: wgpu.GPUBuffer, offset: int, dst: Bytes, address: int) -> None:
        """Copy ``dst.nbytes`` bytes at ``offset`` in ``buffer`` into host bytes ``dst``
        (which start at host ``address``), through new chunks or a stream."""
        n = dst.nbytes
        start, end = down4(offset), up4(offset + n)
        if end - start > self._chunk:
            self.complete()  # earlier pieces of the batch land first, so later writes win
            self._stream(buffer, start, end, offset, dst)
            return
        queue, pos = self._queue, start
        while pos < end:
            if self._open is None:
                self._open_chunk()
            assert self._open is not None
            take = min(end - pos, self._chunk - self._used)
            queue.copy(buffer, pos, self._open, self._used, take)
            view_lo, view_hi = max(pos, offset), min(pos + take, offset + n)
            if view_hi > view_lo:
                part = dst[view_lo - offset : view_hi - offset]
                self._entries.append((self._used + view_lo - pos, part))
            self._used = up_to(self._used + take, self._pack)
            self._epoch = queue.epoch
            pos += take
            if self._used >= self._chunk:
                self._seal()
                queue.submit()  # the device copies this chunk while the next one fills
        self._host_writes.append((address, address + n))

    def overlaps(self, src: Bytes) -> bool:
        """Whether host bytes ``src`` will be written by a download not yet complete."""
        if not self._host_writes:
            return False
        lo = int(src.__array_interface__["data"][0])
        hi = lo + src.nbytes
        return any(start < hi and lo < end for start, end in self._host_writes)

    def complete(self) -> None:
        """Submit and drain every staged download: the host arrays hold their bytes."""
        self._seal()
        while self._waiting:
            self._drain_one()
        self._host_writes = []

    def _open_chunk(self) -> None:
        while len(self._waiting) >= self._context.download_staging.limit:
            self._drain_one()
        self._open = self._context.download_staging.acquire()
        self._used = 0
        self._entries = []

    def _seal(self) -> None:
        if self._open is not None:
            self._waiting.append((self._open, self._used, self._entries, self._epoch))
            self._open = None
            self._entries = []

    def _drain_one(self) -> None:
        buffer, used, entries, epoch = self._waiting.popleft()
        staging, queue = self._context.download_staging, self._queue
        try:
            queue.submit_through(epoch)
            queue.wait(request_map(buffer, MAP_READ, 0, used))
            mapped = mapped_array(buffer, 0, used)
            threads, parallel_min = self._context.threads, self._parallel_min
            for position, target in entries:
                size = target.nbytes
                if size < parallel_min:
                    np.copyto(target, mapped[position : position + size])
                else:
                    threads.copy(target, mapped[position : position + size], parallel_min)
            del mapped  # no view of mapped memory may outlive the unmap
            buffer.unmap()
        except BaseException:
            staging.discard(buffer)
            raise
        staging.give_back(buffer)

    def _stream(
        self, buffer: wgpu.GPUBuffer, start: int, end: int, offset: int, dst: Bytes
    ) -> None:
        """Download a range larger than a chunk: copies into several staging chunks
        are in flight while the copy threads drain the ones already mapped."""
        context, queue = self._context, self._queue
        staging, threads, options = context.download_staging, context.threads, context.options
        n = dst.nbytes
        pieces = deque((pos, min(self._chunk, end - pos)) for pos in range(start, end, self._chunk))
        issued: deque[tuple[wgpu.GPUBuffer, int, int]] = deque()
        jobs: deque[tuple[CopyJob, wgpu.GPUBuffer]] = deque()

        def issue() -> None:
            pos, take = pieces.popleft()
            chunk = staging.acquire()
            try:
                queue.copy(buffer, pos, chunk, 0, take)
                queue.submit()
            except BaseException:
                staging.discard(chunk)
                raise
            issued.append((chunk, pos, take))

        def drain() -> None:
            # Mapping only now keeps the queue short while the host copies the
            # previous chunk and the device copies this one.
            chunk, pos, take = issued.popleft()
            try:
                queue.wait(request_map(chunk, MAP_READ, 0, take))
                mapped = mapped_array(chunk, 0, take)
            except BaseException:
                staging.discard(chunk)
                raise
            view_lo, view_hi = max(pos, offset), min(pos + take, offset + n)
            target = dst[view_lo - offset : view_hi - offset]
            source = mapped[view_lo - pos : view_hi - pos]
            del mapped
            jobs.append((threads.start(target, source, options.copy_part), chunk))

        def land() -> None:
            job, chunk = jobs.popleft()
            try:
                job.wait()
                chunk.unmap()
            except BaseException:
                staging.discard(chunk)
                raise
            staging.give_back(chunk)

        try:
            while pieces or issued or jobs:
                while (
                    pieces
                    and len(issued) < options.downloads_ahead
                    and len(issued) + len(jobs) < staging.limit
                ):
                    issue()
                if issued and len(jobs) < threads.count:
                    drain()
                else:
                    land()
        except BaseException:
            for chunk, _, _ in issued:
                staging.discard(chunk)
            for job, chunk in jobs:  # copies out of mapped memory end before it goes
                with contextlib.suppress(BaseException):
                    job.wait()
                staging.discard(chunk)
            raise

    def abandon(self) -> None:
        """Drop every staging chunk this batch holds, after an error."""
        staging = self._context.download_staging
        self._seal()
        for buffer, _, _, _ in self._waiting:
            staging.discard(buffer)
        self._waiting.clear()
        self._host_writes = []
