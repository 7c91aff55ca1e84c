"""Where a device copy gets encoded: bytes from one place in device memory to another.

Whole 4-byte words go through ``copy_buffer_to_buffer`` or, for large copies
on GPUs, the 16-byte-word copy kernel (:mod:`._copy_kernel`); ragged edges and
misaligned ranges through the patch kernel, byte-exact. WebGPU refuses one
buffer as both source and destination, so a copy within one buffer first
snapshots the source range into a scratch buffer. Small tensors share slab
buffers, so copies between neighbours in one slab are common: a run of them
gathers every source into one scratch buffer, then scatters it, and the
queue merges neighbouring pieces on both sides (:meth:`DeviceCopier.bounce_run`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from tensorferry_webgpu._align import down4, up4
from tensorferry_webgpu._copy_kernel import WORD
from tensorferry_webgpu._guards import is_host_accessible
from tensorferry_webgpu._ops import DeviceCopy

if TYPE_CHECKING:
    from collections.abc import Sequence

    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._ops import Op
    from tensorferry_webgpu._queue import Queue

__all__ = ["DeviceCopier"]


class DeviceCopier:
    """Encodes device-to-device copies into the batch's queue."""

    def __init__(self, context: Context, queue: Queue) -> None:
        self._context = context
        self._queue = queue

    def pack_run(self, ops: Sequence[Op], index: int) -> int:
        """Record the consecutive device copies ``ops[index:]`` of whole 4-byte words
        between two distinct buffers that the copy command takes (not the kernel),
        in one tight loop; return the index of the first op not recorded."""
        context, count = self._context, len(ops)
        kernel_min = context.options.kernel_copy_min if context.kernel_copies else None
        copies = self._queue.recorded()  # appended to as Queue.copy would, without a call
        last = copies[-1] if copies else None
        while index < count:
            op = ops[index]
            if type(op) is not DeviceCopy:
                break
            source, src_offset, target, dst_offset, n = op
            src, dst = source.buffer, target.buffer
            if (
                src is dst
                or (src_offset | dst_offset | n) & 3
                or (kernel_min is not None and n >= kernel_min)
            ):
                break
            if (
                last is not None
                and last[2] is dst
                and last[0] is src
                and last[1] + last[4] == src_offset
                and last[3] + last[4] == dst_offset
            ):
                last[4] += n
            else:
                last = [src, src_offset, dst, dst_offset, n]
                copies.append(last)
            index += 1
        return index

    def bounce_run(self, ops: Sequence[Op], index: int) -> int:
        """Record the consecutive device copies ``ops[index:]`` of whole 4-byte words
        within one buffer through one scratch buffer: every source range into it
        (the span of all sources in one copy when it is at most twice their
        bytes), then every destination out of it (neighbouring pieces merge into
        one command); return the index of the first op not recorded.

        The result is that of copying one after another: the run ends before a
        copy whose source an earlier copy of the run writes, and at
        ``staging_chunk`` bytes of scratch (a first copy of any size is taken).
        """
        count, limit = len(ops), self._context.options.staging_chunk
        run: list[tuple[int, int, int]] = []
        buffer: wgpu.GPUBuffer | None = None
        # The destinations written so far: their bounds, and (built only once a
        # source falls inside the bounds) the exact ranges of the first `merged`.
        low, high, written, merged = 1 << 62, -1, _Spans(), 0
        total = 0
        while index < count:
            op = ops[index]
            if type(op) is not DeviceCopy:
                break
            source, src_offset, target, dst_offset, n = op
            src = source.buffer
            if (
                src is not target.buffer
                or (src_offset | dst_offset | n) & 3
                or (run and (src is not buffer or total + n > limit))
            ):
                break
            if src_offset < high and src_offset + n > low:
                for _, start, size in run[merged:]:
                    written.add(start, start + size)
                merged = len(run)
                if written.hits(src_offset, src_offset + n):
                    break
            if dst_offset < low:
                low = dst_offset
            if dst_offset + n > high:
                high = dst_offset + n
            buffer = src
            run.append((src_offset, dst_offset, n))
            total += n
            index += 1
        if buffer is None or not total:
            return index
        queue, copy = self._queue, self._queue.copy
        lo = min(src_offset for src_offset, _, _ in run)
        hi = max(src_offset + n for src_offset, _, n in run)
        if hi - lo <= 2 * total:
            # Sources close together (interleaved with the destinations, say): one
            # copy of their whole span; each piece is then at its offset in it.
            scratch = queue.scratch(hi - lo)
            copy(buffer, lo, scratch, 0, hi - lo)
            for src_offset, dst_offset, n in run:
                copy(scratch, src_offset - lo, buffer, dst_offset, n)
            return index
        scratch, pos = queue.scratch(total), 0
        for src_offset, _, n in run:
            copy(buffer, src_offset, scratch, pos, n)
            pos += n
        pos = 0
        for _, dst_offset, n in run:
            copy(scratch, pos, buffer, dst_offset, n)
            pos += n
        return index

    def copy(
        self, src: wgpu.GPUBuffer, src_offset: int, dst: wgpu.GPUBuffer, dst_offset: int, n: int
    ) -> None:
        """Copy ``n`` bytes between two places in device memory (overlap allowed)."""
        queue = self._queue
        if src is not dst and not (src_offset | dst_offset | n) & 3:
            if n:
                self._words(src, src_offset, dst, dst_offset, n)
            return
        if n == 0:
            return
        if src is dst:
            start, end = down4(src_offset), up4(src_offset + n)
            snapshot = queue.scratch(end - start)
            queue.copy(src, start, snapshot, 0, end - start)
            src, src_offset = snapshot, src_offset - start
        lo, hi = up4(dst_offset), down4(dst_offset + n)
        if (src_offset - dst_offset) % 4 == 0 and hi > lo:
            shift = src_offset - dst_offset
            queue.copy(src, lo + shift, dst, lo, hi - lo)
            if lo > dst_offset:
                queue.patch_copy(dst, dst_offset, src, src_offset, lo - dst_offset)
            if dst_offset + n > hi:
                queue.patch_copy(dst, hi, src, hi + shift, dst_offset + n - hi)
            return
        queue.patch_copy(dst, dst_offset, src, src_offset, n)

    def _words(
        self, src: wgpu.GPUBuffer, src_offset: int, dst: wgpu.GPUBuffer, dst_offset: int, n: int
    ) -> None:
        """Copy whole 4-byte words between two distinct buffers: the copy command,
        or the kernel for large copies where the context says it pays (its
        16-byte words need both offsets equally aligned; the command does the rest)."""
        context = self._context
        head = -src_offset % WORD
        if (
            not context.kernel_copies
            or n < context.options.kernel_copy_min
            or (src_offset - dst_offset) % WORD
            or is_host_accessible(src)
            or is_host_accessible(dst)
        ):  # host-accessible memory: one DMA, never a kernel reading it word by word
            self._queue.copy(src, src_offset, dst, dst_offset, n)
            return
        encoder = self._queue.encoder()
        body = (n - head) // WORD * WORD
        if head:
            encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, head)
        kernel = context.copy_kernel()
        kernel.encode(encoder, src, src_offset + head, dst, dst_offset + head, body)
        tail = n - head - body
        if tail:
            at = head + body
            encoder.copy_buffer_to_buffer(src, src_offset + at, dst, dst_offset + at, tail)


class _Spans:
    """Disjoint byte ranges, sorted: the destinations a bounce run has written."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Add ``[lo, hi)``, merged with the ranges it overlaps or touches."""
        starts, ends = self.starts, self.ends
        first, last = bisect_left(ends, lo), bisect_right(starts, hi)
        if first < last:
            lo, hi = min(lo, starts[first]), max(hi, ends[last - 1])
        starts[first:last] = [lo]
        ends[first:last] = [hi]

    def hits(self, lo: int, hi: int) -> bool:
        """Whether ``[lo, hi)`` overlaps a range added so far."""
        at = bisect_right(self.ends, lo)
        return at < len(self.starts) and self.starts[at] < hi
