"""The backend plugin contract: what a package registers under ``tensorferry.backends``.

A backend package exposes, under the entry-point group ``tensorferry.backends``,
a factory that takes no arguments and returns a :class:`Backend`::

    [project.entry-points."tensorferry.backends"]
    mybackend = "my_package:create_backend"

The entry-point name is the backend's name (the ``mybackend`` of
``"mybackend:0"``). Importing the package must be cheap; heavy imports belong
in the factory, which raises :class:`tensorferry.errors.BackendUnavailableError`
with an install hint when something it needs is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from tensorferry.device import Device
    from tensorferry.storage import Storage
    from tensorferry.tensor import Tensor
    from tensorferry.transfer import IDataTransfer

__all__ = ["Backend", "BackendFactory", "Filler", "MemoryUsage", "RawAccess", "Synchronizer"]


@runtime_checkable
class Backend(Protocol):
    """One family of devices: their list, their memory and the transfers between them.

    * ``devices()`` lists the backend's devices best first (index ``i`` is
      ``"name:i"``); every device's ``backend`` is the backend's name.
    * ``allocate(device, nbytes)`` returns fresh storage of exactly ``nbytes``
      bytes (0 included) on one of those devices; it raises ``MemoryError``
      (:class:`~tensorferry.errors.OutOfDeviceMemoryError`) when the device
      cannot hold it, ``LookupError`` (:class:`~tensorferry.errors.UnknownDeviceError`)
      for a device it does not own, ``ValueError`` for a negative size and
      :class:`~tensorferry.errors.ClosedError` after ``close()``. Storage lives
      until the garbage collector takes its last tensor, never shorter than a
      copy that uses it.
    * ``data_transfers()`` returns the transfers to register, each claiming only
      pairs between the backend's own devices and host memory
      (:data:`tensorferry.HOST`).
    * ``close()`` releases contexts and memory (every storage's ``closed``
      turns true). The environment calls it after closing the backend's
      transfers; it is idempotent (a second call returns quietly) and may run
      while another thread is in the middle of a copy.
    """

    @property
    def name(self) -> str:
        """The backend's name, equal to its entry-point name."""
        ...

    def devices(self) -> Sequence[Device]:
        """The backend's devices, best first."""
        ...

    def allocate(self, device: Device, nbytes: int) -> Storage:
        """Fresh, uninitialised storage of ``nbytes`` bytes on ``device``."""
        ...

    def data_transfers(self) -> Sequence[IDataTransfer]:
        """The transfers this backend provides, in the order to register them."""
        ...

    def close(self) -> None:
        """Release everything the backend holds; idempotent."""
        ...


@runtime_checkable
class Filler(Protocol):
    """Optional backend capability: fill a tensor on the device without an upload."""

    def fill(self, tensor: Tensor, pattern: bytes) -> None:
        """Repeat ``pattern`` (one element's bytes) over every element of ``tensor``."""
        ...


@runtime_checkable
class RawAccess(Protocol):
    """Optional backend capability: the bytes of storage, read and written without
    any :class:`~tensorferry.IDataTransfer`.

    The conformance suite uses it to check device-side results independently of
    the transfer under test (a bug symmetric in uploads and downloads passes a
    round trip, not this). It may be slow; it is for tests, not for copies.
    """

    def read_raw(self, storage: Storage, offset: int, nbytes: int) -> bytes:
        """The ``nbytes`` bytes of ``storage`` starting at byte ``offset``.

        Raises ``ValueError`` for a range outside the storage and
        :class:`~tensorferry.errors.ClosedError` for released storage.
        """
        ...

    def write_raw(self, storage: Storage, offset: int, data: bytes) -> None:
        """Write ``data`` into ``storage`` at byte ``offset``, touching nothing else.

        Raises ``ValueError`` for a range outside the storage and
        :class:`~tensorferry.errors.ClosedError` for released storage.
        """
        ...


@runtime_checkable
class MemoryUsage(Protocol):
    """Optional backend capability: how much memory live storage holds on a device.

    Counts the bytes of storage objects that are still alive (not caches a
    backend keeps for reuse), so the suite can check that storage is released
    once the last tensor over it is garbage collected.
    """

    def bytes_in_use(self, device: Device) -> int:
        """Bytes held by live storage on ``device``; raises ``LookupError`` for a
        device the backend does not own."""
        ...


@runtime_checkable
class Synchronizer(Protocol):
    """Optional backend capability: wait for a device's queue.

    A backend whose copies into device memory may return before the device has
    finished them (as WebGPU queues do: later work on the device sees the data,
    the device itself may still be copying) offers it; backends whose copies are
    finished when they return need not.
    """

    def synchronize(self, device: Device) -> None:
        """Return once every copy submitted to ``device`` has finished on it.

        Raises ``LookupError`` for a device the backend does not own,
        :class:`~tensorferry.errors.ClosedError` after ``close()`` and
        :class:`~tensorferry.errors.DeviceLostError` for a lost device.
        """
        ...


BackendFactory: TypeAlias = "Callable[[], Backend]"
"""What a ``tensorferry.backends`` entry point refers to."""
