"""Device identity: which backend owns a piece of memory, and what hardware it is."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final, TypeAlias, TypeVar, overload

import attrs

__all__ = ["HOST", "Device", "DeviceType", "MemoryKind", "PropertyValue"]

PropertyValue: TypeAlias = int | str
"""What a device property holds: an int for quantities (``max_buffer_size``), else a str."""

_T = TypeVar("_T")


class DeviceType(enum.Enum):
    """Kind of processor a device's memory belongs to."""

    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"


class MemoryKind(enum.Enum):
    """Where a device's memory lives, as ONNX Runtime's ``OrtDevice::MemType``.

    ``DEFAULT`` is the device's own memory; ``HOST_ACCESSIBLE`` is memory of the
    device that the host can address directly (pinned or shared memory).
    """

    DEFAULT = "default"
    HOST_ACCESSIBLE = "host_accessible"


def _lower(value: str) -> str:
    return value.lower()


def _properties(
    value: Mapping[str, PropertyValue] | Iterable[tuple[str, PropertyValue]],
) -> tuple[tuple[str, PropertyValue], ...]:
    items = tuple(value.items() if isinstance(value, Mapping) else value)
    for item in items:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], int | str)
        ):
            raise TypeError(
                f"device properties are (str key, int or str value) pairs, got {item!r}"
            )
    return items


@attrs.frozen(order=False, cache_hash=True, repr=False)
class Device:
    """An immutable, hashable description of one device's memory.

    Identity is ``(backend, index, type, memory, vendor_id, device_id)``: two
    backends' memory on the same physical GPU are different devices, because a
    transfer may only claim memory of the backend that owns it (ONNX Runtime
    expresses the same rule through the PCI vendor id). ``name`` and
    ``properties`` are for people choosing a device and take no part in equality.

    ``str(device)`` is ``"backend:index"`` (``"cpu"`` for the host, and
    ``"backend:index:host"`` for host-accessible memory), the form
    :meth:`tensorferry.Environment.device` parses. ``properties`` may be given as
    a mapping or as ``(key, value)`` pairs, values ints or strs (``TypeError``
    otherwise).
    """

    backend: str = attrs.field(converter=_lower)
    index: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    type: DeviceType = DeviceType.CPU
    memory: MemoryKind = MemoryKind.DEFAULT
    vendor_id: int = 0
    device_id: int = 0
    name: str = attrs.field(default="", eq=False)
    properties: tuple[tuple[str, PropertyValue], ...] = attrs.field(
        default=(), eq=False, converter=_properties
    )

    @property
    def is_host(self) -> bool:
        """True for plain host memory, which every transfer can read and write with numpy."""
        return self is HOST or self == HOST

    @overload
    def property(self, key: str) -> PropertyValue: ...
    @overload
    def property(self, key: str, default: _T) -> PropertyValue | _T: ...
    def property(self, key: str, default: object = "") -> object:
        """The value of one descriptive property, or ``default`` (``""``) when it has none.

        Quantities are ints (``"max_buffer_size"``), names are strs
        (``"adapter_type"``, ``"backend_type"``).
        """
        for name, value in self.properties:
            if name == key:
                return value
        return default

    def __str__(self) -> str:
        if self.is_host:
            return "cpu"
        if self.memory is MemoryKind.HOST_ACCESSIBLE:
            return f"{self.backend}:{self.index}:host"
        return f"{self.backend}:{self.index}"

    def __repr__(self) -> str:
        return f"<Device {self} {self.type.name} {self.name!r}>"


HOST: Final = Device("cpu", 0, DeviceType.CPU, MemoryKind.DEFAULT, name="host memory")
"""The host's memory: what ``numpy`` arrays live in and what every backend copies to and from."""
