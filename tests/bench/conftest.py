"""Fixtures of the benchmark's tests: a private XDG runtime directory for Mesa, and
``faulty_path``, the bench's tensorferry path on a real backend whose transfer adds 1
to the last byte of every copy in one direction, so that every case it runs delivers wrong data.

The faulty backend is a complete tensorferry backend (memory in ``bytearray``\\ s, a
transfer that copies host <-> device and within the device); the only thing wrong
with it is that byte, which is what the tests plant.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence

import pytest

import tensorferry as tf
from tensorferry.bench._tensorferry import TensorferryPath


@pytest.fixture(autouse=True, scope="session")
def _xdg_runtime_dir() -> None:
    # Mesa's GL driver writes "XDG_RUNTIME_DIR is invalid" to stderr without one.
    path = os.environ.get("XDG_RUNTIME_DIR", "")
    if not path or not os.path.isdir(path):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tensorferry-xdg-")


class FaultyStorage:
    """Device memory of the faulty backend: one ``bytearray``."""

    def __init__(self, device: tf.Device, nbytes: int) -> None:
        self.device = device
        self.nbytes = nbytes
        self.writable = True
        self.closed = False
        self.memory = bytearray(nbytes)


def _bytes_of(tensor: tf.Tensor) -> memoryview:
    storage = tensor.storage
    if isinstance(storage, FaultyStorage):
        memory = memoryview(storage.memory)
    elif isinstance(storage, tf.HostStorage):
        memory = storage.array.data.cast("B")
    else:
        raise TypeError(f"the faulty transfer copies faulty and host memory only, got {tensor!r}")
    return memory[tensor.offset : tensor.offset + tensor.nbytes]


class FaultyTransfer:
    """Copies host <-> device and device -> device byte for byte, except that copies
    whose destination is in ``faulty_side`` (``"device"`` or ``"host"``) get 1 added to
    their last byte."""

    def __init__(self, device: tf.Device, faulty_side: str | None) -> None:
        self._device = device
        self._faulty_side = faulty_side

    def can_copy(self, src_device: tf.Device, dst_device: tf.Device) -> bool:
        """Host <-> the faulty device, and within it."""
        return self._device in (src_device, dst_device) and all(
            d.is_host or d == self._device for d in (src_device, dst_device)
        )

    def copy_tensors(self, pairs: Sequence[tf.CopyPair]) -> None:
        """Copy every pair in order, flipping where the fault is."""
        for src, dst in pairs:
            target = _bytes_of(dst)
            target[:] = bytes(_bytes_of(src))
            side = "host" if dst.device.is_host else "device"
            if side == self._faulty_side and len(target):
                target[-1] = (target[-1] + 1) % 256  # twice is still wrong

    def close(self) -> None:
        """Nothing to release."""


class FaultyBackend:
    """One NPU, ``faulty:0``, whose transfer corrupts copies into ``faulty_side``
    (None: a correct backend, the control)."""

    name = "faulty"

    def __init__(self, faulty_side: str | None) -> None:
        self.device = tf.Device("faulty", 0, tf.DeviceType.NPU, name="faulty NPU")
        self._transfer = FaultyTransfer(self.device, faulty_side)

    def devices(self) -> list[tf.Device]:
        """The one device."""
        return [self.device]

    def allocate(self, device: tf.Device, nbytes: int) -> FaultyStorage:
        """Zeroed memory."""
        return FaultyStorage(device, nbytes)

    def data_transfers(self) -> list[FaultyTransfer]:
        """The faulty transfer."""
        return [self._transfer]

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def faulty_path() -> Iterator[Callable[[str | None], TensorferryPath]]:
    """``faulty_path(side)``: the bench's tensorferry path on ``faulty:0`` of a fresh
    environment, whose copies into ``side`` are corrupted (None: none are)."""
    opened: list[TensorferryPath] = []

    def make(side: str | None) -> TensorferryPath:
        env = tf.Environment(backends=["cpu"])
        backend = FaultyBackend(side)
        env.register_backend("faulty", backend)
        path = TensorferryPath(env, backend.device)
        opened.append(path)
        return path

    yield make
    for path in opened:
        path.close()
