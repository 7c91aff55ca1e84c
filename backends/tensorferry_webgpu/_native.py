"""wgpu-native's calls past wgpu-py's public API (with :mod:`._waits`, the only
modules that reach past it).

What lives here and why:

* **Mapped memory.** :func:`mapped_array` views a mapped range (no view may
  outlive the unmap); :func:`copy_out_and_unmap` copies one out with no view.
  :func:`device_of` tells the device a buffer was made on.
* **Copies without wgpu-py's wrappers**, one error capture around the calls:
  :func:`encode_copies` (the wrapper cost ~13 us of the ~40 us per pair of a
  1000 x 1 KiB upload batch on lavapipe), :func:`submit_copies`, :func:`write_buffer`.
* **Device state**: :func:`device_is_lost`, and :func:`lost_or` to tell a lost
  device's errors.

wgpu is imported on first use.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorferry import DeviceLostError

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "MAP_READ",
    "MAP_USAGE",
    "MAP_WRITE",
    "MapError",
    "copy_out_and_unmap",
    "device_is_lost",
    "device_of",
    "encode_copies",
    "lost_or",
    "mapped_address",
    "mapped_array",
    "submit_copies",
    "write_buffer",
]

MAP_READ = 0x0001
"""``wgpu.MapMode.READ`` and ``wgpu.BufferUsage.MAP_READ`` (the same bit), as a plain int."""
MAP_WRITE = 0x0002
"""``wgpu.MapMode.WRITE`` and ``wgpu.BufferUsage.MAP_WRITE``, as a plain int."""
MAP_USAGE = MAP_READ | MAP_WRITE
"""Usage bits of a buffer the host can map both ways (unified-memory tensor buffers)."""


class MapError(RuntimeError):
    """wgpu refused or cancelled a map (see :mod:`._waits`); the buffer must be discarded."""


@functools.cache
def _native() -> Any:
    """wgpu-native's checked and unchecked library calls, and cffi."""
    from wgpu.backends.wgpu_native import _api, _helpers
    from wgpu.backends.wgpu_native._ffi import ffi, lib

    class Native:
        libf = _api.libf
        copy = lib.wgpuCommandEncoderCopyBufferToBuffer  # unchecked: see encode_copies
        raw = _api.lib  # the library itself, unchecked
        errors = _api.error_handler
        error_types = _helpers.ERROR_TYPES
        gpu_error = _helpers.GPUError
        cffi = ffi
        from_c_string_view = _api.from_c_string_view
        mode = lib.WGPUCallbackMode_AllowProcessEvents
        null = ffi.NULL
        cast = ffi.cast
        new = ffi.new
        buffer = ffi.buffer
        from_buffer = ffi.from_buffer
        memmove = ffi.memmove

    return Native


Copy = tuple["wgpu.GPUBuffer", int, "wgpu.GPUBuffer", int, int]
"""``(source, source offset, destination, destination offset, bytes)``, all offsets
and sizes multiples of 4."""

_COPY = "wgpuCommandEncoderCopyBufferToBuffer"


def encode_copies(encoder: wgpu.GPUCommandEncoder, copies: list[Copy]) -> None:
    """Record ``copies`` into ``encoder`` in order, as ``copy_buffer_to_buffer`` would,
    raising the wgpu error it would raise for the first invalid one.

    One error capture surrounds all the calls (wgpu-py's checked call makes one per
    call): the library reports a copy's errors during the call, on this thread.
    """
    native = _native()
    copy, errors, internal = native.copy, native.errors, encoder._internal
    errors.capture(_COPY)
    try:
        for src, src_offset, dst, dst_offset, size in copies:
            copy(internal, src._internal, src_offset, dst._internal, dst_offset, size)
    finally:
        error = errors.release(_COPY)
    _raise_captured(error)


_SUBMIT = "tensorferry.submit_copies"


def submit_copies(gpu: wgpu.GPUDevice, queue: wgpu.GPUQueue, copies: list[Copy]) -> None:
    """Submit ``copies`` as one command buffer, as ``create_command_encoder``, the
    copies, ``finish`` and ``queue.submit`` would, without wgpu-py's objects around
    them (a small download). Raises the wgpu error of the first failing call."""
    native = _native()
    lib, copy, errors, null = native.raw, native.copy, native.errors, native.null
    encoder = command = null
    errors.capture(_SUBMIT)
    try:
        encoder = lib.wgpuDeviceCreateCommandEncoder(gpu._internal, null)
        for src, src_offset, dst, dst_offset, size in copies:
            copy(encoder, src._internal, src_offset, dst._internal, dst_offset, size)
        command = lib.wgpuCommandEncoderFinish(encoder, null)
        lib.wgpuQueueSubmit(queue._internal, 1, native.new("WGPUCommandBuffer[1]", [command]))
    finally:
        if command != null:
            lib.wgpuCommandBufferRelease(command)
        if encoder != null:
            lib.wgpuCommandEncoderRelease(encoder)
        error = errors.release(_SUBMIT)
    _raise_captured(error)


def write_buffer(
    queue: wgpu.GPUQueue, buffer: wgpu.GPUBuffer, offset: int, data: npt.NDArray[np.uint8]
) -> None:
    """``queue.write_buffer(buffer, offset, data)`` (C-contiguous bytes) in one native
    call, without wgpu-py's wrapper (~1.4 of its ~4.2 us on lavapipe): for lone
    small uploads. Raises the wgpu error that would raise."""
    native = _native()
    errors = native.errors
    errors.capture(_WRITE)
    try:
        native.raw.wgpuQueueWriteBuffer(
            queue._internal, buffer._internal, offset, native.from_buffer(data), data.nbytes
        )
    finally:
        error = errors.release(_WRITE)
    _raise_captured(error)


_WRITE = "tensorferry.write_buffer"


def _raise_captured(error: tuple[str, str] | None) -> None:
    if error is not None:
        native = _native()
        raise native.error_types.get(error[0], native.gpu_error)(error[1])


def mapped_array(buffer: wgpu.GPUBuffer, offset: int, size: int) -> npt.NDArray[np.uint8]:
    """A writable uint8 view of ``size`` mapped bytes at ``offset`` (inside the
    mapped range). Drop every view before the buffer is unmapped: reading one
    afterwards crashes the process."""
    native = _native()
    return np.frombuffer(native.buffer(_mapped_pointer(buffer, offset, size), size), np.uint8)


def copy_out_and_unmap(
    buffer: wgpu.GPUBuffer, start: int, size: int, skip: int, out: npt.NDArray[np.uint8]
) -> None:
    """Copy ``out.nbytes`` bytes from ``skip`` bytes into the range of ``size`` bytes
    mapped at ``start`` into ``out`` (C-contiguous), one memmove and no array over
    mapped memory, then unmap ``buffer`` whatever happens. For small downloads.
    Raises :class:`DeviceLostError` as :func:`mapped_array` does, leaving it mapped."""
    native = _native()
    pointer = _mapped_pointer(buffer, start, size)  # raises before an unmap could abort
    try:
        native.memmove(out, pointer + skip, out.nbytes)
    finally:
        native.libf.wgpuBufferUnmap(buffer._internal)
        buffer._map_state, buffer._mapped_status = "unmapped", (0, 0, 0)


def mapped_address(buffer: wgpu.GPUBuffer, offset: int, size: int) -> int:
    """The address of ``size`` mapped bytes at ``offset`` (inside the mapped range).

    For host-accessible tensors' scopes, which build their own numpy array over
    it; no array over it may outlive the unmap. Raises :class:`DeviceLostError`
    as :func:`mapped_array` does.
    """
    return int(_native().cast("uintptr_t", _mapped_pointer(buffer, offset, size)))


def _mapped_pointer(buffer: wgpu.GPUBuffer, offset: int, size: int) -> Any:
    if _destroying(buffer._device):
        # wgpu-native panics (aborting the process) on a mapped range of a destroyed device.
        raise DeviceLostError("the wgpu device was destroyed while its buffer was mapped")
    native = _native()
    pointer = native.libf.wgpuBufferGetMappedRange(buffer._internal, offset, size)
    if pointer == native.null:
        raise DeviceLostError("wgpu returned no mapped memory (the device is gone)")
    return pointer


def _destroying(gpu: wgpu.GPUDevice) -> bool:
    # wgpu-py's destroy() stops the device's poll thread (first flag, then join, then
    # forget it) before it destroys the device: a cheap early sign of a destroy.
    poller = getattr(gpu, "_poller", None)
    return poller is None or bool(poller._shutdown)


def device_is_lost(gpu: wgpu.GPUDevice) -> bool:
    """Whether ``gpu`` was destroyed or lost (checked by finishing an empty encoder)."""
    if _destroying(gpu):
        return True
    try:
        gpu.create_command_encoder().finish()
    except Exception as exc:
        return "lost" in str(exc).lower()
    return False


def lost_or(gpu: wgpu.GPUDevice, exc: Exception) -> Exception:
    """:class:`DeviceLostError` for ``exc`` if ``gpu`` is lost, else ``exc``."""
    if not isinstance(exc, DeviceLostError) and device_is_lost(gpu):
        return DeviceLostError(f"the wgpu device was lost: {exc}")
    return exc


def device_of(buffer: wgpu.GPUBuffer) -> object | None:
    """The ``GPUDevice`` a buffer was created on (None if wgpu-py does not say)."""
    return getattr(buffer, "_device", None)
