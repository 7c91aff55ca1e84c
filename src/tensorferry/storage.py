"""Storage: the backend-owned memory that tensors are views of.

Core never looks inside a backend's storage; it only needs the protocol below.
Host memory is the one kind every backend must read and write, so it is defined
here, as :class:`HostStorage`, a flat ``uint8`` numpy array.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import attrs
import numpy as np
import numpy.typing as npt

from tensorferry.device import HOST, Device
from tensorferry.errors import InvalidArrayError, OutOfDeviceMemoryError

__all__ = ["HostStorage", "MappableStorage", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """Memory owned by one backend on one device.

    ``nbytes`` is fixed for the storage's life. ``closed`` turns true once the
    memory is released (by its owner or by ``Environment.close()``); transfers
    must refuse closed storage before touching anything.
    """

    @property
    def device(self) -> Device:
        """The device that owns this memory."""
        ...

    @property
    def nbytes(self) -> int:
        """Size of the storage in bytes."""
        ...

    @property
    def writable(self) -> bool:
        """False for memory that must never be a copy's destination."""
        ...

    @property
    def closed(self) -> bool:
        """True once the memory has been released."""
        ...


@runtime_checkable
class MappableStorage(Protocol):
    """Optional storage capability: the host addresses the memory directly, zero-copy.

    What :meth:`tensorferry.Tensor.mapped` delegates to (host-accessible memory,
    ``MemoryKind.HOST_ACCESSIBLE``). The returned context manager's ``__enter__``
    gives a numpy array of ``shape`` and ``dtype`` over the ``nbytes`` bytes at
    byte ``offset`` of the storage, read-only unless ``writable``. The
    implementation must guarantee that no array it gave out can outlive the
    memory's mapping: while the scope is open copies of the storage refuse, and
    an array still referenced after the scope keeps the memory mapped.
    """

    def map_range(
        self,
        offset: int,
        nbytes: int,
        shape: tuple[int, ...],
        dtype: np.dtype[np.generic],
        *,
        writable: bool,
    ) -> AbstractContextManager[npt.NDArray[np.generic]]:
        """A scope whose ``__enter__`` returns the array over the range."""
        ...


@attrs.define(eq=False)
class HostStorage:
    """Host memory as a flat, C-contiguous ``uint8`` numpy array.

    Built by :meth:`allocate` (fresh memory) or :meth:`wrap` (shares a caller's
    array, without copying). Never closed: its memory lives as long as any
    reference to the array.
    """

    array: npt.NDArray[np.uint8]
    writable: bool = True
    _address: int = attrs.field(init=False, default=-1, repr=False)

    @property
    def address(self) -> int:
        """Address of the first byte, used to tell whether two host tensors overlap
        (found on first use: a lone copy never asks, and numpy takes ~1 us to say)."""
        address = self._address
        if address < 0:
            address = self._address = int(self.array.__array_interface__["data"][0])
        return address

    @property
    def device(self) -> Device:
        """Always :data:`tensorferry.HOST`."""
        return HOST

    @property
    def nbytes(self) -> int:
        """Size of the storage in bytes."""
        return int(self.array.nbytes)

    @property
    def closed(self) -> bool:
        """Always False: host memory is released by the garbage collector."""
        return False

    @classmethod
    def allocate(cls, nbytes: int) -> HostStorage:
        """Fresh, uninitialised host memory of ``nbytes`` bytes.

        Raises ``ValueError`` for a negative size and
        :class:`~tensorferry.OutOfDeviceMemoryError` (a ``MemoryError``) when
        the host cannot provide that much memory.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        try:
            return cls(np.empty(nbytes, dtype=np.uint8))
        except (MemoryError, ValueError) as exc:  # ValueError: beyond what numpy can index
            raise OutOfDeviceMemoryError(
                f"the host cannot provide {nbytes} bytes of memory: {exc}"
            ) from exc

    @classmethod
    def wrap(cls, array: npt.NDArray[np.generic], *, writable: bool | None = None) -> HostStorage:
        """Share the memory of a C-contiguous numpy array.

        ``writable`` defaults to the array's own flag; asking for ``True`` on a
        read-only array raises :class:`InvalidArrayError`, and so does an array
        that is not C-contiguous.
        """
        if not array.flags.c_contiguous:
            raise InvalidArrayError(
                f"cannot share memory with a non-C-contiguous array (strides {array.strides}, "
                f"shape {array.shape}); expected a C-contiguous array: pass "
                "numpy.ascontiguousarray(a) or let tensorferry copy it"
            )
        if writable and not array.flags.writeable:
            raise InvalidArrayError(
                "cannot use a read-only numpy array as writable memory; expected an array "
                "with flags.writeable set (pass a copy)"
            )
        flat = array.reshape(-1).view(np.uint8) if array.size else np.empty(0, np.uint8)
        return cls(flat, array.flags.writeable if writable is None else writable)
