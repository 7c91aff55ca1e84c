"""tensorferry: move tensors between host memory and accelerator memory.

One abstraction (:class:`IDataTransfer`, :class:`DataTransferManager`,
:class:`Environment`) with pluggable backends discovered through the
``tensorferry.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorferry.backend import (
        Backend,
        BackendFactory,
        Filler,
        MemoryUsage,
        RawAccess,
        Synchronizer,
    )
    from tensorferry.device import HOST, Device, DeviceType, MemoryKind, PropertyValue
    from tensorferry.environment import Environment
    from tensorferry.errors import (
        BackendUnavailableError,
        ClosedError,
        DeviceLostError,
        ForeignTensorError,
        IncompatibleTensorsError,
        InvalidArrayError,
        MappedError,
        NoTransferError,
        OutOfDeviceMemoryError,
        TensorferryError,
        UnknownDeviceError,
        UnsupportedDtypeError,
    )
    from tensorferry.handle import CopyHandle
    from tensorferry.manager import DataTransferManager
    from tensorferry.policy import DevicePolicy, DevicePolicyDelegate
    from tensorferry.registry import ENTRY_POINT_GROUP
    from tensorferry.storage import HostStorage, MappableStorage, Storage
    from tensorferry.tensor import Tensor
    from tensorferry.transfer import (
        AsyncDataTransfer,
        CompletedTransfer,
        CopyPair,
        IDataTransfer,
        TransferHandle,
    )

__version__ = "0.1.0"

# What tensorferry logs (backends that fail to load, devices chosen and why,
# copies routed through host memory) shows only where the application
# configures logging: never through logging's last-resort stderr handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# Names load on first use (PEP 562), so that importing the package -- which the
# conformance plugin's pytest11 entry point does in every pytest run -- costs
# nothing until tensorferry is actually used.
_HOMES = {
    "Backend": "backend",
    "BackendFactory": "backend",
    "Filler": "backend",
    "MemoryUsage": "backend",
    "RawAccess": "backend",
    "Synchronizer": "backend",
    "HOST": "device",
    "Device": "device",
    "DeviceType": "device",
    "MemoryKind": "device",
    "PropertyValue": "device",
    "ENTRY_POINT_GROUP": "registry",
    "Environment": "environment",
    "BackendUnavailableError": "errors",
    "ClosedError": "errors",
    "DeviceLostError": "errors",
    "ForeignTensorError": "errors",
    "IncompatibleTensorsError": "errors",
    "InvalidArrayError": "errors",
    "MappedError": "errors",
    "NoTransferError": "errors",
    "OutOfDeviceMemoryError": "errors",
    "TensorferryError": "errors",
    "UnknownDeviceError": "errors",
    "UnsupportedDtypeError": "errors",
    "CopyHandle": "handle",
    "DataTransferManager": "manager",
    "DevicePolicy": "policy",
    "DevicePolicyDelegate": "policy",
    "HostStorage": "storage",
    "MappableStorage": "storage",
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
    "DevicePolicy",
    "DevicePolicyDelegate",
    "DeviceType",
    "Environment",
    "Filler",
    "ForeignTensorError",
    "HostStorage",
    "IDataTransfer",
    "IncompatibleTensorsError",
    "InvalidArrayError",
    "MappableStorage",
    "MappedError",
    "MemoryKind",
    "MemoryUsage",
    "NoTransferError",
    "OutOfDeviceMemoryError",
    "PropertyValue",
    "RawAccess",
    "Storage",
    "Synchronizer",
    "Tensor",
    "TensorferryError",
    "TransferHandle",
    "UnknownDeviceError",
    "UnsupportedDtypeError",
    "__version__",
]
