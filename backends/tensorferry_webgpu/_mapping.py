"""Mapped scopes: zero-copy numpy access to host-accessible tensor memory.

``with tensor.mapped() as a:`` maps the tensor's buffer and hands out a numpy
array over the mapped bytes. Work on a mapped buffer aborts the process and an
array over unmapped memory crashes when read, so a scope keeps three rules:

* while it is open, every copy, raw access or second scope on the storage
  raises :class:`~tensorferry.MappedError` before anything is submitted;
* at exit the buffer is unmapped only when nothing but the scope refers to the
  array; with one more reference (usually the ``as`` name, which outlives the
  ``with`` block) the buffer stays mapped, quietly, and is unmapped by the first
  use after the array is gone; with more (views, memoryviews, aliases) exit
  raises :class:`~tensorferry.MappedError` and the buffer stays mapped the same way;
* a use while the array is still alive raises :class:`~tensorferry.MappedError` saying so.
"""

from __future__ import annotations

import sys
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorferry import MappedError
from tensorferry_webgpu._align import down8, up4
from tensorferry_webgpu._guards import write_map_mode
from tensorferry_webgpu._native import MAP_READ, mapped_address
from tensorferry_webgpu._waits import request_map

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context

__all__ = ["MappedScope"]

_OURS = 2
"""References to the array while the scope holds it: the scope's own and ``getrefcount``'s."""


class _Window:
    """What the handed-out array is made from: it exposes the mapped bytes and keeps
    the storage (and so the buffer) alive for as long as any array over them lives."""

    def __init__(
        self,
        address: int,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        writable: bool,
        keep: object,
    ) -> None:
        self.keep = keep
        self.__array_interface__ = {
            "data": (address, not writable),
            "shape": shape,
            "typestr": dtype.str,
            "descr": dtype.descr,
            "version": 3,
        }


class MappedScope:
    """One ``mapped()`` scope over ``nbytes`` at byte ``offset`` of ``buffer``.

    ``owner`` is the storage, which refers to the scope while the buffer is
    mapped (``owner.mapping``); the context counts such storages
    (``maps_open``) so that a batch planned earlier is checked again before it
    runs.
    """

    def __init__(
        self,
        context: Context,
        buffer: wgpu.GPUBuffer | None,
        owner: Any,
        offset: int,
        nbytes: int,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        *,
        writable: bool,
    ) -> None:
        self._context = context
        self._buffer = buffer
        self._owner = owner
        self._offset = offset
        self._nbytes = nbytes
        self._shape = shape
        self._dtype = dtype
        self._writable = writable
        self._array: npt.NDArray[Any] | None = None
        self._alive: weakref.ref[npt.NDArray[Any]] | None = None
        self.open = False

    def __enter__(self) -> npt.NDArray[Any]:
        if self.open or self._alive is not None:
            raise MappedError("this mapped() scope was entered already; call tensor.mapped() again")
        context, buffer = self._context, self._buffer
        with context.lock:
            context.check_usable()
            previous = self._owner.mapping
            if previous is not None:
                previous.settle()
            if buffer is None:
                array: npt.NDArray[Any] = np.empty(self._shape, self._dtype)
            else:
                if buffer.map_state != "unmapped":
                    raise MappedError(
                        f"the buffer behind this {self._owner.device} tensor is "
                        f"{buffer.map_state} by someone else; expected it unmapped"
                    )
                start = down8(self._offset)
                size = up4(self._offset + self._nbytes) - start
                mode = write_map_mode(buffer) if self._writable else MAP_READ
                context.flush_writes()  # a map sees submitted writes only
                request_map(buffer, mode, start, size).wait(
                    context.gpu, lost_after=context.options.lost_after
                )
                try:
                    address = mapped_address(buffer, start, size) + self._offset - start
                except BaseException:
                    buffer.unmap()
                    raise
                window = _Window(address, self._shape, self._dtype, self._writable, self._owner)
                array = np.asarray(window)
                self._owner.mapping = self
                context.maps_open += 1
        if not self._writable:
            array.flags.writeable = False
        self._array = array
        self._alive = weakref.ref(array)
        self.open = True
        return array

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.open = False
        array, self._array = self._array, None
        if array is None or self._buffer is None:
            return
        extra = sys.getrefcount(array) - _OURS
        del array
        if extra <= 0:
            self.settle()
            return
        if extra > 1 and exc_type is None:
            raise MappedError(
                f"leaving tensor.mapped() with {extra} references to its array or views of it "
                "(slices, memoryviews, other names) still alive; they point at mapped memory, so "
                "the buffer stays mapped and copies of the tensor raise until they are gone. "
                "Expected: copy what you keep (a.copy()) and drop views before the scope ends"
            )

    def settle(self) -> None:
        """Unmap the buffer when no array over it is left; raise :class:`~tensorferry.MappedError`
        while the scope is open or an array from it is still alive."""
        if self.open:
            raise MappedError(
                f"the memory of this {self._owner.device} tensor is mapped by an open "
                "tensor.mapped() scope; expected the scope closed before the tensor is copied"
            )
        alive = self._alive
        if alive is not None and alive() is not None:
            raise MappedError(
                f"an array from tensor.mapped() on {self._owner.device} (or a view of it) is "
                "still referenced after its scope, so the memory stays mapped and cannot be "
                "copied; expected every such array gone (del a, or a.copy() to keep the data)"
            )
        with self._context.lock:
            if self._owner.mapping is self:
                self._owner.mapping = None
                self._context.maps_open -= 1
                buffer = self._buffer
                if buffer is not None and buffer.map_state == "mapped":
                    buffer.unmap()
