"""Fixtures and test doubles for the core unit tests.

The doubles are real: every copy they are given moves bytes, so a test checks the
data and, through :class:`RecordingTransfer`, which transfer was called with what.
:class:`AcceleratorBackend` is a fake accelerator whose memory (:class:`DeviceMemory`)
is *not* host memory, so the core cannot take a shortcut through numpy.

Tests reach the doubles through fixtures (``make_accelerator``, ``recording_cpu``)
rather than by importing this module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as installed_entry_points
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest

import tensorferry.registry
from tensorferry import (
    ENTRY_POINT_GROUP,
    ClosedError,
    CopyPair,
    DataTransferManager,
    Device,
    DeviceType,
    Environment,
    HostStorage,
    IDataTransfer,
    Tensor,
)
from tensorferry_cpu import CpuDataTransfer

ALL_DIRECTIONS = frozenset({"up", "down", "within"})
"""What an :class:`AcceleratorTransfer` claims by default: host -> device, device -> host
and device -> device of its own backend."""


@attrs.define(eq=False)
class DeviceMemory:
    """Memory of a fake accelerator device: a private byte buffer, not a HostStorage."""

    device: Device
    buffer: npt.NDArray[np.uint8]
    writable: bool = True
    closed: bool = False

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)


def _bytes_of(tensor: Tensor) -> npt.NDArray[np.uint8]:
    storage = tensor.storage
    if isinstance(storage, HostStorage):
        memory = storage.array
    elif isinstance(storage, DeviceMemory):
        if storage.closed:
            raise ClosedError(f"{tensor!r} lives in released device memory")
        memory = storage.buffer
    else:
        raise TypeError(f"unexpected storage {type(storage).__name__}")
    return memory[tensor.offset : tensor.offset + tensor.nbytes]


class RecordingTransfer:
    """Delegates to ``inner`` and records every batch (``calls``) and close (``events``)."""

    def __init__(self, inner: IDataTransfer, label: str, events: list[str]) -> None:
        self.inner = inner
        self.label = label
        self.events = events
        self.calls: list[list[CopyPair]] = []

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return self.inner.can_copy(src_device, dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        self.calls.append(list(pairs))
        self.events.append(f"copy {self.label}")
        self.inner.copy_tensors(pairs)

    def close(self) -> None:
        self.events.append(f"close transfer {self.label}")
        self.inner.close()

    def __repr__(self) -> str:
        return f"RecordingTransfer({self.label!r})"


class AcceleratorTransfer:
    """Copies between host memory and the devices of one fake backend.

    ``directions`` says which of ``"up"`` (host -> device), ``"down"`` (device ->
    host) and ``"within"`` (device -> device, same backend) it claims.
    """

    def __init__(self, backend: str, directions: Collection[str] = ALL_DIRECTIONS) -> None:
        self.backend = backend
        self.directions = frozenset(directions)
        self.closed = False

    def _side(self, device: Device) -> str | None:
        if device.is_host:
            return "host"
        return "device" if device.backend == self.backend else None

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        direction = {
            ("host", "device"): "up",
            ("device", "host"): "down",
            ("device", "device"): "within",
        }.get((self._side(src_device), self._side(dst_device)))
        return direction in self.directions

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        if self.closed:
            raise ClosedError(f"the {self.backend} transfer is closed")
        for src, dst in pairs:
            assert self.can_copy(src.device, dst.device), (src, dst)
            np.copyto(_bytes_of(dst), _bytes_of(src))

    def close(self) -> None:
        self.closed = True


class AcceleratorBackend:
    """A fake accelerator backend with ``device_count`` GPUs.

    Fresh memory is filled with ``0xCD`` so that tests notice data that was never
    written. ``close()`` releases every allocation (their ``closed`` turns true).
    With ``fresh_transfers`` each ``data_transfers()`` call builds new transfer
    objects, which the Backend protocol allows.
    """

    def __init__(
        self,
        name: str,
        events: list[str],
        *,
        device_count: int = 1,
        directions: Collection[str] = ALL_DIRECTIONS,
        fresh_transfers: bool = False,
    ) -> None:
        self.name = name
        self.events = events
        self.directions = directions
        self.fresh_transfers = fresh_transfers
        self.transfer = self._new_transfer()
        self.handed_out: list[RecordingTransfer] = []
        self.allocations: list[DeviceMemory] = []
        self.closed = False
        self._devices = [
            Device(name, i, DeviceType.GPU, vendor_id=0x1234, device_id=i, name=f"fake {name} {i}")
            for i in range(device_count)
        ]

    def _new_transfer(self) -> RecordingTransfer:
        return RecordingTransfer(
            AcceleratorTransfer(self.name, self.directions), self.name, self.events
        )

    def raw_transfer(self, directions: Collection[str]) -> AcceleratorTransfer:
        """A further, unrecorded transfer for this backend's devices."""
        return AcceleratorTransfer(self.name, directions)

    def devices(self) -> list[Device]:
        return list(self._devices)

    def allocate(self, device: Device, nbytes: int) -> DeviceMemory:
        if self.closed:
            raise ClosedError(f"backend {self.name} is closed")
        if device not in self._devices:
            raise ValueError(f"{device} is not a device of {self.name}")
        memory = DeviceMemory(device, np.full(nbytes, 0xCD, dtype=np.uint8))
        self.allocations.append(memory)
        return memory

    def data_transfers(self) -> list[RecordingTransfer]:
        transfer = self._new_transfer() if self.fresh_transfers else self.transfer
        self.handed_out.append(transfer)
        return [transfer]

    def close(self) -> None:
        self.events.append(f"close backend {self.name}")
        self.closed = True
        for memory in self.allocations:
            memory.closed = True

    def tensor(self, array: npt.ArrayLike, index: int = 0) -> Tensor:
        """An ownerless tensor on device ``index`` holding a copy of ``array``."""
        data = np.ascontiguousarray(array)
        memory = self.allocate(self._devices[index], data.nbytes)
        memory.buffer[:] = data.reshape(-1).view(np.uint8)
        return Tensor(memory, data.shape, data.dtype)

    @staticmethod
    def read(tensor: Tensor) -> npt.NDArray[Any]:
        """The current contents of a tensor in device memory, read directly."""
        return _bytes_of(tensor).copy().view(tensor.dtype).reshape(tensor.shape)


@pytest.fixture
def events() -> list[str]:
    """A shared log the doubles append ``"copy X"``, ``"close transfer X"``... to."""
    return []


@pytest.fixture
def make_accelerator(events: list[str]) -> Callable[..., AcceleratorBackend]:
    """Build a fake accelerator backend that logs into ``events``."""

    def make(name: str, **options: Any) -> AcceleratorBackend:
        return AcceleratorBackend(name, events, **options)

    return make


@pytest.fixture
def make_cpu_transfer(events: list[str]) -> Callable[[str], RecordingTransfer]:
    """Build a recorded instance of the cpu backend's real transfer, named ``label``."""

    def make(label: str) -> RecordingTransfer:
        return RecordingTransfer(CpuDataTransfer(), label, events)

    return make


@pytest.fixture
def recording_cpu(make_cpu_transfer: Callable[[str], RecordingTransfer]) -> RecordingTransfer:
    """The cpu backend's real transfer, recorded as ``"cpu"``."""
    return make_cpu_transfer("cpu")


@pytest.fixture
def manager() -> Iterator[DataTransferManager]:
    """A manager built alone (no owning environment), closed afterwards."""
    result = DataTransferManager()
    yield result
    result.close()


@pytest.fixture
def env() -> Iterator[Environment]:
    """An environment restricted to the cpu backend, closed afterwards."""
    with Environment(backends=["cpu"]) as result:
        yield result


@pytest.fixture
def cpu_entry_point() -> EntryPoint:
    """The installed ``cpu`` entry point of the ``tensorferry.backends`` group."""
    return installed_entry_points(group=ENTRY_POINT_GROUP)["cpu"]


@pytest.fixture
def installed_backends(
    monkeypatch: pytest.MonkeyPatch, cpu_entry_point: EntryPoint
) -> Callable[..., None]:
    """Make environments see exactly the cpu entry point plus the given ones."""

    def install(*extra: EntryPoint) -> None:
        def fake_entry_points(*, group: str) -> list[EntryPoint]:
            return [cpu_entry_point, *extra] if group == ENTRY_POINT_GROUP else []

        monkeypatch.setattr(tensorferry.registry, "entry_points", fake_entry_points)

    return install
