"""A complete backend in one file: a pretend accelerator with one device whose memory
is a private numpy buffer, registered at run time and used like any other.

A real backend registers its factory under the ``tensorferry.backends`` entry point
group instead (see the README and ``tests/toy_backend``), then runs the shipped
conformance suite: ``python -m pytest --pyargs tensorferry.conformance
--tensorferry-backend=NAME``.

Run: ``python examples/writing_a_backend.py``
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

import tensorferry as tf

NAME = "vault"
DEVICE = tf.Device(NAME, 0, tf.DeviceType.NPU, name="a pretend accelerator")


class VaultStorage:
    """Memory of the pretend device: a private byte buffer (not host memory)."""

    def __init__(self, nbytes: int) -> None:
        self.buffer: npt.NDArray[np.uint8] | None = np.zeros(nbytes, np.uint8)
        self.device = DEVICE
        self.nbytes = nbytes
        self.writable = True

    @property
    def closed(self) -> bool:
        """True once the backend has released the memory."""
        return self.buffer is None


def _bytes(tensor: tf.Tensor) -> npt.NDArray[np.uint8]:
    storage = tensor.storage
    if isinstance(storage, tf.HostStorage):
        memory = storage.array
    elif isinstance(storage, VaultStorage) and storage.buffer is not None:
        memory = storage.buffer
    else:
        raise tf.ClosedError(f"{tensor!r} is not live vault or host memory")
    return memory[tensor.offset : tensor.offset + tensor.nbytes]


class VaultTransfer:
    """Copies host <-> vault and vault -> vault."""

    def __init__(self) -> None:
        self.closed = False

    def can_copy(self, src_device: tf.Device, dst_device: tf.Device) -> bool:
        """True when both ends are the vault device or host memory, and one is the vault."""
        ends = {src_device, dst_device}
        return DEVICE in ends and ends <= {DEVICE, tf.HOST}

    def copy_tensors(self, pairs: Sequence[tf.CopyPair]) -> None:
        """Copy each pair in order; raises ClosedError after close."""
        if self.closed:
            raise tf.ClosedError("the vault transfer is closed")
        for src, dst in pairs:
            np.copyto(_bytes(dst), _bytes(src).copy())  # copy() makes overlaps safe

    def close(self) -> None:
        """Refuse further copies."""
        self.closed = True


class VaultBackend:
    """The backend object: devices, allocation, transfers, close."""

    name = NAME

    def __init__(self) -> None:
        self.transfer = VaultTransfer()
        self.allocations: list[VaultStorage] = []

    def devices(self) -> list[tf.Device]:
        """The one device."""
        return [DEVICE]

    def allocate(self, device: tf.Device, nbytes: int) -> VaultStorage:
        """Fresh memory on the vault; UnknownDeviceError for another device."""
        if device != DEVICE:
            raise tf.UnknownDeviceError(f"{device} is not a vault device")
        storage = VaultStorage(nbytes)
        self.allocations.append(storage)
        return storage

    def data_transfers(self) -> list[VaultTransfer]:
        """The transfers to register."""
        return [self.transfer]

    def close(self) -> None:
        """Release every allocation."""
        for storage in self.allocations:
            storage.buffer = None


def main() -> None:
    """Register the backend and move data through it."""
    with tf.Environment() as env:
        env.register_backend(NAME, VaultBackend())
        data = np.arange(10, dtype=np.int32)
        tensor = env.from_numpy(data, "vault")  # or env.device("npu"): the first NPU
        assert env.device("npu") == tensor.device
        np.testing.assert_array_equal(np.asarray(tensor[2:5]), data[2:5])
        print(f"{tensor!r} holds {tensor.numpy().tolist()}")


if __name__ == "__main__":
    main()
