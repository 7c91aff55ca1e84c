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

It implements the optional capabilities :class:`tensorferry.AsyncDataTransfer`
(each batch on a thread of its own), :class:`tensorferry.RawAccess` and
:class:`tensorferry.MemoryUsage`, but not :class:`tensorferry.Filler` (fills
are uploads; the suite says so when it skips).

**Mutants.** ``TENSORFERRY_TOY_MUTANT=<name>`` plants one known bug, to prove the
suite catches it (``nox -s mutants``): see :data:`MUTANTS`.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import tensorferry as tf

__all__ = [
    "MAX_ALLOCATION",
    "MUTANTS",
    "VENDOR_ID",
    "ToyBackend",
    "ToyDataTransfer",
    "ToyStorage",
    "create_backend",
]

VENDOR_ID = 0x7077
"""The toy's made-up PCI vendor id."""

MAX_ALLOCATION = 1 << 30
"""The largest toy allocation, in bytes (the devices' ``max_buffer_size`` property)."""

MUTANTS = {
    "early-done": "an async handle's done() is true before the data has landed",
    "close-no-wait": "the transfer's close() returns while async batches still run",
    "alloc-oserror": "an allocation that does not fit raises OSError, not MemoryError",
    "close-twice-raises": "the backend's close() raises when called a second time",
    "leak": "storage is never released: the backend keeps every allocation alive",
    "shared-scratch": "copies go through one scratch buffer shared by all threads, unlocked",
    "symmetric": "uploads and downloads both flip every byte (a round trip hides it)",
}
"""The bugs ``TENSORFERRY_TOY_MUTANT`` can plant, by name."""

_MUTANT = os.environ.get("TENSORFERRY_TOY_MUTANT", "")
if _MUTANT and _MUTANT not in MUTANTS:
    raise ValueError(f"TENSORFERRY_TOY_MUTANT={_MUTANT!r}; expected one of {sorted(MUTANTS)}")

_LATE = 0.2
"""Seconds the async mutants let a batch lag behind what they report."""


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


_SCRATCH = bytearray(4096)  # only the shared-scratch mutant uses it


def _move(source: memoryview, target: memoryview, flip: bool) -> None:
    """Copy like memmove: bytes() snapshots the source first, so overlapping views
    copy correctly; one slice assignment is one memcpy under the GIL."""
    if _MUTANT == "shared-scratch":
        data = bytes(source)
        for start in range(0, len(data), len(_SCRATCH)):
            chunk = len(data[start : start + len(_SCRATCH)])
            _SCRATCH[:chunk] = data[start : start + chunk]
            _unstage(target, start, chunk)
        return
    if flip:
        target[:] = bytes(b ^ 0xFF for b in source)
    else:
        target[:] = bytes(source)


def _unstage(target: memoryview, start: int, count: int) -> None:
    target[start : start + count] = _SCRATCH[:count]


class _Batch:
    """An async batch on its own thread; a :class:`tensorferry.TransferHandle`."""

    def __init__(self, work: Callable[[], None], landed: Callable[[_Batch], None]) -> None:
        self._error: BaseException | None = None
        self._landed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work, landed), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], None], landed: Callable[[_Batch], None]) -> None:
        try:
            if _MUTANT in ("early-done", "close-no-wait"):
                time.sleep(_LATE)
            work()
        except BaseException as exc:
            self._error = exc
        finally:
            self._landed.set()
            landed(self)

    def join(self) -> None:
        """Block until the batch landed, without raising its error."""
        self._landed.wait()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch landed; raise its error, or TimeoutError."""
        if not self._landed.wait(timeout):
            raise TimeoutError(f"the toy batch did not land within {timeout} s")
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        """True once the batch has landed."""
        return _MUTANT == "early-done" or self._landed.is_set()


class ToyDataTransfer:
    """Copies host -> toy, toy -> host, and toy:i -> toy:i; never toy:0 -> toy:1."""

    def __init__(self, devices: Sequence[tf.Device]) -> None:
        self._devices = frozenset(devices)
        self._closed = False
        self._lock = threading.Lock()
        self._running: set[_Batch] = set()

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
        self._copy(pairs)

    @staticmethod
    def _copy(pairs: Sequence[tf.CopyPair]) -> None:
        views = [(_bytes_of(src), _bytes_of(dst), _flips(src, dst)) for src, dst in pairs]
        for source, target, flip in views:
            _move(source, target, flip)

    def copy_tensors_async(self, pairs: Sequence[tf.CopyPair]) -> tf.TransferHandle:
        """Start copying the batch on a thread of its own and return its handle.

        Raises :class:`tensorferry.ClosedError` after :meth:`close`; copy errors
        are raised by the handle's ``wait()``.
        """
        batch = list(pairs)
        with self._lock:
            if self._closed:
                raise tf.ClosedError("the toy data transfer is closed")
            handle = _Batch(lambda: self._copy(batch), self._landed)
            self._running.add(handle)
        return handle

    def _landed(self, batch: _Batch) -> None:
        with self._lock:
            self._running.discard(batch)

    def close(self) -> None:
        """Refuse further copies, then wait for running async batches; idempotent."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        if _MUTANT == "close-no-wait":
            return
        for batch in running:
            batch.join()


def _flips(src: tf.Tensor, dst: tf.Tensor) -> bool:
    """Whether the symmetric mutant flips this pair's bytes (uploads and downloads)."""
    return _MUTANT == "symmetric" and src.device.is_host != dst.device.is_host


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
                properties=(("memory", "bytearray"), ("max_buffer_size", MAX_ALLOCATION)),
            )
            for index in range(device_count)
        )
        self._transfer = ToyDataTransfer(self._devices)
        self._lock = threading.Lock()
        self._storages: weakref.WeakSet[ToyStorage] = weakref.WeakSet()
        self._kept: list[ToyStorage] = []  # only the leak mutant keeps storage alive
        self._closed = False

    def devices(self) -> list[tf.Device]:
        """``toy:0``, ``toy:1``."""
        return list(self._devices)

    def allocate(self, device: tf.Device, nbytes: int) -> ToyStorage:
        """Fresh zeroed toy memory of exactly ``nbytes`` bytes.

        Raises UnknownDeviceError for a device not ours, ValueError for a negative
        size, OutOfDeviceMemoryError beyond :data:`MAX_ALLOCATION`, ClosedError
        after close().
        """
        if device not in self._devices:
            raise tf.UnknownDeviceError(
                f"{device} is not a toy device; expected one of {[str(d) for d in self._devices]}"
            )
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes > MAX_ALLOCATION:
            message = (
                f"{device} holds at most {MAX_ALLOCATION} bytes per allocation, asked {nbytes}"
            )
            if _MUTANT == "alloc-oserror":
                raise OSError(message)
            raise tf.OutOfDeviceMemoryError(message)
        with self._lock:
            if self._closed:
                raise tf.ClosedError("the toy backend is closed")
            storage = ToyStorage(device, nbytes)
            self._storages.add(storage)
            if _MUTANT == "leak":
                self._kept.append(storage)
        return storage

    def data_transfers(self) -> list[ToyDataTransfer]:
        """The one toy transfer."""
        return [self._transfer]

    def read_raw(self, storage: tf.Storage, offset: int, nbytes: int) -> bytes:
        """Bytes of toy storage, straight from its bytearray (no transfer involved)."""
        return bytes(_raw_range(storage, offset, nbytes))

    def write_raw(self, storage: tf.Storage, offset: int, data: bytes) -> None:
        """Write bytes straight into toy storage's bytearray (no transfer involved)."""
        _raw_range(storage, offset, len(data))[:] = data

    def bytes_in_use(self, device: tf.Device) -> int:
        """Bytes of live toy storage on ``device``."""
        if device not in self._devices:
            raise tf.UnknownDeviceError(f"{device} is not a toy device")
        with self._lock:
            return sum(s.nbytes for s in self._storages if s.device == device and not s.closed)

    def close(self) -> None:
        """Close the transfer and release every storage; idempotent."""
        with self._lock:
            if self._closed and _MUTANT == "close-twice-raises":
                raise tf.ClosedError("the toy backend is closed already")
            self._closed = True
            storages = list(self._storages)
            self._storages.clear()
        self._transfer.close()
        for storage in storages:
            storage.release()


def _raw_range(storage: tf.Storage, offset: int, nbytes: int) -> memoryview:
    if not isinstance(storage, ToyStorage | tf.HostStorage):
        raise TypeError(f"the toy backend reads toy and host storage, got {type(storage).__name__}")
    if offset < 0 or nbytes < 0 or offset + nbytes > storage.nbytes:
        raise ValueError(
            f"bytes {offset}..{offset + nbytes} are outside storage of {storage.nbytes} bytes"
        )
    memory = storage.memory() if isinstance(storage, ToyStorage) else storage.array.data
    return memory[offset : offset + nbytes]


def create_backend() -> ToyBackend:
    """The ``tensorferry.backends`` entry point's factory."""
    return ToyBackend()
