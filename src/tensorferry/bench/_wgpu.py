"""The raw wgpu-py peer: what a user of wgpu-py writes without tensorferry.

Its device comes from the same adapter as the tensorferry device under test.
``queue.on_submitted_work_done_sync()`` is broken in wgpu 0.32, so a write is
waited for the cheapest portable way: copy 4 bytes of the written buffer into
a small ``MAP_READ`` buffer, submit, and map it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import tensorferry as tf

from ._path import Case, FunctionCase, PathUnavailableError
from ._suites import check_decode_inputs, decode_inputs, decode_poison
from ._workload import POISON_BYTE, HostData, Op, Workload

__all__ = ["WgpuPath", "adapter_summary"]

_SYNC_BYTES = 4

_DESCRIPTIONS = {
    Op.UPLOAD: "queue.write_buffer, then a 4-byte copy into a MAP_READ buffer + map_sync",
    Op.DOWNLOAD: "queue.read_buffer (returns new host memory)",
    Op.D2D: "encoder.copy_buffer_to_buffer + submit + 4-byte map sync",
    Op.ROUNDTRIP: "queue.write_buffer + queue.read_buffer",
    Op.BATCH_UPLOAD: "a loop of queue.write_buffer, then one 4-byte map sync",
    Op.BATCH_DOWNLOAD: "a loop of queue.read_buffer",
    Op.BATCH_D2D: "one encoder with a copy_buffer_to_buffer per pair, one submit, one sync",
    Op.DECODE_STEP: "queue.write_buffer of each input, then queue.read_buffer of the logits",
    Op.DECODE_STEP_BATCHED: "the same calls (wgpu-py has no batched write)",
    Op.MODEL_LOAD: "device.create_buffer + queue.write_buffer per tensor, one 4-byte map sync",
    Op.MODEL_LOAD_EXISTING: "queue.write_buffer per tensor, one 4-byte map sync",
}


def adapter_summary(adapter: Any) -> dict[str, object]:
    """The adapter's summary line and ``info`` fields, for reports."""
    info = {str(k): v for k, v in dict(adapter.info).items()}
    return {"summary": str(adapter.summary), **info}


def _match_score(adapter: Any, device: tf.Device) -> int:
    """How well a wgpu adapter matches the tensorferry device (higher is better)."""
    info = adapter.info
    score = 0
    if device.name and device.name in (adapter.summary, info["device"]):
        score += 4
    elif device.name and (info["device"] in device.name or device.name in adapter.summary):
        score += 2
    backend_type = str(device.property("backend_type"))
    if backend_type and backend_type.lower() == str(info["backend_type"]).lower():
        score += 2
    adapter_type = str(device.property("adapter_type"))
    if adapter_type and adapter_type.lower() == str(info["adapter_type"]).lower():
        score += 1
    if device.vendor_id and device.vendor_id == info["vendor_id"]:
        score += 1
    return score


class WgpuPath:
    """Raw wgpu-py on its own device, from the adapter the tensorferry device uses.

    For a device that is not a wgpu adapter (``--device cpu``), the first adapter
    wgpu enumerates is used. Raises :class:`PathUnavailableError` when wgpu is
    not installed or finds no adapter.
    """

    name = "wgpu-py"

    def __init__(self, device: tf.Device | None) -> None:
        try:
            # imported by name: wgpu-py ships no type information, its objects are Any
            wgpu = importlib.import_module("wgpu")
        except ImportError as exc:
            raise PathUnavailableError(
                f"wgpu is not importable ({exc}); install it: pip install 'tensorferry[webgpu]'"
            ) from exc
        self._wgpu: Any = wgpu
        # tensorferry's own enumeration: a second one in this process aborts it
        # once devices of both are used (wgpu-hal's EGL lock on the GL adapter).
        adapters = importlib.import_module("tensorferry_webgpu").adapters()
        if not adapters:
            raise PathUnavailableError("wgpu finds no adapter on this machine")
        if device is None or device.is_host:
            self._adapter = adapters[0]
        else:
            self._adapter = max(adapters, key=lambda a: _match_score(a, device))
        self.adapter = adapter_summary(self._adapter)
        # wgpu's default limit is 256 MiB; the adapter's own lets buffers reach its size
        self.max_buffer_size = int(self._adapter.limits["max-buffer-size"])
        self._device = self._adapter.request_device_sync(
            required_limits={"max-buffer-size": self.max_buffer_size}
        )
        self._queue = self._device.queue
        self._sync_buffer = self._device.create_buffer(
            size=_SYNC_BYTES, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )

    def describe(self, op: Op) -> str | None:
        """The wgpu-py calls for ``op``; host -> host is not a wgpu-py path, and its
        downloads always allocate (``download-new`` would time ``download`` again)."""
        return _DESCRIPTIONS.get(op)

    # building blocks ----------------------------------------------------------

    def _buffers(self, workload: Workload) -> list[Any]:
        return self._buffers_of([workload.nbytes] * workload.count)

    def _buffers_of(self, sizes: Sequence[int]) -> list[Any]:
        usage = self._wgpu.BufferUsage.COPY_SRC | self._wgpu.BufferUsage.COPY_DST
        return [self._device.create_buffer(size=size, usage=usage) for size in sizes]

    def _wait(self, last: Any, encoder: Any = None) -> None:
        """Submit ``encoder`` (or nothing new) plus a tiny copy out of ``last``; map to wait."""
        encoder = encoder or self._device.create_command_encoder()
        encoder.copy_buffer_to_buffer(last, 0, self._sync_buffer, 0, _SYNC_BYTES)
        self._queue.submit([encoder.finish()])
        self._sync_buffer.map_sync(self._wgpu.MapMode.READ)
        self._sync_buffer.unmap()

    def _write_all(self, buffers: Sequence[Any], rows: Sequence[npt.NDArray[np.uint8]]) -> None:
        for buffer, row in zip(buffers, rows, strict=True):
            self._queue.write_buffer(buffer, 0, row)
        self._wait(buffers[-1])

    def _poison(self, buffers: Sequence[Any]) -> None:
        block = np.full(buffers[0].size, POISON_BYTE, dtype=np.uint8)
        self._write_all(buffers, [block] * len(buffers))

    def _read_all(self, buffers: Sequence[Any]) -> npt.NDArray[np.uint8]:
        return np.stack([np.frombuffer(self._queue.read_buffer(b), np.uint8) for b in buffers])

    # cases --------------------------------------------------------------------

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Buffers for ``workload``; sources are written before the first run."""
        if workload.op in (Op.DECODE_STEP, Op.DECODE_STEP_BATCHED):
            return self._decode_step(data)
        if workload.op in (Op.MODEL_LOAD, Op.MODEL_LOAD_EXISTING):
            return self._model_load(workload, data)
        rows = list(data.source)
        queue = self._queue
        buffers = self._buffers(workload)
        received: list[Any] = []

        def check_buffers(targets: Sequence[Any]) -> Callable[[], None]:
            def verify() -> None:
                self._poison(targets)
                run()
                data.check(self._read_all(targets), self.name)

            return verify

        def check_received() -> None:
            run()
            data.check(np.stack([np.frombuffer(r, np.uint8) for r in received]), self.name)

        run: Callable[[], None]
        verify: Callable[[], None]
        to_destroy = list(buffers)
        match workload.op:
            case Op.UPLOAD | Op.BATCH_UPLOAD:

                def run() -> None:
                    self._write_all(buffers, rows)

                verify = check_buffers(buffers)
            case Op.DOWNLOAD | Op.BATCH_DOWNLOAD:
                self._write_all(buffers, rows)

                def run() -> None:
                    received[:] = [queue.read_buffer(b) for b in buffers]

                verify = check_received
            case Op.D2D | Op.BATCH_D2D:
                self._write_all(buffers, rows)
                targets = self._buffers(workload)
                to_destroy += targets

                def run() -> None:
                    encoder = self._device.create_command_encoder()
                    for source, target in zip(buffers, targets, strict=True):
                        encoder.copy_buffer_to_buffer(source, 0, target, 0, workload.nbytes)
                    self._wait(targets[-1], encoder)

                verify = check_buffers(targets)
            case Op.ROUNDTRIP:
                (buffer,) = buffers

                def run() -> None:
                    queue.write_buffer(buffer, 0, rows[0])
                    received[:] = [queue.read_buffer(buffer)]

                def verify() -> None:
                    self._poison(buffers)
                    check_received()

            case _:
                raise ValueError(f"wgpu-py does not measure {workload.op}")

        def close() -> None:
            received.clear()
            for buffer in to_destroy:
                buffer.destroy()

        return FunctionCase(run=run, verify=verify, close=close)

    def _decode_step(self, data: HostData) -> Case:
        """Inputs written one ``write_buffer`` each, then the logits read back; the read
        is queued after the writes, so they have landed when it returns."""
        queue = self._queue
        inputs = decode_inputs(data)
        buffers = self._buffers_of([value.nbytes for value in inputs])
        (logits,) = self._buffers_of([data.source.nbytes])
        self._write_all([logits], [data.source[0]])
        pairs = list(zip(buffers, inputs, strict=True))
        received: list[Any] = []

        def run() -> None:
            for buffer, value in pairs:
                queue.write_buffer(buffer, 0, value)
            received[:] = [queue.read_buffer(logits)]

        def verify() -> None:
            self._write_all(buffers, [decode_poison().view(np.uint8)] * len(buffers))
            run()
            check_decode_inputs([self._read_all([b]) for b in buffers], inputs, self.name)
            data.check(np.frombuffer(received[0], np.uint8), self.name)

        def close() -> None:
            received.clear()
            for buffer in [*buffers, logits]:
                buffer.destroy()

        return FunctionCase(run=run, verify=verify, close=close)

    def _model_load(self, workload: Workload, data: HostData) -> Case:
        """A ``write_buffer`` per tensor, into new buffers or existing ones, then one sync."""
        rows = workload.split(data.source[0])
        existing = self._buffers_of(workload.parts) if workload.op is Op.MODEL_LOAD_EXISTING else []

        def run() -> list[Any]:
            buffers = existing or self._buffers_of(workload.parts)
            self._write_all(buffers, rows)
            return buffers

        def verify() -> None:
            if existing:
                self._write_all(existing, [np.full_like(row, POISON_BYTE) for row in rows])
            buffers = run()
            received = [np.frombuffer(self._queue.read_buffer(b), np.uint8) for b in buffers]
            data.check(np.concatenate(received), self.name)

        def close() -> None:
            for buffer in existing:
                buffer.destroy()

        return FunctionCase(run=run, verify=verify, close=close)

    def close(self) -> None:
        """Drop the device; wgpu releases it when nothing refers to it. Idempotent."""
        if self._device is not None:
            self._sync_buffer.destroy()
            self._device = self._queue = self._sync_buffer = None
