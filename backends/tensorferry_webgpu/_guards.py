"""Ownership marks on wgpu objects: buffers tensorferry pools refuse a caller's
``destroy()``, devices tensorferry submits to wait for its work before they are
destroyed, and host-accessible buffers carry a mark the copy paths read.

All of it is public wgpu-py API (attributes set on the objects); the private API
stays in :mod:`._native`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "destroy",
    "guard",
    "guard_device",
    "is_host_accessible",
    "is_live_and_guarded",
    "mark_host_accessible",
    "write_map_mode",
]

_HOST_MARK = "tensorferry_host_accessible"
_DESTROYED_MARK = "tensorferry_destroyed"


def mark_host_accessible(buffer: wgpu.GPUBuffer) -> wgpu.GPUBuffer:
    """Mark ``buffer`` as host-accessible tensor memory (copies with the host map it)."""
    setattr(buffer, _HOST_MARK, True)
    return buffer


def is_host_accessible(buffer: wgpu.GPUBuffer) -> bool:
    """Whether :func:`mark_host_accessible` marked ``buffer``."""
    return getattr(buffer, _HOST_MARK, False) is True


_MAP_READ, _MAP_WRITE = 1, 2  # wgpu.MapMode.READ and WRITE, also the buffer usages' bits


def write_map_mode(buffer: wgpu.GPUBuffer) -> int:
    """The map mode (``wgpu.MapMode`` bits) for the host to write into ``buffer``:
    WRITE, except for host-accessible buffers made without ``MAP_WRITE`` usage,
    which the host writes through a READ map (see ``host_reads_map_writes``)."""
    if buffer.usage & _MAP_WRITE or not is_host_accessible(buffer):
        return _MAP_WRITE
    return _MAP_READ


def _refuse_destroy() -> None:
    raise RuntimeError(
        "this GPUBuffer belongs to a tensorferry pool (it came from buffer_of); destroying "
        "it would abort the process at the next copy. Expected: let the tensor go and "
        "tensorferry recycles or destroys the buffer"
    )


def guard(buffer: wgpu.GPUBuffer) -> wgpu.GPUBuffer:
    """Make ``buffer.destroy()`` raise ``RuntimeError`` (pooled buffers are tensorferry's)."""
    buffer.destroy = _refuse_destroy
    return buffer


def guard_device(
    gpu: wgpu.GPUDevice, lock: AbstractContextManager[object], before: Callable[[], None]
) -> None:
    """Make ``gpu.destroy()`` wait for ``lock`` (the work tensorferry has in flight on
    the device) and call ``before`` (which marks the context lost) first.

    wgpu-native aborts the process when a submit races a destroy of its device
    ("Parent device is lost" in wgpuQueueSubmit); under the lock no submit can.
    """
    real = gpu.destroy

    def destroy() -> None:
        with lock:
            before()
            real()

    gpu.destroy = destroy


def is_live_and_guarded(buffer: wgpu.GPUBuffer) -> bool:
    """Whether ``buffer`` is one of tensorferry's guarded buffers and :func:`destroy`
    has not destroyed it: only then can nothing else have destroyed it either, and
    a wgpu object made with it (a bind group) stays safe to submit."""
    attributes = vars(buffer)
    return attributes.get("destroy") is _refuse_destroy and _DESTROYED_MARK not in attributes


def destroy(buffer: wgpu.GPUBuffer) -> None:
    """Destroy a buffer, guarded or not (marking it, see :func:`is_live_and_guarded`)."""
    setattr(buffer, _DESTROYED_MARK, True)
    type(buffer).destroy(buffer)
