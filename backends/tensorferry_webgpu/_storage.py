"""WebGPUStorage: tensor memory in one wgpu buffer."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from tensorferry import Device
from tensorferry_webgpu._native import MAP_USAGE

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context

__all__ = ["WebGPUStorage"]


class WebGPUStorage:
    """``nbytes`` bytes at ``base`` in ``buffer``, owned by ``context``.

    Pooled storage goes back to its context's pool when garbage-collected;
    wrapped (external) buffers stay the caller's. Zero-byte storage holds no buffer.
    """

    writable = True

    def __init__(
        self,
        context: Context,
        buffer: wgpu.GPUBuffer | None,
        nbytes: int,
        *,
        base: int = 0,
        external: bool = False,
    ) -> None:
        self.context = context
        self.buffer = buffer
        self.base = base
        self._nbytes = nbytes
        self.external = external
        # Buffers a caller can map (wrapped ones, or pooled ones with MAP usage on
        # unified memory) are checked before every use: work on a mapped buffer aborts.
        self.watch_map = buffer is not None and (external or bool(buffer.usage & MAP_USAGE))
        if buffer is not None and not external:
            context.count_live(nbytes)
            finalizer = weakref.finalize(self, _release, context, buffer, nbytes)
            finalizer.atexit = False  # environments close their contexts at exit

    @property
    def device(self) -> Device:
        """The tensorferry device of the owning context."""
        return self.context.device

    @property
    def nbytes(self) -> int:
        """Size of the storage in bytes."""
        return self._nbytes

    @property
    def closed(self) -> bool:
        """True once the owning context is closed."""
        return self.context.closed


def _release(context: Context, buffer: wgpu.GPUBuffer, nbytes: int) -> None:
    context.count_live(-nbytes)
    context.pool.release(buffer)
