"""tensorferry's pinned memory: copies between host-accessible tensors and the device.

The counterpart of ``torch-cuda-pinned``: the host data sits in a tensor of the
device's ``HOST_ACCESSIBLE`` twin (filled once through ``Tensor.mapped()``), and
a run is the device-side copy alone, one DMA, waited for as every peer's is.
"""

from __future__ import annotations

import numpy as np

import tensorferry as tf

from ._path import Case, FunctionCase, PathUnavailableError
from ._workload import HostData, Op, Workload, poison

__all__ = ["HostAccessiblePath"]

_MEASURED = {
    Op.UPLOAD: "Environment.copy_tensor(host-accessible tensor, device tensor), then "
    "Environment.synchronize(device) to wait for the device",
    Op.DOWNLOAD: "Environment.copy_tensor(device tensor, host-accessible tensor), then "
    "Environment.synchronize(device) to wait for the device",
}


class HostAccessiblePath:
    """Uploads from and downloads into host-accessible memory of the device under test.

    Raises :class:`PathUnavailableError` when the device has no host-accessible twin
    (an adapter without ``mappable-primary-buffers``, or no device at all).
    """

    name = "tensorferry-host-accessible"

    def __init__(self, environment: tf.Environment, device: tf.Device | None) -> None:
        if device is None:
            raise PathUnavailableError("tensorferry has no device here")
        try:
            self._host = environment.device(
                f"{device.backend}:{device.index}", memory=tf.MemoryKind.HOST_ACCESSIBLE
            )
        except tf.UnknownDeviceError as exc:
            raise PathUnavailableError(f"{device} has no host-accessible memory: {exc}") from exc
        self._env = environment
        self._device = device
        self.device_name = f"{self._host} ({self._host.name})"

    def describe(self, op: Op) -> str | None:
        """What ``op`` calls; only single uploads and downloads are measured."""
        return _MEASURED.get(op)

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """A host-accessible tensor holding ``data.source`` (or the destination's
        poison) and a device tensor, for one tensor of ``workload.nbytes``."""
        if workload.op not in _MEASURED or workload.count != 1:
            raise ValueError(f"{self.name} does not measure {workload.op}")
        env, nbytes = self._env, workload.nbytes
        pinned = env.empty((nbytes,), np.uint8, self._host)
        on_device = env.empty((nbytes,), np.uint8, self._device)
        with pinned.mapped() as array:
            array[...] = data.source[0]
            del array
        if workload.op is Op.UPLOAD:
            target = on_device

            def upload() -> None:
                env.copy_tensor(pinned, on_device)
                env.synchronize(self._device)

            def verify_upload() -> None:
                env.fill(target, 0xCD)
                upload()
                data.check(target.numpy().view(np.uint8).reshape(1, nbytes), self.name)

            return FunctionCase(run=upload, verify=verify_upload)
        env.copy_tensor(pinned, on_device)

        def download() -> None:
            env.copy_tensor(on_device, pinned)
            env.synchronize(self._device)

        def verify_download() -> None:
            with pinned.mapped() as array:
                poison(array.view(np.uint8))
                del array
            download()
            with pinned.mapped() as array:
                data.destination[0][...] = array
                del array
            data.check(data.destination, self.name)

        return FunctionCase(run=download, verify=verify_download)

    def close(self) -> None:
        """Nothing of its own: the tensors are garbage collected, the environment is shared."""
