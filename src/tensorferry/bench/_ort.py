"""ONNX Runtime's WebGPU plugin execution provider, through ``onnxruntime.copy_tensors``.

The plugin (PyPI ``onnxruntime-ep-webgpu``) is registered with
``onnxruntime.register_execution_provider_library``; device tensors are
``OrtValue`` objects allocated by the allocator ONNX Runtime shares for the
plugin's device, host tensors are ``OrtValue`` objects over the benchmark's
numpy arrays. Every step that can fail here turns the path unavailable with
the reason, never a crash of the benchmark.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._path import Case, FunctionCase, PathUnavailableError
from ._suites import check_decode_inputs, decode_inputs, decode_poison
from ._workload import POISON_BYTE, HostData, Op, VerificationError, Workload

__all__ = ["OrtWebGpuPath"]

_REGISTRATION_NAME = "tensorferry-bench-webgpu"
_PROBE_BYTES = 4

_DESCRIPTIONS = {
    Op.UPLOAD: "onnxruntime.copy_tensors, then a 4-byte download to wait",
    Op.DOWNLOAD: "onnxruntime.copy_tensors into an OrtValue over a preallocated array",
    Op.D2D: "onnxruntime.copy_tensors between two WebGPU OrtValues, then a 4-byte download",
    Op.ROUNDTRIP: "onnxruntime.copy_tensors up, then down",
    Op.BATCH_UPLOAD: "one onnxruntime.copy_tensors of every pair, then a 4-byte download",
    Op.BATCH_DOWNLOAD: "one onnxruntime.copy_tensors of every pair",
    Op.BATCH_D2D: "one onnxruntime.copy_tensors of every pair, then a 4-byte download",
    Op.DOWNLOAD_NEW: "numpy.empty, then onnxruntime.copy_tensors into an OrtValue over it",
    Op.DECODE_STEP: "onnxruntime.copy_tensors of each input, then of the logits "
    "(OrtValues over the arrays' bytes)",
    Op.DECODE_STEP_BATCHED: "one onnxruntime.copy_tensors of the three inputs, then one of "
    "the logits",
    Op.MODEL_LOAD: "an OrtValue allocated per tensor, one onnxruntime.copy_tensors, then a "
    "4-byte download",
    Op.MODEL_LOAD_EXISTING: "one onnxruntime.copy_tensors into the existing OrtValues, then a "
    "4-byte download",
}


class OrtWebGpuPath:
    """``onnxruntime.copy_tensors`` between host and WebGPU ``OrtValue`` objects.

    Raises :class:`PathUnavailableError` when onnxruntime or the plugin is
    missing, too old, finds no WebGPU device, or cannot allocate and copy a
    probe tensor correctly.
    """

    name = "ort-webgpu"

    def __init__(self) -> None:
        try:
            import onnxruntime as ort

            # imported by name: the plugin package ships no type information
            plugin = importlib.import_module("onnxruntime_ep_webgpu")
        except ImportError as exc:
            raise PathUnavailableError(
                f"{exc}; install both: pip install onnxruntime onnxruntime-ep-webgpu"
            ) from exc
        self._ort: Any = ort
        self.version = str(getattr(ort, "__version__", "unknown"))
        missing = [
            name
            for name in ("register_execution_provider_library", "get_ep_devices", "copy_tensors")
            if not hasattr(ort, name)
        ]
        if missing:
            raise PathUnavailableError(
                f"onnxruntime {self.version} lacks {', '.join(missing)}; plugin execution "
                "providers and copy_tensors need a newer onnxruntime"
            )
        try:
            ort.register_execution_provider_library(_REGISTRATION_NAME, plugin.get_library_path())
            ep_name = plugin.get_ep_name()
            devices = [d for d in ort.get_ep_devices() if d.ep_name == ep_name]
        except Exception as exc:
            raise PathUnavailableError(f"loading the WebGPU plugin EP failed: {exc}") from exc
        if not devices:
            raise PathUnavailableError(f"{ep_name} (onnxruntime {self.version}) finds no device")
        self._ep_device = devices[0]
        hardware = self._ep_device.device
        vendor = getattr(hardware, "vendor", "") or "vendor"
        self.device_summary = (
            f"{ep_name} of onnxruntime {self.version} on {vendor} "
            f"{getattr(hardware, 'vendor_id', 0):#06x}:{getattr(hardware, 'device_id', 0):#06x}"
        )
        self._allocate = self._working_allocator()
        self._probe = self._allocate(_PROBE_BYTES)
        self._probe_out = self._host_value(np.empty(_PROBE_BYTES, np.uint8))

    # building blocks ----------------------------------------------------------

    def _host_value(self, array: np.ndarray[Any, Any]) -> Any:
        """An OrtValue sharing ``array``'s memory (ONNX Runtime copies only for non-CPU)."""
        return self._ort.OrtValue.ortvalue_from_numpy(array)

    def _allocators(self) -> list[tuple[str, Callable[[int], Any]]]:
        ort = self._ort
        value_type = ort.OrtValue

        def by_memory_info(nbytes: int) -> Any:
            memory = self._ep_device.memory_info(ort.OrtDeviceMemoryType.DEFAULT)
            return value_type.ortvalue_from_shape_and_type([nbytes], np.uint8, memory_info=memory)

        def by_generic_gpu_device(nbytes: int) -> Any:
            # WebGPU allocations are OrtDevice(GPU, vendor id 0, device 0).
            return value_type.ortvalue_from_shape_and_type([nbytes], np.uint8, "gpu", 0, 0)

        return [
            ("the EP device's memory_info", by_memory_info),
            ("OrtDevice('gpu', 0, vendor 0)", by_generic_gpu_device),
        ]

    def _working_allocator(self) -> Callable[[int], Any]:
        """The first way of allocating WebGPU OrtValues that round-trips data correctly."""
        failures = []
        pattern = np.arange(64, dtype=np.uint8)
        for how, allocate in self._allocators():
            try:
                value = allocate(pattern.size)
                if str(value.device_name()).lower() == "cpu":
                    raise RuntimeError("the value was allocated in host memory")
                back = np.zeros_like(pattern)
                self._copy([self._host_value(pattern)], [value])
                self._copy([value], [self._host_value(back)])
                if not np.array_equal(back, pattern):
                    raise VerificationError("a 64-byte round trip returned other bytes")
            except Exception as exc:
                failures.append(f"{how}: {exc}")
                continue
            self.allocation = how
            return allocate
        raise PathUnavailableError(
            "cannot allocate WebGPU OrtValues that copy correctly; " + "; ".join(failures)
        )

    def _copy(self, sources: Sequence[Any], targets: Sequence[Any]) -> None:
        self._ort.copy_tensors(list(sources), list(targets), None)

    def _wait(self) -> None:
        """A 4-byte download: it returns after the device queue ran everything before it."""
        self._copy([self._probe], [self._probe_out])

    def describe(self, op: Op) -> str | None:
        """The onnxruntime calls for ``op``; host -> host is not measured."""
        return _DESCRIPTIONS.get(op)

    # cases --------------------------------------------------------------------

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """WebGPU OrtValues for ``workload`` and host OrtValues over ``data``."""
        if workload.op in (Op.DECODE_STEP, Op.DECODE_STEP_BATCHED):
            return self._decode_step(workload, data)
        if workload.op in (Op.MODEL_LOAD, Op.MODEL_LOAD_EXISTING):
            return self._model_load(workload, data)
        sources = [self._host_value(row) for row in data.source]
        outputs = [self._host_value(row) for row in data.destination]
        poison = self._host_value(np.full(workload.nbytes, POISON_BYTE, np.uint8))

        def fresh() -> list[Any]:
            return [self._allocate(workload.nbytes) for _ in range(workload.count)]

        def filled() -> list[Any]:
            values = fresh()
            self._copy(sources, values)
            return values

        def verify_device(targets: list[Any]) -> Callable[[], None]:
            def verify() -> None:
                self._copy([poison] * len(targets), targets)
                run()
                data.destination.fill(POISON_BYTE)
                self._copy(targets, outputs)
                data.check(data.destination, self.name)

            return verify

        def verify_host() -> None:
            data.destination.fill(POISON_BYTE)
            run()
            data.check(data.destination, self.name)

        run: Callable[[], None]
        verify: Callable[[], None]
        match workload.op:
            case Op.UPLOAD | Op.BATCH_UPLOAD:
                targets = fresh()

                def run() -> None:
                    self._copy(sources, targets)
                    self._wait()

                verify = verify_device(targets)
            case Op.DOWNLOAD | Op.BATCH_DOWNLOAD:
                values = filled()

                def run() -> None:
                    self._copy(values, outputs)

                verify = verify_host
            case Op.D2D | Op.BATCH_D2D:
                values, targets = filled(), fresh()

                def run() -> None:
                    self._copy(values, targets)
                    self._wait()

                verify = verify_device(targets)
            case Op.ROUNDTRIP:
                (target,) = fresh()

                def run() -> None:
                    self._copy(sources, [target])
                    self._copy([target], outputs)

                def verify() -> None:
                    self._copy([poison], [target])
                    verify_host()

            case Op.DOWNLOAD_NEW:
                (value,) = filled()

                def fresh_array() -> np.ndarray[Any, Any]:
                    array = np.empty(workload.nbytes, np.uint8)
                    self._copy([value], [self._host_value(array)])
                    return array

                return FunctionCase(
                    run=fresh_array, verify=lambda: data.check(fresh_array(), self.name)
                )
            case _:
                raise ValueError(f"{self.name} does not measure {workload.op}")
        return FunctionCase(run=run, verify=verify)

    def _decode_step(self, workload: Workload, data: HostData) -> Case:
        """The inputs copied up (one call each, or one call), then the logits down."""
        inputs = decode_inputs(data)
        host_inputs = [self._host_value(value.view(np.uint8).reshape(-1)) for value in inputs]
        device_inputs = [self._allocate(value.nbytes) for value in inputs]
        logits = self._allocate(data.source.nbytes)
        self._copy([self._host_value(data.source[0])], [logits])
        out = self._host_value(data.destination[0])
        one_call_each = workload.op is Op.DECODE_STEP

        def run() -> None:
            if one_call_each:
                for host, on_device in zip(host_inputs, device_inputs, strict=True):
                    self._copy([host], [on_device])
            else:
                self._copy(host_inputs, device_inputs)
            self._copy([logits], [out])

        def verify() -> None:
            poisoned = self._host_value(decode_poison().view(np.uint8).reshape(-1))
            self._copy([poisoned] * len(device_inputs), device_inputs)
            data.destination.fill(POISON_BYTE)
            run()
            landed = [np.empty(value.nbytes, np.uint8) for value in inputs]
            self._copy(device_inputs, [self._host_value(array) for array in landed])
            check_decode_inputs(landed, inputs, self.name)
            data.check(data.destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def _model_load(self, workload: Workload, data: HostData) -> Case:
        """One ``copy_tensors`` of every tensor, into new OrtValues or existing ones."""
        sources = [self._host_value(v) for v in workload.split(data.source[0])]
        outputs = [self._host_value(v) for v in workload.split(data.destination[0])]
        existing = (
            [self._allocate(n) for n in workload.parts]
            if workload.op is Op.MODEL_LOAD_EXISTING
            else []
        )

        def run() -> list[Any]:
            targets = existing or [self._allocate(n) for n in workload.parts]
            self._copy(sources, targets)
            self._wait()
            return targets

        def verify() -> None:
            if existing:
                poison = np.full(max(workload.parts), POISON_BYTE, np.uint8)
                self._copy([self._host_value(poison[:n]) for n in workload.parts], existing)
            data.destination.fill(POISON_BYTE)
            self._copy(run(), outputs)
            data.check(data.destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def close(self) -> None:
        """Drop the probe tensors. The plugin stays registered until the process ends:
        unregistering while ONNX Runtime still holds any of its values is unsafe."""
        self._probe = self._probe_out = None
