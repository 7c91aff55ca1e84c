"""Device buffer pools (ONNX Runtime's cache modes) and pooled staging buffers."""

from __future__ import annotations

import contextlib
import enum
import threading
from collections import defaultdict, deque
from typing import TYPE_CHECKING

import attrs

from tensorferry_webgpu._guards import destroy, guard
from tensorferry_webgpu._native import MAP_WRITE
from tensorferry_webgpu._waits import MapRequest, request_map

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "BufferPool",
    "CacheMode",
    "PoolStats",
    "StagingPool",
    "StagingStats",
    "bucket_size",
    "default_cached_bytes",
]

UNIFIED_CACHED_BYTES = 256 << 20
"""Idle buffers a unified-memory adapter's pool keeps by default (their memory is
the host's)."""


def default_cached_bytes(adapter_type: str) -> int | None:
    """The default bound on a pool's idle bytes for an adapter of this type: none on
    a discrete GPU, :data:`UNIFIED_CACHED_BYTES` elsewhere.

    A discrete GPU's buffers live in its own memory, as torch's caching allocator
    assumes: keeping them all lets a second model load reuse the first one's
    buffers. On the H200 the bench's 300-tensor load took 108 ms with its buffers
    made anew and 65 ms into existing ones; making its 300 buffers took 43 ms
    (``benchmarks/probes/model_load_parts.py``). A pool that cannot make a buffer
    destroys its idle ones and tries once more (:meth:`BufferPool.acquire`).
    """
    return None if adapter_type == "DiscreteGPU" else UNIFIED_CACHED_BYTES


class CacheMode(enum.Enum):
    """How released device buffers are kept for reuse (as ONNX Runtime's WebGPU EP).

    * ``DISABLED``: destroyed at once.
    * ``LAZY_RELEASE``: kept, unused, until the next batch ends, then destroyed.
    * ``SIMPLE``: reused for requests of exactly the same (4-byte rounded) size.
    * ``BUCKET``: sizes rounded up to size classes (at most 25% slack), reused
      per class. The default.
    """

    DISABLED = "disabled"
    LAZY_RELEASE = "lazy_release"
    SIMPLE = "simple"
    BUCKET = "bucket"


@attrs.frozen
class PoolStats:
    """Counters of one buffer pool: what is cached, and how requests fared."""

    cached_bytes: int
    cached_buffers: int
    hits: int
    misses: int
    live_bytes: int


def _round4(nbytes: int) -> int:
    return max(4, (nbytes + 3) & ~3)


def bucket_size(nbytes: int) -> int:
    """The size class for ``nbytes``: 4-byte rounded up to 256 bytes, then the next
    of ``2**k * (1, 1.25, 1.5, 1.75)``."""
    size = _round4(nbytes)
    if size <= 256:
        return size
    top = 1 << (size - 1).bit_length()  # next power of two >= size
    quarter = top // 8  # steps of 2**(k-1) / 4 between top/2 and top
    return -(-size // quarter) * quarter


@attrs.frozen
class StagingStats:
    """Counters of one staging pool: chunk size, the most buffers it may hold,
    how many exist now, and how many of those are idle."""

    chunk: int
    limit: int
    buffers: int
    idle: int


class BufferPool:
    """Device buffers of one usage, recycled by :class:`CacheMode`; at most
    ``max_cached_bytes`` (``None``: no bound) and ``max_cached_buffers`` idle
    buffers are kept.

    Thread-safe: buffers are released from garbage-collector finalizers on any
    thread. Every buffer it makes refuses a caller's ``destroy()``
    (:func:`~tensorferry_webgpu._native.guard`): such buffers reach callers
    through ``buffer_of``, and work on a destroyed buffer aborts the process.
    """

    def __init__(
        self,
        device: wgpu.GPUDevice,
        usage: int,
        *,
        mode: CacheMode = CacheMode.BUCKET,
        max_cached_bytes: int | None = UNIFIED_CACHED_BYTES,
        max_cached_buffers: int = 4096,
        max_buffer_size: int = 1 << 62,
    ) -> None:
        self._device = device
        self._max_buffer_size = max_buffer_size
        self._usage = usage
        self.mode = mode
        self.max_cached_bytes = (1 << 62) if max_cached_bytes is None else max_cached_bytes
        self.max_cached_buffers = max_cached_buffers
        self._cached_buffers = 0
        self._lock = threading.Lock()
        self._free: dict[int, list[wgpu.GPUBuffer]] = defaultdict(list)
        self._pending: list[wgpu.GPUBuffer] = []
        self._cached_bytes = 0
        self._live_bytes = 0
        self._hits = 0
        self._misses = 0
        self._closed = False

    @property
    def largest(self) -> int:
        """The most bytes one buffer can hold: the device's limit rounded down to
        whole 4-byte words (copies move whole words, so a ragged tail is unusable)."""
        return self._max_buffer_size & ~3

    def capacity_for(self, nbytes: int) -> int:
        """The buffer size a request for ``nbytes`` gets: its size class (BUCKET) or
        ``nbytes`` rounded up to 4, never past :attr:`largest` while ``nbytes`` fits."""
        size = bucket_size(nbytes) if self.mode is CacheMode.BUCKET else _round4(nbytes)
        return min(size, max(self.largest, _round4(nbytes)))

    def acquire(self, nbytes: int) -> wgpu.GPUBuffer:
        """A buffer of at least ``nbytes`` (cached when possible, else new).

        When wgpu cannot make a new one and idle buffers are cached, they are
        destroyed (:meth:`trim`) and the buffer is made once more; the second
        failure's wgpu error is raised.
        """
        size = self.capacity_for(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._hits += 1
                self._cached_bytes -= size
                self._cached_buffers -= 1
                self._live_bytes += size
                return free.pop()
            self._misses += 1
            idle = bool(self._cached_bytes or self._pending)
        try:
            buffer = self._device.create_buffer(size=size, usage=self._usage)
        except Exception:
            if not idle:
                raise
            self.trim()  # the memory idle buffers hold may be what is missing
            buffer = self._device.create_buffer(size=size, usage=self._usage)
        guard(buffer)
        with self._lock:
            self._live_bytes += size
        return buffer

    def release(self, buffer: wgpu.GPUBuffer) -> None:
        """Give a buffer from :meth:`acquire` back; it is cached or destroyed by the mode."""
        size = buffer.size
        with self._lock:
            self._live_bytes -= size
            if self._closed or self.mode is CacheMode.DISABLED:
                keep = False
            elif self.mode is CacheMode.LAZY_RELEASE:
                self._pending.append(buffer)
                return
            else:
                keep = (
                    self._cached_bytes + size <= self.max_cached_bytes
                    and self._cached_buffers < self.max_cached_buffers
                )
                if keep:
                    self._free[size].append(buffer)
                    self._cached_bytes += size
                    self._cached_buffers += 1
        if not keep:
            destroy(buffer)

    def end_batch(self) -> None:
        """Destroy the buffers that ``LAZY_RELEASE`` held back during the batch."""
        if not self._pending:  # the usual case, seen without the lock: nothing held back
            return
        with self._lock:
            pending, self._pending = self._pending, []
        for buffer in pending:
            destroy(buffer)

    def trim(self) -> int:
        """Destroy every cached buffer; return the bytes they held."""
        with self._lock:
            free = [b for buffers in self._free.values() for b in buffers]
            freed = self._cached_bytes
            self._free.clear()
            self._cached_bytes = 0
            self._cached_buffers = 0
        for buffer in free:
            destroy(buffer)
        self.end_batch()
        return freed

    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        with self._lock:
            return PoolStats(
                cached_bytes=self._cached_bytes,
                cached_buffers=self._cached_buffers,
                hits=self._hits,
                misses=self._misses,
                live_bytes=self._live_bytes,
            )

    def close(self) -> None:
        """Destroy cached buffers; buffers released later are destroyed at once."""
        with self._lock:
            self._closed = True
        self.trim()


class StagingPool:
    """Host-visible staging buffers of one fixed ``chunk`` size and one map mode.

    Upload staging is ``MAP_WRITE | COPY_SRC``, download staging ``MAP_READ | COPY_DST``.
    A buffer handed out is owned by one caller until given back; at most
    ``limit`` exist, so staging memory stays bounded whatever the tensor size.
    Upload buffers given back are re-mapped in the background and waited for
    (polls, non-blocking for ``spin`` seconds, then blocking for at most
    ``lost_after`` seconds of stalling) only when
    handed out again; download buffers come back unmapped and are mapped by
    the download stager when it drains them.
    """

    def __init__(
        self,
        device: wgpu.GPUDevice,
        *,
        write: bool,
        chunk: int,
        limit: int,
        lost_after: float = 10.0,
        spin: float = 0.0,
    ) -> None:
        import wgpu

        self._device = device
        self._write = write
        self.chunk = chunk
        self.limit = limit
        self._lost_after = lost_after
        self._spin = spin
        mode_usage = wgpu.BufferUsage.MAP_WRITE if write else wgpu.BufferUsage.MAP_READ
        copy_usage = wgpu.BufferUsage.COPY_SRC if write else wgpu.BufferUsage.COPY_DST
        self._usage = mode_usage | copy_usage
        self._idle: deque[tuple[wgpu.GPUBuffer, MapRequest | None]] = deque()
        self._count = 0
        self._lock = threading.Condition()
        self._closed = False

    def stats(self) -> StagingStats:
        """How many staging buffers exist and how many are idle."""
        with self._lock:
            return StagingStats(self.chunk, self.limit, self._count, len(self._idle))

    def acquire(self) -> wgpu.GPUBuffer:
        """A staging buffer, mapped for writing (upload pools) or unmapped (download pools).

        Blocks while ``limit`` buffers are handed out. Raises
        :class:`~tensorferry.DeviceLostError` when the device is lost, a wgpu
        error when a buffer cannot be made.
        """
        with self._lock:
            while not self._idle and self._count >= self.limit:
                self._lock.wait()
            if self._idle:
                buffer, request = self._idle.popleft()
            else:
                self._count += 1
                buffer, request = None, None
        if buffer is None:
            try:
                return self._device.create_buffer(
                    size=self.chunk, usage=self._usage, mapped_at_creation=self._write
                )
            except BaseException:
                self._forget()
                raise
        if request is not None:
            try:
                request.wait(self._device, lost_after=self._lost_after, spin=self._spin)
            except BaseException:
                self.discard(buffer)
                raise
        return buffer

    def give_back(self, buffer: wgpu.GPUBuffer) -> None:
        """Return a buffer whose GPU work has been submitted (upload) or that is unmapped."""
        request = None
        if self._write and not self._closed:
            try:
                request = request_map(buffer, MAP_WRITE, 0, self.chunk)
            except Exception:
                self.discard(buffer)  # a failed map leaves the buffer unusable
                return
        with self._lock:
            if self._closed:
                self._count -= 1
                destroy(buffer)
            else:
                self._idle.append((buffer, request))
            self._lock.notify()

    def discard(self, buffer: wgpu.GPUBuffer) -> None:
        """Drop a buffer whose state is unknown (after an error); never reuse it."""
        destroy(buffer)
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._count -= 1
            self._lock.notify()

    def close(self) -> None:
        """Destroy idle buffers; buffers given back later are destroyed."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._count -= len(idle)
        for buffer, request in idle:
            if request is not None:
                # A failed map changes nothing: the buffer is destroyed either way.
                with contextlib.suppress(Exception):
                    request.wait(self._device, lost_after=self._lost_after, spin=self._spin)
            destroy(buffer)
