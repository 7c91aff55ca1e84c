"""Waiting for the device on the calling thread: buffer maps and queue work-done.

wgpu-py's ``map_async`` and ``on_submitted_work_done`` hand the wait to a poll
thread (133 us for a 4 KiB copy + map on the H200 against 70-77 us this way),
add an empty submit before every read map, and never resolve once the device is
destroyed; its ``on_submitted_work_done_sync`` fails in 0.32 (its callback lacks
the message argument). Here each wait registers a callback with wgpu-native and
polls the device itself: :func:`request_map` and :meth:`Request.wait` for maps,
:func:`wait_for_queue` for everything submitted. A callback runs on whichever
thread polls the device (ours, or wgpu-py's poller on a shared device).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

from tensorferry import DeviceLostError
from tensorferry_webgpu._native import MapError, _native, device_is_lost, lost_or

if TYPE_CHECKING:
    import wgpu

__all__ = ["MapRequest", "Request", "poll_ready", "request_map", "wait_for_queue", "wait_idle"]

_SUCCESS = 1  # WGPUMapAsyncStatus_Success and WGPUQueueWorkDoneStatus_Success
_SPIN = 0.002  # seconds a stalled wait polls without blocking before it backs off

_pending: dict[int, Request] = {}
_keys = itertools.count(1)
_key_lock = threading.Lock()


@functools.cache
def _callbacks() -> dict[str, Any]:
    """cffi callbacks by callback-info type: each resolves the request whose key it carries."""
    native = _native()

    def on_resolved(status: int, message: Any, key: Any, _unused: Any) -> None:
        request = _pending.pop(int(native.cast("uintptr_t", key)), None)
        if request is not None:
            request.message = "" if status == _SUCCESS else native.from_c_string_view(message)
            request.status = int(status)

    return {
        info: native.cffi.callback(f"void({status}, WGPUStringView, void *, void *)")(on_resolved)
        for info, status in [
            ("WGPUBufferMapCallbackInfo", "WGPUMapAsyncStatus"),
            ("WGPUQueueWorkDoneCallbackInfo", "WGPUQueueWorkDoneStatus"),
        ]
    }


def _register(request: Request, info_type: str) -> Any:
    """A callback info struct of ``info_type`` that resolves ``request``."""
    native = _native()
    with _key_lock:
        key = next(_keys)
    _pending[key] = request
    info = native.new(f"{info_type} *")
    info.mode = native.mode
    info.callback = _callbacks()[info_type]
    info.userdata1 = native.cast("void *", key)
    request.key = key
    return info


class Request:
    """Something wgpu-native completes by a callback: ``status`` is 0 until then."""

    __slots__ = ("key", "message", "status")

    def __init__(self) -> None:
        self.status = 0
        self.message = ""
        self.key = 0

    def wait(self, gpu: wgpu.GPUDevice, *, lost_after: float, spin: float = 0.0) -> None:
        """Block until the request resolves, polling ``gpu`` on the calling thread,
        for up to ``spin`` seconds without blocking first (a thread that polls sees
        the GPU finish sooner than one a blocking poll's wake-up must reschedule).

        A blocking poll returns once the queue is idle; a request unresolved then
        has its callback run by another thread's poll, or the device is gone: the
        wait backs off, checks the device, and gives up after ``lost_after``
        seconds. Raises :class:`DeviceLostError` for a lost device, ``RuntimeError``
        (:class:`MapError` for a map) for a request wgpu refused.
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
                raise lost_or(gpu, exc) from exc
        if not self.status:
            self._stall(gpu, lost_after)
        if self.status != _SUCCESS:
            error = self._failed()
            if device_is_lost(gpu):
                raise DeviceLostError(
                    f"the wgpu device was lost during {self._what}: {self.message}"
                )
            raise error
        self._resolved()

    _what = "a wait for the queue"

    def _failed(self) -> Exception:
        """The error for a failure wgpu reported (the device is not lost)."""
        return RuntimeError(f"wgpu failed {self._what}: {self.message}")

    def _resolved(self) -> None:
        """Called once the request succeeded."""

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
                raise lost_or(gpu, exc) from exc
            if self.status:
                return
            time.sleep(0)
        pause = 0.0
        while True:
            time.sleep(pause)
            if self.status:
                return
            if device_is_lost(gpu):
                raise DeviceLostError(f"the wgpu device was lost while {self._what} was pending")
            if time.monotonic() - start > lost_after:
                raise DeviceLostError(
                    f"{self._what} stayed unresolved for {lost_after} s while the device's queue "
                    "was idle; treating the device as lost"
                )
            try:
                poll(internal, True, null)
            except Exception as exc:
                raise lost_or(gpu, exc) from exc
            pause = min(0.005, pause * 2 or 0.00005)


class MapRequest(Request):
    """A map of ``size`` bytes at ``offset`` in ``buffer`` that wgpu-native is completing.

    Made by :func:`request_map`; :meth:`wait` blocks until the range is mapped
    (raising :class:`MapError` for a map wgpu refused: discard the buffer).
    """

    __slots__ = ("buffer", "mode", "offset", "size")

    def __init__(self, buffer: wgpu.GPUBuffer, mode: int, offset: int, size: int) -> None:
        super().__init__()
        self.buffer = buffer
        self.mode = mode
        self.offset = offset
        self.size = size

    _what = "a map"

    def _failed(self) -> Exception:
        self.buffer._map_state = "unmapped"
        return MapError(f"wgpu could not map a buffer: {self.message}")

    def _resolved(self) -> None:
        # Keep wgpu-py's own view of the buffer true, so that its unmap() works.
        buffer = self.buffer
        buffer._map_state = "mapped"
        buffer._mapped_status = (self.offset, self.offset + self.size, self.mode)
        buffer._mapped_memoryviews = []


def request_map(buffer: wgpu.GPUBuffer, mode: int, offset: int, size: int) -> MapRequest:
    """Ask wgpu-native to map ``size`` bytes at ``offset`` (``mode``: ``MAP_READ``
    or ``MAP_WRITE``), without waiting; :meth:`MapRequest.wait` completes it.

    ``offset`` must be a multiple of 8 and ``size`` of 4. Raises
    :class:`DeviceLostError` for a lost device, a wgpu error for a refused map.
    """
    request = MapRequest(buffer, mode, offset, size)
    info = _register(request, "WGPUBufferMapCallbackInfo")
    buffer._map_state = "pending"
    try:
        _native().libf.wgpuBufferMapAsync(buffer._internal, mode, offset, size, info[0])
    except Exception as exc:
        _pending.pop(request.key, None)
        buffer._map_state = "unmapped"
        raise lost_or(buffer._device, exc) from exc
    return request


def wait_for_queue(
    gpu: wgpu.GPUDevice, queue: wgpu.GPUQueue, *, lost_after: float, spin: float = 0.0
) -> None:
    """Return once every command buffer submitted to ``queue`` and every queued
    write has finished on the device: an empty submit (it carries the queued
    writes), then ``wgpuQueueOnSubmittedWorkDone`` waited for as
    :meth:`Request.wait` waits. A 4 KiB write and this wait took 24 us p50 on
    the H200 (38 with a fence copy and its map), 19-27 on lavapipe (49-55;
    ``benchmarks/probes/work_done.py``).
    Raises :class:`DeviceLostError` for a lost device, the wgpu error otherwise.
    """
    native = _native()
    request = Request()
    info = _register(request, "WGPUQueueWorkDoneCallbackInfo")
    try:
        native.libf.wgpuQueueSubmit(queue._internal, 0, native.null)
        native.libf.wgpuQueueOnSubmittedWorkDone(queue._internal, info[0])
    except Exception as exc:
        _pending.pop(request.key, None)
        raise lost_or(gpu, exc) from exc
    request.wait(gpu, lost_after=lost_after, spin=spin)


def wait_idle(gpu: wgpu.GPUDevice) -> None:
    """Block until every command buffer submitted to ``gpu``'s queue has finished:
    one blocking ``wgpuDevicePoll`` on the calling thread (no poll-thread hand-off).
    Raises :class:`DeviceLostError` for a lost device, the wgpu error otherwise."""
    _poll(gpu, wait=True)


def poll_ready(gpu: wgpu.GPUDevice) -> None:
    """Resolve the requests whose GPU work is done, without waiting for the rest
    of the queue (a non-blocking ``wgpuDevicePoll``): a later :meth:`Request.wait`
    on one of them then returns at once, where its blocking poll would wait until
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
        raise lost_or(gpu, exc) from exc
