from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np

from tensorferry import (
    HOST,
    ClosedError,
    CopyPair,
    Device,
    HostStorage,
    Storage,
    Tensor,
    UnknownDeviceError,
)

__all__ = ["CpuBackend", "CpuDataTransfer", "create_backend"]


def _bytes_of(tensor: Tensor) -> np.ndarray:
    storage = tensor.storage
    if not isinstance(storage, HostStorage):
        raise TypeError(
            f"{tensor!r} is not in host memory; the cpu transfer copies host memory only"
        )
    return storage.array[tensor.offset : tensor.offset + tensor.nbytes]


class CpuDataTransfer:
    """Copies host memory to host memory with one memcpy per pair.

    Copies bytes, so every dtype (and any byte offset) costs the same; numpy
    buffers overlapping source and destination, so overlapping views are safe.
    """

    def __init__(self) -> None:
        self._closed = False

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        """True only for host -> host."""
        return src_device.is_host and dst_device.is_host

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        """Copy every pair in order; raises ClosedError after close()."""
        if self._closed:
            raise ClosedError("the cpu data transfer is closed")
        for src, dst in pairs:
            np.copyto(_bytes_of(dst), _bytes_of(src))

    def close(self) -> None:
        """Refuse further copies; idempotent."""
        self._closed = True


class CpuBackend:
    """Host memory as a backend: one device, :data:`tensorferry.HOST`.

    Implements the optional capabilities :class:`tensorferry.Filler`,
    :class:`tensorferry.RawAccess` and :class:`tensorferry.MemoryUsage`.
    """

    name = "cpu"

    def __init__(self) -> None:
        self._transfer = CpuDataTransfer()
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[HostStorage] = weakref.WeakSet()

    def devices(self) -> list[Device]:
        """The host device alone."""
        return [HOST]

    def allocate(self, device: Device, nbytes: int) -> HostStorage:
        """Fresh host memory of ``nbytes`` bytes.

        Raises UnknownDeviceError for a device other than the host, ValueError for
        a negative size, OutOfDeviceMemoryError (a MemoryError) when it does not fit.
        """
        if not device.is_host:
            raise UnknownDeviceError(
                f"the cpu backend allocates host memory only, got device {device}"
            )
        storage = HostStorage.allocate(nbytes)
        with self._lock:
            self._live.add(storage)
        return storage

    def bytes_in_use(self, device: Device) -> int:
        """Bytes of host storage this backend allocated that is still alive."""
        if not device.is_host:
            raise UnknownDeviceError(f"the cpu backend owns host memory only, got {device}")
        with self._lock:
            return sum(storage.nbytes for storage in self._live)

    def read_raw(self, storage: Storage, offset: int, nbytes: int) -> bytes:
        """Bytes of host storage, read with numpy; ValueError outside the storage."""
        return bytes(_raw_range(storage, offset, nbytes))

    def write_raw(self, storage: Storage, offset: int, data: bytes) -> None:
        """Write bytes into host storage with numpy; ValueError outside the storage."""
        _raw_range(storage, offset, len(data))[:] = np.frombuffer(data, np.uint8)

    def data_transfers(self) -> list[CpuDataTransfer]:
        """The host -> host transfer."""
        return [self._transfer]

    def fill(self, tensor: Tensor, pattern: bytes) -> None:
        """Repeat one element's bytes over the tensor, in place."""
        target = tensor.host_array()
        target[...] = np.frombuffer(pattern, dtype=tensor.dtype)[0]

    def close(self) -> None:
        """Close the transfer; host memory is released by the garbage collector."""
        self._transfer.close()


def _raw_range(storage: Storage, offset: int, nbytes: int) -> np.ndarray:
    if not isinstance(storage, HostStorage):
        raise TypeError(f"the cpu backend reads host storage only, got {type(storage).__name__}")
    if offset < 0 or nbytes < 0 or offset + nbytes > storage.nbytes:
        raise ValueError(
            f"bytes {offset}..{offset + nbytes} are outside storage of {storage.nbytes} bytes"
        )
    return storage.array[offset : offset + nbytes]


def create_backend() -> CpuBackend:
    """The entry point's factory."""
    return CpuBackend()
