"""DLPack: hand tensors to other array libraries and take theirs, without copying host memory.

tensorferry speaks the DLPack 1.x Python protocol (``__dlpack__`` with
``stream``, ``max_version``, ``dl_device`` and ``copy``; ``__dlpack_device__``)
by going through numpy rather than building capsules by hand: a host tensor is
exported as the capsule of a numpy view over its storage, and an import is
``numpy.from_dlpack``. numpy then owns the capsule's layout, versioning (a
versioned capsule when the consumer asks for DLPack 1.x, the legacy one
otherwise) and lifetime rules.

Memory that is not host memory (a WebGPU buffer) has no address a capsule could
carry; such tensors report their own device (``kDLWebGPU`` for the webgpu
backend) and export a host copy when the consumer asks for the CPU
(``dl_device=(1, 0)``, which ``numpy.from_dlpack(t, device="cpu")`` does).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from tensorferry.errors import InvalidArrayError

if TYPE_CHECKING:
    from tensorferry.device import Device
    from tensorferry.tensor import Tensor

__all__ = ["DEVICE_TYPE_PROPERTY", "DLDeviceType", "dlpack_device", "export", "host_array_from"]

DEVICE_TYPE_PROPERTY = "dlpack_device_type"
"""The :class:`~tensorferry.Device` property in which a backend declares its DLPack
device type (an int); accelerators that do not declare one report ``kDLExtDev``."""


class DLDeviceType(enum.IntEnum):
    """The DLPack device types tensorferry uses (values from ``dlpack.h``)."""

    CPU = 1
    CUDA = 2
    CUDA_HOST = 3
    EXT_DEV = 12
    ROCM_HOST = 11
    WEBGPU = 15


_HOST_TYPES = frozenset({DLDeviceType.CPU, DLDeviceType.CUDA_HOST, DLDeviceType.ROCM_HOST})
"""Device types whose memory the host addresses directly, so numpy can import it."""


def dlpack_device(device: Device) -> tuple[int, int]:
    """``(device type, index)`` of ``device`` as DLPack names it: ``(1, 0)`` for host memory,
    the backend's declared :data:`DEVICE_TYPE_PROPERTY` (``kDLExtDev`` if none) otherwise."""
    if device.is_host:
        return (int(DLDeviceType.CPU), 0)
    declared = device.property(DEVICE_TYPE_PROPERTY, int(DLDeviceType.EXT_DEV))
    return (int(declared), device.index)


def export(
    tensor: Tensor,
    *,
    stream: object = None,
    max_version: tuple[int, int] | None = None,
    dl_device: tuple[int, int] | None = None,
    copy: bool | None = None,
) -> Any:
    """The DLPack capsule of ``tensor`` (what :meth:`Tensor.__dlpack__` returns).

    Host tensors are exported without a copy (unless ``copy=True``); other
    tensors only as a host copy, when ``dl_device`` is the CPU and ``copy`` is
    not ``False``. Raises ``BufferError`` when the export is impossible as asked
    (device memory without ``dl_device=(1, 0)``, or ``copy=False`` where a copy
    is needed), ``ValueError`` for a ``stream`` (host memory and tensorferry's
    synchronous copies have none) or a malformed ``dl_device``.
    """
    if stream is not None:
        raise ValueError(
            f"stream must be None: tensorferry's copies are complete when they return and host "
            f"memory has no stream, got stream={stream!r}"
        )
    own = dlpack_device(tensor.device)
    if dl_device is not None:
        dl_device = _device_tuple(dl_device)
    wants_host = dl_device is not None and dl_device[0] == DLDeviceType.CPU
    if dl_device is not None and dl_device != own and not wants_host:
        raise BufferError(
            f"cannot export {tensor!r} to DLPack device {dl_device}: tensorferry exports to "
            f"its own device {own} or to the CPU (1, 0) only"
        )
    if tensor.device.is_host:
        array: npt.NDArray[Any] = tensor.host_array()
    elif wants_host:
        if copy is False:
            raise BufferError(
                f"{tensor!r} is in {tensor.device} memory, so a CPU export needs a copy, "
                "but copy=False was asked"
            )
        array, copy = tensor.numpy(), None  # a fresh array: no second copy
    else:
        raise BufferError(
            f"{tensor!r} lives in {tensor.device} memory, which has no address a DLPack "
            "capsule can carry; ask for a host copy with dl_device=(1, 0) (for example "
            "numpy.from_dlpack(t, device='cpu')), or use t.numpy()"
        )
    return array.__dlpack__(max_version=max_version, copy=copy)


def _device_tuple(value: object) -> tuple[int, int]:
    try:
        kind, index = cast("tuple[int, int]", value)
        return (int(kind), int(index))
    except (TypeError, ValueError):
        raise ValueError(
            f"dl_device must be a (device type, device index) pair of ints, got {value!r}"
        ) from None


def host_array_from(producer: object) -> npt.NDArray[Any]:
    """A numpy array sharing the memory of a DLPack producer in host memory (no copy).

    Raises ``TypeError`` when ``producer`` does not implement the DLPack protocol
    (``__dlpack__`` and ``__dlpack_device__``), :class:`InvalidArrayError` (a
    ``ValueError``) when its memory is not host memory or numpy cannot import it
    (an unsupported DLPack version or dtype; the message carries numpy's reason).
    """
    if not (hasattr(producer, "__dlpack__") and hasattr(producer, "__dlpack_device__")):
        raise TypeError(
            f"expected a DLPack producer (an object with __dlpack__ and __dlpack_device__, "
            f"such as a numpy array or a torch tensor), got {type(producer).__name__}"
        )
    kind, index = _device_tuple(producer.__dlpack_device__())
    if kind not in _HOST_TYPES:
        name = DLDeviceType(kind).name if kind in DLDeviceType._value2member_map_ else "unknown"
        raise InvalidArrayError(
            f"the {type(producer).__name__} is in memory of DLPack device ({kind}, {index}) "
            f"({name}), not host memory; from_dlpack imports host memory (kDLCPU = 1) only: "
            "move it to the CPU with its own library first"
        )
    try:
        return np.from_dlpack(producer)
    except (BufferError, TypeError, ValueError, RuntimeError) as exc:
        raise InvalidArrayError(
            f"numpy cannot import the {type(producer).__name__} through DLPack: {exc}"
        ) from exc
