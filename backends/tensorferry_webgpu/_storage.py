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
    from tensorferry_webgpu._slabs import Slab, SlabAllocator

__all__ = ["WebGPUStorage", "allocate_storage"]


def allocate_storage(
    context: Context, nbytes: int, *, device: Device | None = None
) -> WebGPUStorage:
    """New storage of ``nbytes`` (``> 0``) on ``context``: a slot in a slab for device
    memory of up to ``slab_max`` bytes, else a pooled buffer of its own
    (host-accessible memory with ``device``, its host-accessible device).

    Raises as :meth:`Context.allocate` and :meth:`Context.allocate_slot` do.
    """
    if device is None:
        slot = context.allocate_slot(nbytes)
        if slot is not None:
            slab, offset = slot
            return WebGPUStorage(context, slab.buffer, nbytes, base=offset, slab=slab)
    buffer = context.allocate(nbytes, host=device is not None)
    return WebGPUStorage(context, buffer, nbytes, device=device)


class WebGPUStorage:
    """``nbytes`` bytes at ``base`` in ``buffer``, owned by ``context``.

    Pooled storage goes back to its context's pool when garbage-collected, and
    storage in a ``slab`` (at ``base`` in the slab's buffer) frees its slot;
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
        slab: Slab | None = None,
    ) -> None:
        self.context = context
        # A plain attribute, not a property: a batch reads it for every pair.
        self.device: Device = context.device if device is None else device
        """The tensorferry device of this memory (the owning context's, or its
        host-accessible twin)."""
        self.host_accessible = device is not None and device is not context.device
        self.mapping: MappedScope | None = None
        self.buffer = buffer
        self.base = base
        self._nbytes = nbytes
        self.external = external
        self.in_slab = slab is not None
        """Whether this memory is a slot of a slab (the bytes after it, up to the next
        multiple of 16, are its slot's padding, which no tensor uses)."""
        # Buffers a caller can map (wrapped ones, or pooled ones with MAP usage on
        # unified memory) are checked before every use: work on a mapped buffer aborts.
        # Slab buffers have no map usage.
        self.watch_map = (
            slab is None and buffer is not None and (external or bool(buffer.usage & MAP_USAGE))
        )
        if slab is not None:
            assert context.slabs is not None, "slab storage comes from the context's slabs"
            context.count_live(nbytes)
            weakref.finalize(
                self, _free_slot, context, context.slabs, slab, base, nbytes
            ).atexit = False  # environments close their contexts at exit
        elif buffer is not None and not external:
            context.count_live(nbytes, host=self.host_accessible)
            pool = context.host_pool if self.host_accessible else context.pool
            assert pool is not None
            finalizer = weakref.finalize(
                self, _release, context, pool, buffer, nbytes, self.host_accessible
            )
            finalizer.atexit = False  # environments close their contexts at exit

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


def _free_slot(
    context: Context, slabs: SlabAllocator, slab: Slab, offset: int, nbytes: int
) -> None:
    context.count_live(-nbytes)
    slabs.release(slab, offset)
