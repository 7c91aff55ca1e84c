"""A toy tensorferry backend: the worked example for backend authors.

Two devices, ``toy:0`` and ``toy:1`` (NPUs), whose memory is one Python
``bytearray`` per allocation. One transfer copies host <-> toy and within one
toy device, but *not* ``toy:0 -> toy:1``: the :class:`tensorferry.DataTransferManager`
routes that pair through host memory. It uses only tensorferry's public API.

A backend is three things: storage (memory on a device), a backend object
(devices, allocation, its transfers, ``close``) and one or more transfers
(:class:`tensorferry.IDataTransfer`). Register the factory in ``pyproject.toml``::

    [project.entry-points."tensorferry.backends"]
    toy = "tensorferry_toy:create_backend"

then run the shipped conformance suite against it, unchanged::

    python -m pytest --pyargs tensorferry.conformance --tensorferry-backend=toy

It implements neither optional capability (:class:`tensorferry.Filler`,
:class:`tensorferry.AsyncDataTransfer`); the suite skips those tests and says so.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import tensorferry as tf

__all__ = ["VENDOR_ID", "ToyBackend", "ToyDataTransfer", "ToyStorage", "create_backend"]

VENDOR_ID = 0x7077
"""The toy's made-up PCI vendor id."""


class ToyStorage:
    """Toy device memory: one ``bytearray``, until the backend releases it."""

    def __init__(self, device: tf.Device, nbytes: int) -> None:
        self._device = device
        self._nbytes = nbytes
        self._memory: bytearray | None = bytearray(nbytes)

    @property
    def device(self) -> tf.Device:
        """The toy device this memory belongs to."""
        return self._device

    @property
    def nbytes(self) -> int:
        """Size in bytes, fixed for the storage's life."""
        return self._nbytes

    @property
    def writable(self) -> bool:
        """Always True: toy memory can always be a destination."""
        return True

    @property
    def closed(self) -> bool:
        """True once the backend has released the memory."""
        return self._memory is None

    def memory(self) -> memoryview:
        """The bytes; raises :class:`tensorferry.ClosedError` once released."""
        if self._memory is None:
            raise tf.ClosedError(
                f"toy storage on {self._device} was released; expected live memory"
            )
        return memoryview(self._memory)

    def release(self) -> None:
        """Drop the memory; later use raises ClosedError."""
        self._memory = None


def _bytes_of(tensor: tf.Tensor) -> memoryview:
    """The bytes a tensor covers, in toy or host memory, as a writable-if-possible view."""
    storage = tensor.storage
    if isinstance(storage, ToyStorage):
        memory = storage.memory()
    elif isinstance(storage, tf.HostStorage):
        memory = storage.array.data
    else:
        raise TypeError(f"the toy transfer copies toy and host memory only, got {tensor!r}")
    return memory[tensor.offset : tensor.offset + tensor.nbytes]


class ToyDataTransfer:
    """Copies host -> toy, toy -> host, and toy:i -> toy:i; never toy:0 -> toy:1."""

    def __init__(self, devices: Sequence[tf.Device]) -> None:
        self._devices = frozenset(devices)
        self._closed = False

    def can_copy(self, src_device: tf.Device, dst_device: tf.Device) -> bool:
        """True for host <-> a toy device and for copies within one toy device."""
        if src_device.is_host:
            return dst_device in self._devices
        if dst_device.is_host:
            return src_device in self._devices
        return src_device == dst_device and src_device in self._devices

    def copy_tensors(self, pairs: Sequence[tf.CopyPair]) -> None:
        """Copy each pair in order, like ``memmove``; only the destination view's bytes change.

        Raises :class:`tensorferry.ClosedError` after :meth:`close` or when any
        storage in the batch was released, before copying anything.
        """
        if self._closed:
            raise tf.ClosedError("the toy data transfer is closed")
        views = [(_bytes_of(src), _bytes_of(dst)) for src, dst in pairs]
        for source, target in views:
            # bytes() snapshots the source first, so overlapping views copy correctly;
            # one slice assignment is one memcpy under the GIL, so threads are safe.
            target[:] = bytes(source)

    def close(self) -> None:
        """Refuse further copies; idempotent."""
        self._closed = True


class ToyBackend:
    """Two toy NPUs whose memory is bytearrays."""

    name = "toy"

    def __init__(self, device_count: int = 2) -> None:
        self._devices = tuple(
            tf.Device(
                "toy",
                index,
                tf.DeviceType.NPU,
                tf.MemoryKind.DEFAULT,
                vendor_id=VENDOR_ID,
                device_id=0x100 + index,
                name=f"Toy NPU {index}",
                properties=(("memory", "bytearray"),),
            )
            for index in range(device_count)
        )
        self._transfer = ToyDataTransfer(self._devices)
        self._lock = threading.Lock()
        self._storages: weakref.WeakSet[ToyStorage] = weakref.WeakSet()
        self._closed = False

    def devices(self) -> list[tf.Device]:
        """``toy:0``, ``toy:1``."""
        return list(self._devices)

    def allocate(self, device: tf.Device, nbytes: int) -> ToyStorage:
        """Fresh zeroed toy memory; raises UnknownDeviceError for a device not ours,
        ValueError for a negative size, ClosedError after close()."""
        if device not in self._devices:
            raise tf.UnknownDeviceError(
                f"{device} is not a toy device; expected one of {[str(d) for d in self._devices]}"
            )
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        storage = ToyStorage(device, nbytes)
        with self._lock:
            if self._closed:
                raise tf.ClosedError("the toy backend is closed")
            self._storages.add(storage)
        return storage

    def data_transfers(self) -> list[ToyDataTransfer]:
        """The one toy transfer."""
        return [self._transfer]

    def close(self) -> None:
        """Close the transfer and release every storage; idempotent."""
        with self._lock:
            self._closed = True
            storages = list(self._storages)
            self._storages.clear()
        self._transfer.close()
        for storage in storages:
            storage.release()


def create_backend() -> ToyBackend:
    """The ``tensorferry.backends`` entry point's factory."""
    return ToyBackend()
