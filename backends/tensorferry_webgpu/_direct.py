"""Direct mapping: copies between host memory and a tensor's own mapped buffer.

On unified-memory adapters whose tensor buffers are host-mappable
(``mappable-primary-buffers``), a large upload or download maps the tensor's
buffer and copies once, instead of twice through staging.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._align import down8, up4
from tensorferry_webgpu._guards import is_host_accessible, write_map_mode
from tensorferry_webgpu._native import MAP_READ, MAP_USAGE, mapped_array

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._queue import Queue

__all__ = ["DirectCopier", "maps_directly"]

Bytes = npt.NDArray[np.uint8]


def maps_directly(context: Context, buffer: wgpu.GPUBuffer, nbytes: int) -> bool:
    """Whether a copy of ``nbytes`` to or from ``buffer`` maps it (unified memory,
    a mappable buffer, at least ``direct_min`` bytes; or host-accessible memory,
    always)."""
    return (
        context.mapped_storage
        and nbytes >= context.options.direct_min
        and buffer.usage & MAP_USAGE == MAP_USAGE
    ) or is_host_accessible(buffer)


class DirectCopier:
    """Copies between host bytes and a mapped range of a tensor's own buffer.

    Only the view's bytes are touched, so any offset and size is exact. The
    map waits for every submitted command on the buffer, and the buffer is
    unmapped before anything else can be submitted.
    """

    def __init__(self, context: Context, queue: Queue) -> None:
        self._context = context
        self._queue = queue

    def write(self, buffer: wgpu.GPUBuffer, offset: int, host: Bytes) -> None:
        """Upload ``host`` into ``buffer`` at ``offset``."""
        self._copy(buffer, offset, host, write=True)

    def read(self, buffer: wgpu.GPUBuffer, offset: int, host: Bytes) -> None:
        """Download ``host.nbytes`` bytes at ``offset`` of ``buffer`` into ``host``."""
        self._copy(buffer, offset, host, write=False)

    def _copy(self, buffer: wgpu.GPUBuffer, offset: int, host: Bytes, *, write: bool) -> None:
        n = host.nbytes
        start, end = down8(offset), up4(offset + n)
        self._queue.map(buffer, write_map_mode(buffer) if write else MAP_READ, start, end - start)
        try:
            mapped = mapped_array(buffer, start, end - start)[offset - start : offset - start + n]
            threads, parallel_min = self._context.threads, self._context.options.parallel_min
            if write:
                threads.copy(mapped, host, parallel_min)
            else:
                threads.copy(host, mapped, parallel_min)
            del mapped  # no view of mapped memory may outlive the unmap
        finally:
            buffer.unmap()
