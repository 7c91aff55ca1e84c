"""tensorferry: move tensors between host memory and accelerator memory.

One abstraction (:class:`IDataTransfer`, :class:`DataTransferManager`,
:class:`Environment`) with pluggable backends discovered through the
``tensorferry.backends`` entry-point group.
"""

from tensorferry.backend import Backend, BackendFactory, Filler
from tensorferry.device import HOST, Device, DeviceType, MemoryKind
from tensorferry.environment import ENTRY_POINT_GROUP, Environment
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
from tensorferry.manager import DataTransferManager
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

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOST",
    "AsyncDataTransfer",
    "Backend",
    "BackendFactory",
    "BackendUnavailableError",
    "ClosedError",
    "CompletedTransfer",
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
    "NoTransferError",
    "OutOfDeviceMemoryError",
    "Storage",
    "Tensor",
    "TensorferryError",
    "TransferHandle",
    "UnknownDeviceError",
    "UnsupportedDtypeError",
    "__version__",
]
