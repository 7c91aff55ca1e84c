"""Opening a wgpu device on an adapter for tensorferry: the features and limits it
asks for, and what a failure to open one raises."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tensorferry import ClosedError, Device
from tensorferry_webgpu._context import MAPPABLE, offers_host_accessible, wants_mapped_storage
from tensorferry_webgpu._errors import WebGPUError

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._options import ContextOptions

__all__ = ["open_device"]


def open_device(
    adapter: wgpu.GPUAdapter, device: Device, options: ContextOptions
) -> wgpu.GPUDevice:
    """A new wgpu device on ``adapter`` with the adapter's own buffer limits.

    Raises :class:`ClosedError` when Python refuses the thread wgpu starts for
    the device (at interpreter shutdown) and :class:`WebGPUError` when wgpu
    cannot create it (an adapter that lacks what WebGPU needs, such as compute
    shaders on some OpenGL contexts).
    """
    limits = adapter.limits
    # After wgpu is imported: it installs its own logger class for "wgpu".
    logging.getLogger("wgpu").addFilter(_QUIET)  # adding the same filter twice is a no-op
    try:
        return adapter.request_device_sync(
            label=f"tensorferry {device}",
            # Host-accessible memory needs it; device memory is made mappable
            # only where wants_mapped_storage says so.
            required_features=[MAPPABLE]
            if offers_host_accessible(options, adapter) or wants_mapped_storage(options, adapter)
            else [],
            required_limits={
                "max-buffer-size": limits["max-buffer-size"],
                "max-storage-buffer-binding-size": limits["max-storage-buffer-binding-size"],
            },
        )
    except RuntimeError as exc:
        if "shutdown" in str(exc):
            raise ClosedError(
                f"cannot open {device} while the interpreter shuts down: wgpu starts a "
                "thread for each device, which Python refuses now; use the device once "
                "before the main thread ends"
            ) from exc
        raise WebGPUError(
            f"wgpu could not open a device on {device} ({adapter.summary}): {exc}; "
            "choose another device (tensorferry devices lists them)"
        ) from exc


class _DeliberateFeature(logging.Filter):
    """Drops wgpu's warning that mappable-primary-buffers is on for a discrete GPU.

    The warning is about GPU work on mappable buffers, which live in slower
    memory there. tensorferry asks for the feature only for host-accessible
    tensors, whose buffers are copy endpoints; device tensors never get map
    usage on a discrete GPU. The warning would otherwise greet every user.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "MAPPABLE_PRIMARY_BUFFERS enabled on a discrete gpu" not in record.getMessage()


_QUIET = _DeliberateFeature()
