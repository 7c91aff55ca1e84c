"""Exceptions raised by tensorferry and its backends.

Every exception subclasses :class:`TensorferryError` *and* a builtin, so callers
can catch ``ValueError`` or ``LookupError`` without importing tensorferry.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ClosedError",
    "DeviceLostError",
    "ForeignTensorError",
    "IncompatibleTensorsError",
    "InvalidArrayError",
    "MappedError",
    "NoTransferError",
    "OutOfDeviceMemoryError",
    "TensorferryError",
    "UnknownDeviceError",
    "UnsupportedDtypeError",
]


class TensorferryError(Exception):
    """Base class of every error tensorferry raises on purpose."""


class IncompatibleTensorsError(TensorferryError, ValueError):
    """Source and destination do not fit: shape, dtype or byte size differ, or
    the source and destination lists have different lengths."""


class UnsupportedDtypeError(TensorferryError, TypeError):
    """A dtype without a fixed item size (object, unsized string) was given."""


class InvalidArrayError(TensorferryError, ValueError):
    """A numpy array cannot be used as asked: read-only where it would be written,
    not C-contiguous where memory would be shared, or of the wrong shape."""


class ForeignTensorError(TensorferryError, ValueError):
    """A tensor belongs to another environment (or manager) than the one asked to use it."""


class NoTransferError(TensorferryError, LookupError):
    """No registered data transfer can copy between two devices, even through host memory."""


class UnknownDeviceError(TensorferryError, LookupError):
    """A device string or index names no device of the loaded backends."""


class BackendUnavailableError(UnknownDeviceError):
    """A backend is installed (or named) but could not be loaded; the message
    carries the reason and how to install what is missing."""


class ClosedError(TensorferryError, RuntimeError):
    """An environment, transfer, context or tensor storage was used after ``close()``."""


class DeviceLostError(TensorferryError, RuntimeError):
    """The accelerator device behind a tensor was lost (driver reset, device destroyed).

    Storage on the lost device is gone; the backend creates a fresh context on next use.
    """


class OutOfDeviceMemoryError(TensorferryError, MemoryError):
    """An allocation does not fit on the device: larger than its maximum buffer
    size, or the device ran out of memory. The message names the sizes."""


class MappedError(TensorferryError, BufferError):
    """Memory is mapped for the host by a ``tensor.mapped()`` scope, or an array
    from one is still alive, so it cannot be copied (or mapped again) now."""
