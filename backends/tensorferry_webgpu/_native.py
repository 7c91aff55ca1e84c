"""The one module that reaches past wgpu-py's public API.

What lives here and why:

* **Maps without a hand-off.** :func:`request_map` calls ``wgpuBufferMapAsync``;
  :meth:`MapRequest.wait` polls the device on the calling thread. wgpu-py's
  ``map_async`` hands the wait to a poll thread (133 us for a 4 KiB copy + map
  on the H200 against 70-77 us this way), adds an empty submit before every
  read map, and never resolves once the device is destroyed.
* **Mapped memory.** :func:`mapped_array` views a mapped range (no view may
  outlive the unmap); :func:`copy_out_and_unmap` copies one out with no view.
  :func:`device_of` tells the device a buffer was made on.
* **Copies without wgpu-py's wrappers**, one error capture around the calls:
  :func:`encode_copies` (the wrapper cost ~13 us of the ~40 us per pair of a
  1000 x 1 KiB upload batch on lavapipe), :func:`submit_copies`, :func:`write_buffer`.
wgpu is imported on first use.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
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
    "MapRequest",
    "copy_out_and_unmap",
    "device_is_lost",
    "device_of",
    "encode_copies",
    "mapped_address",
    "mapped_array",
    "poll_ready",
    "request_map",
    "submit_copies",
    "wait_idle",
    "write_buffer",
]

MAP_READ = 0x0001
"""``wgpu.MapMode.READ`` and ``wgpu.BufferUsage.MAP_READ`` (the same bit), as a plain int."""
MAP_WRITE = 0x0002
"""``wgpu.MapMode.WRITE`` and ``wgpu.BufferUsage.MAP_WRITE``, as a plain int."""
MAP_USAGE = MAP_READ | MAP_WRITE
"""Usage bits of a buffer the host can map both ways (unified-memory tensor buffers)."""

_SUCCESS = 1  # WGPUMapAsyncStatus_Success


class MapError(RuntimeError):
    """wgpu refused or cancelled a map; the buffer must be discarded."""


@functools.cache
def _native() -> Any:
    """wgpu-native's checked library calls, cffi, and the one map callback."""
    from wgpu.backends.wgpu_native import _api, _helpers
    from wgpu.backends.wgpu_native._ffi import ffi, lib

    def on_mapped(status: int, message: Any, key: Any, _unused: Any) -> None:
        # Runs on whichever thread polls the device: ours, or wgpu-py's poller.
        request = _pending.pop(int(ffi.cast("uintptr_t", key)), None)
        if request is not None:
            request.message = "" if status == _SUCCESS else _api.from_c_string_view(message)
            request.status = int(status)

    class Native:
        libf = _api.libf
        copy = lib.wgpuCommandEncoderCopyBufferToBuffer  # unchecked: see encode_copies
        raw = _api.lib  # the library itself, unchecked
        errors = _api.error_handler
        error_types = _helpers.ERROR_TYPES
        gpu_error = _helpers.GPUError
        callback = ffi.callback("void(WGPUMapAsyncStatus, WGPUStringView, void *, void *)")(
            on_mapped
        )
        mode = lib.WGPUCallbackMode_AllowProcessEvents
        null = ffi.NULL
        cast = ffi.cast
        new = ffi.new
        buffer = ffi.buffer
        from_buffer = ffi.from_buffer
        memmove = ffi.memmove

    return Native


_pending: dict[int, MapRequest] = {}
_keys = itertools.count(1)
_key_lock = threading.Lock()


class MapRequest:
    """A map of ``size`` bytes at ``offset`` in ``buffer`` that wgpu-native is completing.

    Made by :func:`request_map`; :meth:`wait` blocks until the range is mapped.
    """

    __slots__ = ("buffer", "message", "mode", "offset", "size", "status")

    def __init__(self, buffer: wgpu.GPUBuffer, mode: int, offset: int, size: int) -> None:
        self.buffer = buffer
        self.mode = mode
        self.offset = offset
        self.size = size
        self.status = 0
        self.message = ""

    def wait(self, gpu: wgpu.GPUDevice, *, lost_after: float, spin: float = 0.0) -> None:
        """Block until the range is mapped, polling ``gpu`` on the calling thread,
        for up to ``spin`` seconds without blocking first (a thread that polls sees
        the GPU finish sooner than one a blocking poll's wake-up must reschedule).

        A blocking poll returns once the queue is idle; a map unresolved then has
        its callback run by another thread's poll, or the device is gone: the wait
        backs off, checks the device, and gives up after ``lost_after`` seconds.
        Raises :class:`DeviceLostError` for a lost device, ``RuntimeError`` for a
        map wgpu refused (the buffer must then be discarded).
        """
        native = _native()
        poll, internal, null = native.libf.wgpuDevicePoll, gpu._internal, native.null
        if not self.status:  # else an earlier poll (see poll_ready) resolved it already
            try:
                end = time.perf_counter() + spin
                while spin and not self.status and time.perf_counter() < end:
                    poll(internal, False, null)
                if not self.status:
                    poll(internal, True, null)
            except Exception as exc:
                raise _lost_or(gpu, exc) from exc
        if not self.status:
            self._stall(gpu, lost_after)
        if self.status != _SUCCESS:
            self.buffer._map_state = "unmapped"
            if device_is_lost(gpu):
                raise DeviceLostError(f"the wgpu device was lost during a map: {self.message}")
            raise MapError(f"wgpu could not map a buffer: {self.message}")
        # Keep wgpu-py's own view of the buffer true, so that its unmap() works.
        buffer = self.buffer
        buffer._map_state = "mapped"
        buffer._mapped_status = (self.offset, self.offset + self.size, self.mode)
        buffer._mapped_memoryviews = []

    def _stall(self, gpu: wgpu.GPUDevice, lost_after: float) -> None:
        native = _native()
        poll, internal, null = native.libf.wgpuDevicePoll, gpu._internal, native.null
        start = time.monotonic()
        # Usually another thread's poll (wgpu-py's poller on a shared device) is running
        # the callback now: spin, letting it finish, before the checks and back-off
        # (on the H200 sleeping first added 100-400 us beside a raw wgpu-py user).
        while time.monotonic() - start < _SPIN:
            try:
                poll(internal, False, null)
            except Exception as exc:
                raise _lost_or(gpu, exc) from exc
            if self.status:
                return
            time.sleep(0)
        pause = 0.0
        while True:
            time.sleep(pause)
            if self.status:
                return
            if device_is_lost(gpu):
                raise DeviceLostError("the wgpu device was lost while a map was pending")
            if time.monotonic() - start > lost_after:
                raise DeviceLostError(
                    f"a map stayed unresolved for {lost_after} s while the device's queue "
                    "was idle; treating the device as lost"
                )
            try:
                poll(internal, True, null)
            except Exception as exc:
                raise _lost_or(gpu, exc) from exc
            pause = min(0.005, pause * 2 or 0.00005)


_SPIN = 0.002  # seconds a stalled wait polls without blocking before it backs off


def wait_idle(gpu: wgpu.GPUDevice) -> None:
    """Block until every command buffer submitted to ``gpu``'s queue has finished:
    one blocking ``wgpuDevicePoll`` on the calling thread (no poll-thread hand-off).
    Raises :class:`DeviceLostError` for a lost device, the wgpu error otherwise."""
    _poll(gpu, wait=True)


def poll_ready(gpu: wgpu.GPUDevice) -> None:
    """Resolve the maps whose GPU work is done, without waiting for the rest of the
    queue (a non-blocking ``wgpuDevicePoll``): a later :meth:`MapRequest.wait` on
    one of them then returns at once, where its blocking poll would wait until
    every submitted command is done. Raises :class:`DeviceLostError` for a lost device.
    """
    _poll(gpu, wait=False)


def _poll(gpu: wgpu.GPUDevice, *, wait: bool) -> None:
    # Its result ("queue empty") is not used: a non-blocking poll said so on the H200
    # while a 1 GiB copy still ran.
    native = _native()
    try:
        native.libf.wgpuDevicePoll(gpu._internal, wait, native.null)
    except Exception as exc:
        raise _lost_or(gpu, exc) from exc


def request_map(buffer: wgpu.GPUBuffer, mode: int, offset: int, size: int) -> MapRequest:
    """Ask wgpu-native to map ``size`` bytes at ``offset`` (``mode``: :data:`MAP_READ`
    or :data:`MAP_WRITE`), without waiting; :meth:`MapRequest.wait` completes it.

    ``offset`` must be a multiple of 8 and ``size`` of 4. Raises
    :class:`DeviceLostError` for a lost device, a wgpu error for a refused map.
    """
    native = _native()
    request = MapRequest(buffer, mode, offset, size)
    with _key_lock:
        key = next(_keys)
    _pending[key] = request
    info = native.new("WGPUBufferMapCallbackInfo *")
    info.mode = native.mode
    info.callback = native.callback
    info.userdata1 = native.cast("void *", key)
    buffer._map_state = "pending"
    try:
        native.libf.wgpuBufferMapAsync(buffer._internal, mode, offset, size, info[0])
    except Exception as exc:
        _pending.pop(key, None)
        buffer._map_state = "unmapped"
        raise _lost_or(buffer._device, exc) from exc
    return request


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


def _lost_or(gpu: wgpu.GPUDevice, exc: Exception) -> Exception:
    if not isinstance(exc, DeviceLostError) and device_is_lost(gpu):
        return DeviceLostError(f"the wgpu device was lost: {exc}")
    return exc


def device_of(buffer: wgpu.GPUBuffer) -> object | None:
    """The ``GPUDevice`` a buffer was created on (None if wgpu-py does not say)."""
    return getattr(buffer, "_device", None)
