"""The batch engine: encodes one run of copies on one context into few submits and maps.

A run is executed under the context's lock. Uploads go through pooled
``MAP_WRITE`` staging chunks (small ones through ``queue.write_buffer``),
downloads through pooled ``MAP_READ`` chunks copied straight into the caller's
host array; many small pieces share a chunk, so a batch of small tensors is one
submit and one map. A tensor larger than a chunk is split; each full chunk is
submitted at once, so the GPU copies chunk k while the host fills or drains
chunk k+1. Byte-exact edges use :class:`~tensorferry_webgpu._patch.BytePatcher`.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._storage import MAP_USAGE

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._buffers import StagingPool
    from tensorferry_webgpu._context import Context

__all__ = ["WORKERS", "Run", "workers"]

_PACK = 16  # alignment of pieces inside a staging chunk
WORKERS = max(2, min(8, os.cpu_count() or 1))
"""Host-copy threads: chunks of a large tensor are copied by this many threads at once."""
_pool: ThreadPoolExecutor | None = None
READ_NOSYNC = "READ_NOSYNC"
"""wgpu-py's map mode for reading without the empty submit it otherwise makes
before every read map (a guard against mapping never-submitted data, wgpu-native
issue 305). tensorferry always submits the copy it maps, so that submit is pure
latency: ~30 us of a ~130 us small download on lavapipe."""
_PART = 4 << 20  # the unit of work of the copy threads in streams
_PARALLEL_MIN = 2 << 20  # host copies below this stay on the calling thread
AHEAD = 2
"""Download copies in flight on the GPU beyond those being drained. wgpu-native's
blocking poll waits for the whole queue before it resolves any map, so keeping
the queue short lets chunk k map while chunk k+1 copies."""

Bytes = npt.NDArray[np.uint8]


def _up4(value: int) -> int:
    return (value + 3) & ~3


def _down4(value: int) -> int:
    return value & ~3


def _up_pack(value: int) -> int:
    return (value + _PACK - 1) & ~(_PACK - 1)


def workers() -> ThreadPoolExecutor:
    """The shared pool of host-copy threads (numpy releases the GIL for plain copies)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="tensorferry-copy")
    return _pool


def _copy_parts(dst: Bytes, src: Bytes, step: int = _PART) -> list[Future[None]]:
    """Start ``dst[...] = src`` on the worker threads in parts of ``step`` bytes
    (by default 4 MiB, so that the last chunk of a stream is not one thread's job)."""
    return [
        workers().submit(np.copyto, dst[i : i + step], src[i : i + step])
        for i in range(0, dst.nbytes, step)
    ]


def _parallel_copy(dst: Bytes, src: Bytes) -> None:
    """``dst[...] = src``, split over the worker threads when large (one thread
    copies ~7-11 GB/s into or out of staging on the H100 host, eight ~26)."""
    n = dst.nbytes
    parts = min(WORKERS, n >> 20) if n >= _PARALLEL_MIN else 1
    if parts < 2:
        np.copyto(dst, src)
        return
    for future in _copy_parts(dst, src, (-(-n // parts) + 4095) & ~4095):
        future.result()


def _address(array: Bytes) -> int:
    return int(array.__array_interface__["data"][0])


class Run:
    """Encodes copies for one context; :meth:`finish` submits and completes them.

    Not thread-safe; the caller holds ``context.lock``. After an exception,
    call :meth:`abandon` to drop staging buffers whose state is unknown.
    """

    def __init__(self, context: Context, *, single: bool = False) -> None:
        self._ctx = context
        self.single = single
        self._chunk = context.options.staging_chunk
        self._encoder: wgpu.GPUCommandEncoder | None = None
        self._pending_writes = False
        self._up: wgpu.GPUBuffer | None = None
        self._up_view: Bytes | None = None
        self._up_used = 0
        self._sealed_up: list[wgpu.GPUBuffer] = []
        self._down: wgpu.GPUBuffer | None = None
        self._down_used = 0
        self._down_entries: list[tuple[int, Bytes]] = []
        self._sealed_down: list[tuple[wgpu.GPUBuffer, int, list[tuple[int, Bytes]]]] = []
        self._submitted_down: deque[tuple[wgpu.GPUBuffer, int, list[tuple[int, Bytes]]]] = deque()
        self._host_writes: list[tuple[int, int]] = []
        self._temps: list[wgpu.GPUBuffer] = []
        self._done_temps: list[wgpu.GPUBuffer] = []

    # encoding ---------------------------------------------------------------

    def _enc(self) -> wgpu.GPUCommandEncoder:
        if self._encoder is None:
            self._encoder = self._ctx.gpu.create_command_encoder()
        return self._encoder

    def _inline(self, buffer: wgpu.GPUBuffer, offset: int, data: bytes) -> None:
        self._ctx.patcher.write_inline(self._enc(), buffer, offset, data)

    def upload(self, src: Bytes, buffer: wgpu.GPUBuffer, offset: int) -> None:
        """Copy host bytes ``src`` into ``buffer`` at byte ``offset``."""
        n = src.nbytes
        if n == 0:
            return
        if self._host_writes and self._overlaps_pending_download(src):
            self.finish()  # the source is a download target earlier in this batch
        if self._direct(buffer, n):
            self.submit()  # the map below waits for every earlier command on the buffer
            self._mapped_copy(buffer, offset, n, src, write=True)
            return
        lo, hi = _up4(offset), _down4(offset + n)
        if hi <= lo:
            self._inline(buffer, offset, src.tobytes())
            return
        if lo > offset:
            self._inline(buffer, offset, src[: lo - offset].tobytes())
        if offset + n > hi:
            self._inline(buffer, hi, src[hi - offset :].tobytes())
        body = src[lo - offset : hi - offset]
        if body.nbytes > self._chunk:
            self._stream_upload(body, buffer, lo)
            return
        if self.single and self._encoder is None and body.nbytes <= self._ctx.options.small_upload:
            # A lone upload: write_buffer is the fastest way (in a batch, packing
            # pieces into one staging chunk is). Nothing is encoded yet, so the
            # queue-ordered write keeps the batch order.
            self._ctx.queue.write_buffer(buffer, lo, body)
            self._pending_writes = True
            return
        pos = 0
        while pos < body.nbytes:
            if self._up is None:
                self._new_up_chunk()
            assert self._up is not None
            assert self._up_view is not None
            take = min(body.nbytes - pos, self._chunk - self._up_used)
            _parallel_copy(
                self._up_view[self._up_used : self._up_used + take], body[pos : pos + take]
            )
            self._enc().copy_buffer_to_buffer(self._up, self._up_used, buffer, lo + pos, take)
            self._up_used = _up_pack(self._up_used + take)
            pos += take
            if self._up_used >= self._chunk:
                self._seal_up()
                self.submit()  # let the GPU copy this chunk while the next one fills

    def download(self, buffer: wgpu.GPUBuffer, offset: int, dst: Bytes, address: int) -> None:
        """Copy ``dst.nbytes`` bytes at ``offset`` in ``buffer`` into host bytes ``dst``
        (which start at host ``address``)."""
        n = dst.nbytes
        if n == 0:
            return
        start, end = offset & ~3, (offset + n + 3) & ~3
        used = self._down_used
        if self._down is not None and end - start <= self._chunk - used:
            # The common small case: one copy into the open chunk.
            self._enc().copy_buffer_to_buffer(buffer, start, self._down, used, end - start)
            self._down_entries.append((used + offset - start, dst))
            self._down_used = (used + end - start + _PACK - 1) & ~(_PACK - 1)
            self._host_writes.append((address, address + n))
            return
        if self._direct(buffer, n):
            self.finish()  # earlier downloads land first, so later writes win
            self._mapped_copy(buffer, offset, n, dst, write=False)
            return
        if end - start > self._chunk:
            self._stream_download(buffer, start, end, offset, dst)
            return
        pos = start
        while pos < end:
            if self._down is None:
                self._new_down_chunk()
            assert self._down is not None
            take = min(end - pos, self._chunk - self._down_used)
            self._enc().copy_buffer_to_buffer(buffer, pos, self._down, self._down_used, take)
            view_lo, view_hi = max(pos, offset), min(pos + take, offset + n)
            if view_hi > view_lo:
                part = dst[view_lo - offset : view_hi - offset]
                self._down_entries.append((self._down_used + view_lo - pos, part))
            self._down_used = _up_pack(self._down_used + take)
            pos += take
            if self._down_used >= self._chunk:
                self._seal_down()
                self.submit()
        self._host_writes.append((address, address + n))

    def _direct(self, buffer: wgpu.GPUBuffer, n: int) -> bool:
        """Whether to map the tensor's own buffer (unified memory, large enough)."""
        ctx = self._ctx
        return (
            ctx.mapped_storage
            and n >= ctx.options.direct_min
            and buffer.usage & MAP_USAGE == MAP_USAGE
        )

    def _mapped_copy(
        self, buffer: wgpu.GPUBuffer, offset: int, n: int, host: Bytes, *, write: bool
    ) -> None:
        """Copy between host bytes and a mapped range of the tensor's own buffer.

        Only the view's bytes are touched, so any offset and size is exact.
        The buffer is unmapped before anything else can be submitted.
        """
        import wgpu

        start, end = offset & ~7, (offset + n + 3) & ~3
        mode = wgpu.MapMode.WRITE if write else READ_NOSYNC
        buffer.map_async(mode, start, end - start).sync_wait()
        try:
            if write:
                raw = buffer._experimental_get_mapped_range(start, end - start)
            else:
                raw = buffer.read_mapped(start, end - start, copy=False)
            mapped = np.frombuffer(raw, np.uint8)[offset - start : offset - start + n]
            if write:
                _parallel_copy(mapped, host)
            else:
                _parallel_copy(host, mapped)
            del mapped, raw  # no view of mapped memory may outlive the unmap
        finally:
            buffer.unmap()

    def _stream_upload(self, body: Bytes, buffer: wgpu.GPUBuffer, lo: int) -> None:
        """Upload a body larger than a chunk: worker threads fill several staging
        chunks at once; each filled chunk is copied by its own submit."""
        self.submit()  # commands encoded earlier in the batch go first
        staging, ctx = self._ctx.upload_staging, self._ctx
        depth = max(1, min(WORKERS, staging.limit - 1))
        jobs: deque[tuple[list[Future[None]], wgpu.GPUBuffer, int, int]] = deque()

        def land() -> None:
            futures, chunk, pos, take = jobs.popleft()
            try:
                for future in futures:
                    future.result()
                chunk.unmap()
                encoder = ctx.gpu.create_command_encoder()
                encoder.copy_buffer_to_buffer(chunk, 0, buffer, lo + pos, take)
                ctx.queue.submit([encoder.finish()])
            except BaseException:
                staging.discard(chunk)
                raise
            staging.give_back(chunk)

        try:
            for pos in range(0, body.nbytes, self._chunk):
                while len(jobs) >= depth:
                    land()
                take = min(self._chunk, body.nbytes - pos)
                chunk = staging.acquire()
                view = np.frombuffer(chunk._experimental_get_mapped_range(0, take), np.uint8)
                futures = _copy_parts(view, body[pos : pos + take])
                del view
                jobs.append((futures, chunk, pos, take))
            while jobs:
                land()
        except BaseException:
            self._abandon_jobs(staging, [(f, c) for f, c, _, _ in jobs])
            raise

    def _stream_download(
        self, buffer: wgpu.GPUBuffer, start: int, end: int, offset: int, dst: Bytes
    ) -> None:
        """Download a range larger than a chunk: copies into several staging chunks
        are in flight while worker threads drain the ones already mapped."""
        self.finish()  # earlier pieces of the batch land first, so later writes win
        staging, ctx = self._ctx.download_staging, self._ctx
        n = dst.nbytes
        pieces = deque((pos, min(self._chunk, end - pos)) for pos in range(start, end, self._chunk))
        issued: deque[tuple[wgpu.GPUBuffer, int, int]] = deque()
        jobs: deque[tuple[list[Future[None]], wgpu.GPUBuffer]] = deque()
        limit = staging.limit

        def issue() -> None:
            pos, take = pieces.popleft()
            chunk = staging.acquire()
            try:
                encoder = ctx.gpu.create_command_encoder()
                encoder.copy_buffer_to_buffer(buffer, pos, chunk, 0, take)
                ctx.queue.submit([encoder.finish()])
            except BaseException:
                staging.discard(chunk)
                raise
            issued.append((chunk, pos, take))

        def drain() -> None:
            # Mapping only now keeps wgpu's poll thread idle while the host copies
            # the previous chunk and the device copies this one.
            chunk, pos, take = issued.popleft()
            try:
                chunk.map_async(READ_NOSYNC, 0, take).sync_wait()
                mapped = np.frombuffer(chunk.read_mapped(0, take, copy=False), np.uint8)
            except BaseException:
                staging.discard(chunk)
                raise
            view_lo, view_hi = max(pos, offset), min(pos + take, offset + n)
            target = dst[view_lo - offset : view_hi - offset]
            source = mapped[view_lo - pos : view_hi - pos]
            del mapped
            jobs.append((_copy_parts(target, source), chunk))

        def land() -> None:
            futures, chunk = jobs.popleft()
            try:
                for future in futures:
                    future.result()
                chunk.unmap()
            except BaseException:
                staging.discard(chunk)
                raise
            staging.give_back(chunk)

        try:
            while pieces or issued or jobs:
                while pieces and len(issued) < AHEAD and len(issued) + len(jobs) < limit:
                    issue()
                if issued and len(jobs) < WORKERS:
                    drain()
                else:
                    land()
        except BaseException:
            for chunk, _, _ in issued:
                staging.discard(chunk)
            self._abandon_jobs(staging, list(jobs))
            raise

    @staticmethod
    def _abandon_jobs(
        staging: StagingPool, jobs: list[tuple[list[Future[None]], wgpu.GPUBuffer]]
    ) -> None:
        # Let every copy that still writes or reads mapped memory end before the
        # buffers behind it are destroyed.
        for futures, chunk in jobs:
            for future in futures:
                with contextlib.suppress(BaseException):
                    future.result()
            staging.discard(chunk)

    def downloads(self, ops: Sequence[tuple[Any, int, Bytes, int, Bytes, int]], index: int) -> int:
        """Encode the consecutive small downloads ``ops[index:]`` (tuples of storage
        with a ``buffer``, offset, host bytes, host address, and the host storage's
        flat array with the bytes' start in it) that fit the open staging chunk, in
        one tight loop; return the index of the first op not encoded. Large or
        chunk-crossing ones go through :meth:`download`."""
        storage, offset, host, address, _, _ = ops[index]
        self.download(storage.buffer, offset, host, address)  # opens a chunk if needed
        index += 1
        down, count, room = self._down, len(ops), self._chunk
        if down is None:
            return index
        copy = self._enc().copy_buffer_to_buffer
        entries, writes, used = self._down_entries, self._host_writes, self._down_used
        kind = type(ops[index - 1])
        # Host copies of neighbouring rows of one host storage, staged back to back,
        # merge into one copy: (storage's flat array, first byte, staging end, host end).
        merge: tuple[Bytes, int, int, int] | None = None
        while index < count and type(ops[index]) is kind:
            storage, offset, host, address, flat, first = ops[index]
            size = host.nbytes
            start, end = offset & ~3, (offset + size + 3) & ~3
            if end - start > room - used:
                break
            copy(storage.buffer, start, down, used, end - start)
            position = used + offset - start
            if (
                merge is not None
                and merge[0] is flat
                and merge[2] == position
                and merge[3] == first
            ):
                origin = merge[1]
                entries[-1] = (entries[-1][0], flat[origin : first + size])
                writes[-1] = (writes[-1][0], address + size)
            else:
                entries.append((position, host))
                writes.append((address, address + size))
                origin = first
            merge = (flat, origin, position + size, first + size)
            used = (used + end - start + _PACK - 1) & ~(_PACK - 1)
            index += 1
        self._down_used = used
        return index

    def device_copy(
        self, src: wgpu.GPUBuffer, src_offset: int, dst: wgpu.GPUBuffer, dst_offset: int, n: int
    ) -> None:
        """Copy ``n`` bytes between two places in device memory (overlap allowed)."""
        if src is not dst and not (src_offset | dst_offset | n) & 3:
            if n:
                self._enc().copy_buffer_to_buffer(src, src_offset, dst, dst_offset, n)
            return
        if n == 0:
            return
        if src is dst:
            # WebGPU refuses a buffer as both source and destination: snapshot first.
            start, end = _down4(src_offset), _up4(src_offset + n)
            temp = self._ctx.pool.acquire(end - start)
            self._temps.append(temp)
            self._enc().copy_buffer_to_buffer(src, start, temp, 0, end - start)
            src, src_offset = temp, src_offset - start
        lo, hi = _up4(dst_offset), _down4(dst_offset + n)
        patcher = self._ctx.patcher
        if (src_offset - dst_offset) % 4 == 0 and hi > lo:
            shift = src_offset - dst_offset
            self._enc().copy_buffer_to_buffer(src, lo + shift, dst, lo, hi - lo)
            if lo > dst_offset:
                patcher.copy(self._enc(), dst, dst_offset, src, src_offset, lo - dst_offset)
            if dst_offset + n > hi:
                patcher.copy(self._enc(), dst, hi, src, hi + shift, dst_offset + n - hi)
            return
        patcher.copy(self._enc(), dst, dst_offset, src, src_offset, n)

    def fill(self, buffer: wgpu.GPUBuffer, offset: int, n: int, pattern: bytes) -> None:
        """Repeat ``pattern`` over ``n`` bytes at ``offset`` (``n`` a multiple of its length)."""
        if n == 0:
            return
        lo, hi = _up4(offset), _down4(offset + n)
        if any(pattern) or hi <= lo:
            self._ctx.patcher.write_inline(self._enc(), buffer, offset, pattern, count=n)
            return
        self._enc().clear_buffer(buffer, lo, hi - lo)
        if lo > offset:
            self._inline(buffer, offset, bytes(lo - offset))
        if offset + n > hi:
            self._inline(buffer, hi, bytes(offset + n - hi))

    # staging ----------------------------------------------------------------

    def _new_up_chunk(self) -> None:
        buffer = self._ctx.upload_staging.acquire()
        self._up = buffer
        mapped = buffer._experimental_get_mapped_range(0, self._chunk)
        self._up_view = np.frombuffer(mapped, np.uint8)
        self._up_used = 0

    def _seal_up(self) -> None:
        if self._up is None:
            return
        self._up_view = None  # drop the view of mapped memory before unmapping
        self._up.unmap()
        self._sealed_up.append(self._up)
        self._up = None

    def _new_down_chunk(self) -> None:
        limit = self._ctx.download_staging.limit
        while len(self._sealed_down) + len(self._submitted_down) >= limit:
            if self._sealed_down:
                self.submit()
            self._drain_one()
        self._down = self._ctx.download_staging.acquire()
        self._down_used = 0
        self._down_entries = []

    def _seal_down(self) -> None:
        if self._down is None:
            return
        self._sealed_down.append((self._down, self._down_used, self._down_entries))
        self._down = None
        self._down_entries = []

    def _drain_one(self) -> None:
        buffer, used, entries = self._submitted_down.popleft()
        try:
            buffer.map_async(READ_NOSYNC, 0, used).sync_wait()
            mapped = np.frombuffer(buffer.read_mapped(0, used, copy=False), np.uint8)
            for position, target in entries:
                size = target.nbytes
                if size < _PARALLEL_MIN:
                    np.copyto(target, mapped[position : position + size])
                else:
                    _parallel_copy(target, mapped[position : position + size])
            del mapped  # no view of mapped memory may outlive the unmap
            buffer.unmap()
        except BaseException:
            self._ctx.download_staging.discard(buffer)
            raise
        self._ctx.download_staging.give_back(buffer)

    def _overlaps_pending_download(self, src: Bytes) -> bool:
        lo = _address(src)
        hi = lo + src.nbytes
        return any(start < hi and lo < end for start, end in self._host_writes)

    # completion -------------------------------------------------------------

    def submit(self) -> None:
        """Submit what is encoded so far, without waiting for it."""
        self._seal_up()
        self._ctx.patcher.flush()
        queue = self._ctx.queue
        if self._encoder is not None:
            queue.submit([self._encoder.finish()])
            self._encoder = None
        elif self._pending_writes:
            queue.submit([])
        self._pending_writes = False
        for buffer in self._sealed_up:
            self._ctx.upload_staging.give_back(buffer)
        self._sealed_up = []
        self._submitted_down.extend(self._sealed_down)
        self._sealed_down = []
        self._done_temps.extend(self._temps)
        self._temps = []

    def finish(self) -> None:
        """Submit everything and complete the downloads (the only step that waits)."""
        self._seal_down()
        self.submit()
        while self._submitted_down:
            self._drain_one()
        self._host_writes = []
        for temp in self._done_temps:
            self._ctx.pool.release(temp)
        self._done_temps = []
        self._ctx.pool.end_batch()

    def abandon(self) -> None:
        """Drop every staging buffer this run holds, after an error."""
        self._up_view = None
        staging = [self._up, *self._sealed_up]
        downloads = [self._down, *(b for b, _, _ in self._sealed_down)]
        downloads += [b for b, _, _ in self._submitted_down]
        for buffer in staging:
            if buffer is not None:
                self._ctx.upload_staging.discard(buffer)
        for buffer in downloads:
            if buffer is not None:
                self._ctx.download_staging.discard(buffer)
        self._up = self._down = self._encoder = None
        self._sealed_up, self._sealed_down = [], []
        self._submitted_down.clear()
        self._ctx.patcher.discard()
        for temp in self._temps + self._done_temps:
            self._ctx.pool.release(temp)
        self._temps, self._done_temps = [], []
