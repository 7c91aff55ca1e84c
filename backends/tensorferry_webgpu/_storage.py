"""WebGPUStorage: tensor memory in one wgpu buffer."""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorferry import Device
from tensorferry_webgpu._mapping import MappedScope
from tensorferry_webgpu._native import MAP_USAGE

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._buffers import BufferPool
    from tensorferry_webgpu._context import Context

__all__ = ["WebGPUStorage"]


class WebGPUStorage:
    """``nbytes`` bytes at ``base`` in ``buffer``, owned by ``context``.

    Pooled storage goes back to its context's pool when garbage-collected;
    wrapped (external) buffers stay the caller's. Zero-byte storage holds no buffer.
    ``device`` is the context's device unless given (host-accessible storage
    gives the host-accessible device of the same adapter); host-accessible
    storage can be mapped (:meth:`map_range`), and ``mapping`` is the scope
    whose mapping is still in place.
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
        device: Device | None = None,
    ) -> None:
        self.context = context
        self._device = context.device if device is None else device
        self.host_accessible = device is not None and device is not context.device
        self.mapping: MappedScope | None = None
        self.buffer = buffer
        self.base = base
        self._nbytes = nbytes
        self.external = external
        # Buffers a caller can map (wrapped ones, or pooled ones with MAP usage on
        # unified memory) are checked before every use: work on a mapped buffer aborts.
        self.watch_map = buffer is not None and (external or bool(buffer.usage & MAP_USAGE))
        if buffer is not None and not external:
            context.count_live(nbytes, host=self.host_accessible)
            pool = context.host_pool if self.host_accessible else context.pool
            assert pool is not None
            finalizer = weakref.finalize(
                self, _release, context, pool, buffer, nbytes, self.host_accessible
            )
            finalizer.atexit = False  # environments close their contexts at exit

    @property
    def device(self) -> Device:
        """The tensorferry device of this memory (the owning context's, or its
        host-accessible twin)."""
        return self._device

    @property
    def nbytes(self) -> int:
        """Size of the storage in bytes."""
        return self._nbytes

    @property
    def closed(self) -> bool:
        """True once the owning context is closed."""
        return self.context.closed

    def map_range(
        self,
        offset: int,
        nbytes: int,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        *,
        writable: bool,
    ) -> AbstractContextManager[npt.NDArray[Any]]:
        """A :class:`MappedScope` over ``nbytes`` at ``offset`` (the
        :class:`tensorferry.MappableStorage` capability; host-accessible storage only).

        Raises ``TypeError`` for device memory, which the host cannot address.
        """
        if not self.host_accessible:
            raise TypeError(
                f"mapped() needs host-accessible memory, got a tensor on {self.device}; "
                f"allocate it on '{self.device}:host' or use tensor.numpy() for a copy"
            )
        return MappedScope(
            self.context,
            self.buffer,
            self,
            self.base + offset,
            nbytes,
            shape,
            dtype,
            writable=writable,
        )

    def settle(self) -> None:
        """Unmap a mapping left behind by a closed scope whose arrays are gone;
        raise :class:`tensorferry.MappedError` while a scope or its arrays are alive."""
        mapping = self.mapping
        if mapping is not None:
            mapping.settle()


def _release(
    context: Context, pool: BufferPool, buffer: wgpu.GPUBuffer, nbytes: int, host: bool
) -> None:
    context.count_live(-nbytes, host=host)
    if buffer.map_state == "mapped":
        buffer.unmap()  # a scope's arrays died with the storage; the pool gets it unmapped
    pool.release(buffer)
