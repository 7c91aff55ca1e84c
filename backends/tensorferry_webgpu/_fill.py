"""Fills on the device: a pattern repeated over a tensor, without an upload.

Zeros are ``clear_buffer`` (whole words) plus byte-exact edges. Other patterns
of up to 128 bytes travel inline with the patch kernel's parameters; longer
ones (an element such as ``V200`` or ``S129``) are written once into a scratch
buffer that the patch kernel then repeats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorferry_webgpu._align import down4, up4
from tensorferry_webgpu._patch import MAX_INLINE

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._queue import Queue

__all__ = ["Filler"]


class Filler:
    """Encodes fills into the batch's queue."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def fill(self, buffer: wgpu.GPUBuffer, offset: int, nbytes: int, pattern: bytes) -> None:
        """Repeat ``pattern`` over ``nbytes`` bytes at ``offset`` (a multiple of its length)."""
        queue = self._queue
        lo, hi = up4(offset), down4(offset + nbytes)
        if not any(pattern) and hi > lo:
            queue.encoder().clear_buffer(buffer, lo, hi - lo)
            if lo > offset:
                queue.write_inline(buffer, offset, bytes(lo - offset))
            if offset + nbytes > hi:
                queue.write_inline(buffer, hi, bytes(offset + nbytes - hi))
        elif len(pattern) <= MAX_INLINE:
            queue.write_inline(buffer, offset, pattern, count=nbytes)
        else:
            source = queue.scratch(up4(len(pattern)))
            queue.write_fresh(source, pattern.ljust(up4(len(pattern)), b"\0"))
            queue.patch_repeat(buffer, offset, nbytes, source, len(pattern))
