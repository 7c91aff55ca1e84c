"""Slabs: small device tensors share buffers, back to back, so their copies coalesce.

A tensor of up to ``slab_max`` bytes gets a *slot* in a slab buffer instead
of a buffer of its own. Slots of one slab all have one *stride*: the request
rounded up to a multiple of :data:`SLOT_ALIGN` (16) bytes, so tensors of one
size sit exactly their size apart (1 KiB tensors 1 KiB apart). A request takes
the lowest free slot of its stride (the oldest slab first, then the lowest
offset in it), so tensors allocated one after another are neighbours in
ascending order, and a run freed and allocated again is a contiguous run
again. The batch's queue then merges the copies of neighbours into one
``copy_buffer_to_buffer``: 1000 x 1 KiB tensors cost a handful of commands.

A stride's first slab holds ``max(64 KiB, 4 strides)``; each further slab
as much as the stride's slabs hold already (the footprint doubles), up to
:data:`SLAB_BYTES` (4 MiB, a constant). Waste stays below one slab per stride
in use, plus the free slots of partly used slabs. A slab whose slots are all
free goes back to a buffer pool of its own (bucket sizes, at most
:data:`CACHED_SLAB_BYTES` idle), which destroys what it does not keep.

Slab buffers have the usage of device memory without map usage
(``STORAGE | COPY_SRC | COPY_DST``): neither callers nor tensorferry's direct
mapping can map one while other tensors live in it.

Thread-safe: slots are freed by garbage-collector finalizers on any thread,
even while the same thread holds the lock (a collection inside
:meth:`SlabAllocator.acquire`). A release is queued and applied by whichever
thread holds the lock next; nobody waits for it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING

import attrs

from tensorferry import ClosedError
from tensorferry_webgpu._buffers import BufferPool, CacheMode

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "CACHED_SLAB_BYTES",
    "FIRST_SLAB",
    "SLAB_BYTES",
    "SLOT_ALIGN",
    "Slab",
    "SlabAllocator",
    "SlabStats",
    "slot_stride",
]

SLOT_ALIGN = 16
"""Slot strides are multiples of this many bytes (the copy kernel's word, and a
multiple of WebGPU's 4-byte copy and 8-byte map alignment)."""

SLAB_BYTES = 4 << 20
"""The most bytes one slab buffer holds."""

FIRST_SLAB = 64 << 10
"""The least bytes a stride's first slab holds."""

CACHED_SLAB_BYTES = 16 << 20
"""The most bytes of idle slab buffers kept for reuse (the options' cache caps also apply)."""


def slot_stride(nbytes: int) -> int:
    """The slot stride of a request: ``nbytes`` rounded up to :data:`SLOT_ALIGN`, at least that."""
    return max(SLOT_ALIGN, (nbytes + SLOT_ALIGN - 1) & ~(SLOT_ALIGN - 1))


class Slab:
    """One slab buffer cut into ``capacity`` slots of ``stride`` bytes.

    ``seq`` orders the slabs by age (the oldest is used first); ``fresh`` is the
    first slot never handed out, ``free`` a heap of slots handed out and given
    back (all below ``fresh``); ``used`` counts the slots held now.
    """

    __slots__ = ("buffer", "capacity", "free", "fresh", "retired", "seq", "stride", "used")

    def __init__(self, buffer: wgpu.GPUBuffer, stride: int, seq: int) -> None:
        self.buffer = buffer
        self.stride = stride
        self.capacity = buffer.size // stride
        self.seq = seq
        self.fresh = 0
        self.free: list[int] = []
        self.used = 0
        self.retired = False


class _Stride:
    """The slabs of one stride: a heap of those with a free slot, and their bytes."""

    __slots__ = ("bytes", "open", "slabs")

    def __init__(self) -> None:
        self.open: list[tuple[int, Slab]] = []  # (seq, slab); retired slabs are skipped
        self.bytes = 0
        self.slabs = 0


@attrs.frozen
class SlabStats:
    """Counters of one slab allocator: slabs in use, their bytes, the slots held,
    and the idle slab buffers its pool keeps."""

    slabs: int
    slab_bytes: int
    slots: int
    cached_bytes: int


class SlabAllocator:
    """Slots for small tensors in slab buffers of one wgpu device.

    ``usage`` is the slab buffers' usage (device memory without map usage);
    ``cache_mode`` ``DISABLED`` destroys a slab as soon as it empties, any
    other mode keeps up to ``max_cached_bytes`` (``None``: no bound of its own)
    and :data:`CACHED_SLAB_BYTES` of idle slabs for reuse.
    """

    def __init__(
        self,
        device: wgpu.GPUDevice,
        usage: int,
        *,
        cache_mode: CacheMode = CacheMode.BUCKET,
        max_cached_bytes: int | None = CACHED_SLAB_BYTES,
        max_cached_buffers: int = 4096,
    ) -> None:
        disabled = cache_mode is CacheMode.DISABLED
        cached = CACHED_SLAB_BYTES if max_cached_bytes is None else max_cached_bytes
        self._pool = BufferPool(
            device,
            usage,
            mode=CacheMode.DISABLED if disabled else CacheMode.BUCKET,
            max_cached_bytes=min(cached, CACHED_SLAB_BYTES),
            max_cached_buffers=max_cached_buffers,
        )
        self._strides: dict[int, _Stride] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._returns: deque[tuple[Slab, int]] = deque()
        self._slots = 0
        self._closed = False

    def acquire(self, nbytes: int) -> tuple[Slab, int]:
        """The lowest free slot for ``nbytes`` (``0 < nbytes``): its slab and its byte
        offset in the slab's buffer. A new slab is made when every slot of the
        stride is held. Raises :class:`~tensorferry.ClosedError` after :meth:`close`,
        and the wgpu error when a slab's buffer cannot be made."""
        stride = slot_stride(nbytes)
        with self._lock:
            if self._closed:
                raise ClosedError("the slabs of this WebGPU context are closed")
            self._apply_returns()
            group = self._strides.get(stride)
            if group is None:
                group = self._strides[stride] = _Stride()
            slab = self._open_slab(group)
            if slab is None:
                size = min(SLAB_BYTES, max(FIRST_SLAB, 4 * stride, group.bytes))
                slab = Slab(self._pool.acquire(size // stride * stride), stride, next(self._seq))
                group.bytes += slab.buffer.size
                group.slabs += 1
                heapq.heappush(group.open, (slab.seq, slab))
            if slab.free:
                slot = heapq.heappop(slab.free)
            else:
                slot = slab.fresh
                slab.fresh += 1
            slab.used += 1
            self._slots += 1
            if slab.used == slab.capacity:
                heapq.heappop(group.open)
        self._settle()
        return slab, slot * stride

    def release(self, slab: Slab, offset: int) -> None:
        """Give back the slot at byte ``offset`` of ``slab`` (from any thread, at any
        time, even after :meth:`close`). A slab left with no slot held goes back
        to the pool, which keeps or destroys its buffer."""
        self._returns.append((slab, offset))
        self._settle()

    def stats(self) -> SlabStats:
        """A snapshot of the counters (releases queued so far included)."""
        with self._lock:
            self._apply_returns()
            stats = SlabStats(
                slabs=sum(g.slabs for g in self._strides.values()),
                slab_bytes=sum(g.bytes for g in self._strides.values()),
                slots=self._slots,
                cached_bytes=self._pool.stats().cached_bytes,
            )
        self._settle()
        return stats

    def trim(self) -> int:
        """Destroy the idle slab buffers kept for reuse; return the bytes they held."""
        return self._pool.trim()

    def close(self) -> None:
        """Destroy idle slab buffers; slabs still in use are destroyed when they empty,
        and :meth:`acquire` raises :class:`~tensorferry.ClosedError` from now on."""
        with self._lock:
            self._closed = True
        self._pool.close()
        self._settle()

    @staticmethod
    def _open_slab(group: _Stride) -> Slab | None:
        heap = group.open
        while heap:
            slab = heap[0][1]
            if not slab.retired:
                return slab
            heapq.heappop(heap)
        return None

    def _settle(self) -> None:
        # Whoever finds releases queued and the lock free applies them. A thread
        # that found the lock taken leaves them to its holder, which looks again
        # after letting go of it, so none is left behind.
        while self._returns and self._lock.acquire(blocking=False):
            try:
                self._apply_returns()
            finally:
                self._lock.release()

    def _apply_returns(self) -> None:
        """Apply the queued releases (the caller holds the lock); slabs that empty
        go back to the pool at once, so that a new slab can reuse their buffer."""
        returns = self._returns
        while returns:
            slab, offset = returns.popleft()
            group = self._strides[slab.stride]
            if slab.used == slab.capacity:
                heapq.heappush(group.open, (slab.seq, slab))
            heapq.heappush(slab.free, offset // slab.stride)
            slab.used -= 1
            self._slots -= 1
            if slab.used == 0:
                slab.retired = True
                group.bytes -= slab.buffer.size
                group.slabs -= 1
                self._pool.release(slab.buffer)
