"""The one translation of wgpu failures into tensorferry's documented errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorferry import Device, DeviceLostError, OutOfDeviceMemoryError, TensorferryError
from tensorferry_webgpu._native import MapError, device_is_lost

if TYPE_CHECKING:
    import wgpu

__all__ = ["WebGPUError", "translate"]


class WebGPUError(TensorferryError, RuntimeError):
    """wgpu refused work that tensorferry submitted, for a reason that is neither a
    lost device nor a lack of memory (the message carries wgpu's own)."""


def translate(
    exc: BaseException, device: Device, gpu: wgpu.GPUDevice, *, allocating: bool = False
) -> BaseException:
    """The error to raise for ``exc``, raised by wgpu while working on ``device``.

    A lost device gives :class:`DeviceLostError`; a failed allocation (or any
    failure that names memory) :class:`OutOfDeviceMemoryError`; any other wgpu
    failure :class:`WebGPUError`. tensorferry's own errors and errors that are
    not wgpu's (bad input, interrupts, host ``MemoryError``) come back unchanged.
    """
    if isinstance(exc, TensorferryError) or not _from_wgpu(exc):
        return exc
    text = str(exc).lower()
    if "lost" in text or ("destroyed" in text and "device" in text) or device_is_lost(gpu):
        return DeviceLostError(f"the WebGPU device behind {device} was lost: {exc}")
    if allocating or "memory" in text:
        return OutOfDeviceMemoryError(f"{device} is out of memory: {exc}")
    return WebGPUError(f"wgpu refused work on {device}: {exc}")


def _from_wgpu(exc: BaseException) -> bool:
    if isinstance(exc, MapError):
        return True
    import wgpu

    return isinstance(exc, wgpu.GPUError)
