"""tensorferry: move tensors between host memory and accelerator memory.

One abstraction (:class:`IDataTransfer`, :class:`DataTransferManager`,
:class:`Environment`) with pluggable backends discovered through the
``tensorferry.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorferry.backend import Backend, BackendFactory, Filler, MemoryUsage, RawAccess
    from tensorferry.device import HOST, Device, DeviceType, MemoryKind
    from tensorferry.environment import Environment
    from tensorferry.errors import (
        BackendUnavailableError,
        ClosedError,
        DeviceLostError,
        ForeignTensorError,
        IncompatibleTensorsError,
        InvalidArrayError,
        NoTransferError,
        OutOfDeviceMemoryError,
        TensorferryError,
        UnknownDeviceError,
        UnsupportedDtypeError,
    )
    from tensorferry.handle import CopyHandle
    from tensorferry.manager import DataTransferManager
    from tensorferry.registry import ENTRY_POINT_GROUP
    from tensorferry.storage import HostStorage, Storage
    from tensorferry.tensor import Tensor
    from tensorferry.transfer import (
        AsyncDataTransfer,
        CompletedTransfer,
        CopyPair,
        IDataTransfer,
        TransferHandle,
    )

__version__ = "0.1.0"

# Names load on first use (PEP 562), so that importing the package -- which the
# conformance plugin's pytest11 entry point does in every pytest run -- costs
# nothing until tensorferry is actually used.
_HOMES = {
    "Backend": "backend",
    "BackendFactory": "backend",
    "Filler": "backend",
    "MemoryUsage": "backend",
    "RawAccess": "backend",
    "HOST": "device",
    "Device": "device",
    "DeviceType": "device",
    "MemoryKind": "device",
    "ENTRY_POINT_GROUP": "registry",
    "Environment": "environment",
    "BackendUnavailableError": "errors",
    "ClosedError": "errors",
    "DeviceLostError": "errors",
    "ForeignTensorError": "errors",
    "IncompatibleTensorsError": "errors",
    "InvalidArrayError": "errors",
    "NoTransferError": "errors",
    "OutOfDeviceMemoryError": "errors",
    "TensorferryError": "errors",
    "UnknownDeviceError": "errors",
    "UnsupportedDtypeError": "errors",
    "CopyHandle": "handle",
    "DataTransferManager": "manager",
    "HostStorage": "storage",
    "Storage": "storage",
    "Tensor": "tensor",
    "AsyncDataTransfer": "transfer",
    "CompletedTransfer": "transfer",
    "CopyPair": "transfer",
    "IDataTransfer": "transfer",
    "TransferHandle": "transfer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tensorferry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tensorferry.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ENTRY_POINT_GROUP",
    "HOST",
    "AsyncDataTransfer",
    "Backend",
    "BackendFactory",
    "BackendUnavailableError",
    "ClosedError",
    "CompletedTransfer",
    "CopyHandle",
    "CopyPair",
    "DataTransferManager",
    "Device",
    "DeviceLostError",
    "DeviceType",
    "Environment",
    "Filler",
    "ForeignTensorError",
    "HostStorage",
    "IDataTransfer",
    "IncompatibleTensorsError",
    "InvalidArrayError",
    "MemoryKind",
    "MemoryUsage",
    "NoTransferError",
    "OutOfDeviceMemoryError",
    "RawAccess",
    "Storage",
    "Tensor",
    "TensorferryError",
    "TransferHandle",
    "UnknownDeviceError",
    "UnsupportedDtypeError",
    "__version__",
]
