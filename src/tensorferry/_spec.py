"""Device spec strings: ``"cpu"``, ``"webgpu"``, ``"webgpu:1"``, ``"gpu"``, ``"llvmpipe"``.

One grammar, parsed strictly in one place, so that every entry point that takes
a device string accepts and refuses the same things::

    spec  := name ":" index [":" "host"] | text
    name  := one or more characters other than ":" and whitespace
    index := "0" | a digit 1-9 followed by digits      (no sign, no leading zeros)
    text  := anything without ":"  (a backend name, a device type, or text in a
                                    device's name: the environment decides)

Surrounding whitespace is ignored and specs are case-insensitive (``" WebGPU:0 "``
is ``"webgpu:0"``); ``":host"`` after an index names the device's
host-accessible memory (``MemoryKind.HOST_ACCESSIBLE``); an indexed spec
with whitespace inside (``"webgpu : 0"``) is refused with a message saying
so. To add a form, extend :class:`DeviceSpec` and :func:`parse_device_spec`;
callers only see those.
"""

from __future__ import annotations

import re

import attrs

from tensorferry.device import MemoryKind
from tensorferry.errors import UnknownDeviceError

__all__ = ["DeviceSpec", "normalize_backend_name", "parse_device_spec"]

_EXPECTED = (
    "expected 'backend' or 'backend:index' (such as 'cpu', 'webgpu' or 'webgpu:1'), "
    "'backend:index:host' for host-accessible memory (such as 'webgpu:0:host'), "
    "a device type such as 'gpu', or text in a device's name"
)
_NAME = re.compile(r"[^\s:]+")
_INDEX = re.compile(r"0|[1-9][0-9]*", re.ASCII)


@attrs.frozen
class DeviceSpec:
    """A parsed device string: a backend name (or, without index, any text the
    environment matches against backend names, device types and device names)
    and, optionally, a device index and the memory kind (``":host"`` after the
    index: :attr:`MemoryKind.HOST_ACCESSIBLE`)."""

    backend: str
    index: int | None = None
    memory: MemoryKind = MemoryKind.DEFAULT


def normalize_backend_name(name: str) -> str:
    """A backend name as the registry keys it: stripped and lower-case.

    Raises ``TypeError`` for a non-string, :class:`UnknownDeviceError` for an
    empty name or one with whitespace or ``":"`` inside.
    """
    if not isinstance(name, str):
        raise TypeError(f"a backend name must be a str, got {type(name).__name__}")
    text = name.strip().lower()
    if not _NAME.fullmatch(text):
        raise UnknownDeviceError(
            f"{name!r} is not a backend name; expected a non-empty name without "
            "whitespace or ':', such as 'cpu' or 'webgpu'"
        )
    return text


def parse_device_spec(spec: str) -> DeviceSpec:
    """Parse ``"name"``, ``"name:index"`` or ``"name:index:host"`` (grammar: module docstring).

    Raises ``TypeError`` when ``spec`` is not a string and
    :class:`UnknownDeviceError` (a ``LookupError``) naming what was wrong and
    what was expected when it does not follow the grammar.
    """
    if not isinstance(spec, str):
        raise TypeError(f"a device spec must be a str or a Device, got {type(spec).__name__}")
    text = spec.strip().lower()
    if not text:
        raise UnknownDeviceError(f"the device spec {spec!r} is empty; {_EXPECTED}")
    name, colon, index = text.partition(":")
    if not colon:
        return DeviceSpec(text)
    if any(c.isspace() for c in text):
        raise UnknownDeviceError(
            f"the device spec {spec!r} has whitespace inside; {_EXPECTED}, without spaces"
        )
    if not _NAME.fullmatch(name):
        raise UnknownDeviceError(f"the device spec {spec!r} has no backend name; {_EXPECTED}")
    index, colon, kind = index.partition(":")
    memory = MemoryKind.DEFAULT
    if colon:
        if kind != "host":
            raise UnknownDeviceError(
                f"the device spec {spec!r} has memory kind {kind!r}; the only memory kind "
                f"a spec names is 'host' (host-accessible memory); {_EXPECTED}"
            )
        memory = MemoryKind.HOST_ACCESSIBLE
    if not _INDEX.fullmatch(index):
        raise UnknownDeviceError(
            f"the device spec {spec!r} has index {index!r}, not a non-negative integer "
            f"written in digits without sign or leading zeros; {_EXPECTED}"
        )
    return DeviceSpec(name, int(index), memory)
