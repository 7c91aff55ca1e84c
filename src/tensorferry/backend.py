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

__all__ = ["Backend", "BackendFactory", "Filler"]


@runtime_checkable
class Backend(Protocol):
    """One family of devices: their list, their memory and the transfers between them.

    * ``devices()`` lists the backend's devices best first (index ``i`` is
      ``"name:i"``); every device's ``backend`` is the backend's name.
    * ``allocate(device, nbytes)`` returns fresh storage on one of those devices;
      it raises ``MemoryError`` (:class:`~tensorferry.errors.OutOfDeviceMemoryError`)
      when the device cannot hold it, and ``LookupError``
      (:class:`~tensorferry.errors.UnknownDeviceError`) for a device it does not own.
    * ``data_transfers()`` returns the transfers to register, each claiming only
      pairs between the backend's own devices and host memory
      (:data:`tensorferry.HOST`).
    * ``close()`` releases contexts and memory. The environment calls it after
      closing the backend's transfers; it is idempotent.
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


BackendFactory: TypeAlias = "Callable[[], Backend]"
"""What a ``tensorferry.backends`` entry point refers to."""
