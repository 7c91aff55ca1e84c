"""The path under test: tensorferry through its public API only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import tensorferry as tf

from ._path import Case, FunctionCase
from ._suites import DECODE_VOCAB, check_decode_inputs, decode_inputs, decode_poison
from ._workload import HostData, Op, Workload, poison

__all__ = ["TensorferryPath"]

_WAIT = ", then Environment.synchronize(device) to wait for the device"
_DESCRIPTIONS = {
    Op.UPLOAD: "Environment.copy_tensor(host tensor, device tensor)",
    Op.DOWNLOAD: "Tensor.numpy(out=preallocated array)",
    Op.D2D: "Environment.copy_tensor between two tensors of the device",
    Op.ROUNDTRIP: "copy_tensor up, then Tensor.numpy(out=...)",
    Op.H2H: "Environment.copy_tensor between two host tensors (from_numpy(copy=False))",
    Op.BATCH_UPLOAD: "one Environment.copy_tensors of every pair",
    Op.BATCH_DOWNLOAD: "one Environment.copy_tensors of every pair",
    Op.BATCH_D2D: "one Environment.copy_tensors of every pair",
    Op.DOWNLOAD_NEW: "Tensor.numpy() (a new array each run)",
    Op.DECODE_STEP: "Environment.copy_tensor of each input, then logits.numpy(out=preallocated)",
    Op.DECODE_STEP_BATCHED: "one Environment.copy_tensors of the three inputs, then "
    "logits.numpy(out=preallocated)",
    Op.MODEL_LOAD: "Environment.empty for each tensor, one Environment.copy_tensors",
    Op.MODEL_LOAD_EXISTING: "one Environment.copy_tensors into the existing tensors",
}
_WAITED_OPS = frozenset(
    {Op.UPLOAD, Op.D2D, Op.BATCH_UPLOAD, Op.BATCH_D2D, Op.MODEL_LOAD, Op.MODEL_LOAD_EXISTING}
)
"""Ops whose destination is device memory: a backend may return before the device
has copied (as CUDA's pageable uploads and device copies do)."""


class TensorferryPath:
    """tensorferry's own transfers on one device of a fresh :class:`tensorferry.Environment`.

    Host tensors share the benchmark's numpy arrays (``from_numpy(copy=False)``),
    so every byte a run moves is a byte the transfer itself moved. A copy into
    device memory is followed by :meth:`tensorferry.Environment.synchronize`, so a
    run ends when the device has the data, as every peer's does (raw wgpu-py maps a
    buffer, torch synchronizes); :meth:`without_wait` measures the calls alone.
    When the device cannot be had, only host -> host is measured and
    :attr:`unavailable_reason` says why.
    """

    def __init__(
        self,
        environment: tf.Environment,
        device: tf.Device | None,
        unavailable_reason: str = "",
        *,
        wait: bool = True,
    ) -> None:
        self.name = "tensorferry" if wait else "tensorferry-nowait"
        self._env = environment
        self._wait = wait
        self.device = device
        self.unavailable_reason = unavailable_reason

    @classmethod
    def open(cls, device_spec: str) -> TensorferryPath:
        """A path on a new environment's device ``device_spec``; without the device
        (the reason is kept) it measures host -> host only."""
        environment = tf.Environment()
        try:
            return cls(environment, environment.device(device_spec))
        except (tf.UnknownDeviceError, TypeError, ValueError) as exc:
            return cls(environment, None, str(exc))

    def without_wait(self) -> TensorferryPath:
        """A path named ``tensorferry-nowait``, on the same environment and device, that
        times only the copy calls into device memory, without waiting for the device."""
        return TensorferryPath(self._env, self.device, self.unavailable_reason, wait=False)

    @property
    def device_summary(self) -> str:
        """``"webgpu:0 (adapter name)"``, or why there is no device."""
        if self.device is None:
            return f"unavailable: {self.unavailable_reason}"
        return f"{self.device} ({self.device.name})" if self.device.name else str(self.device)

    @property
    def environment(self) -> tf.Environment:
        """The environment the transfers run in."""
        return self._env

    def describe(self, op: Op) -> str | None:
        """What ``op`` calls; None where this path does not measure it."""
        if self.device is None and op is not Op.H2H:
            return None
        if op in _WAITED_OPS:
            return _DESCRIPTIONS[op] + (_WAIT if self._wait else ", not waiting for the device")
        return _DESCRIPTIONS[op] if self._wait else None

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Tensors for ``workload``: host ones over ``data``, device ones freshly allocated."""
        env = self._env
        host_src = env.from_numpy(data.source, copy=False)
        host_dst = env.from_numpy(data.destination, copy=False)
        src_rows = [host_src[i] for i in range(workload.count)]
        dst_rows = [host_dst[i] for i in range(workload.count)]
        if workload.op is Op.H2H:
            return self._case(lambda: env.copy_tensor(host_src, host_dst), data)
        device = self.device
        if device is None:
            raise RuntimeError(f"no tensorferry device: {self.unavailable_reason}")

        def fresh() -> list[tf.Tensor]:
            return [env.empty((workload.nbytes,), np.uint8, device) for _ in range(workload.count)]

        def filled() -> list[tf.Tensor]:
            tensors = fresh()
            env.copy_tensors(src_rows, tensors)
            return tensors

        def into_device(sources: list[tf.Tensor], targets: list[tf.Tensor]) -> Case:
            if not self._wait:
                return self._case(lambda: env.copy_tensors(sources, targets), data, targets)

            def copy_and_wait() -> None:
                env.copy_tensors(sources, targets)
                env.synchronize(device)

            return self._case(copy_and_wait, data, targets)

        match workload.op:
            case Op.UPLOAD | Op.BATCH_UPLOAD:
                return into_device(src_rows, fresh())
            case Op.D2D | Op.BATCH_D2D:
                return into_device(filled(), fresh())
            case Op.DOWNLOAD:
                (source,) = filled()
                return self._case(lambda: source.numpy(out=data.destination[0]), data)
            case Op.BATCH_DOWNLOAD:
                sources = filled()
                return self._case(lambda: env.copy_tensors(sources, dst_rows), data)
            case Op.ROUNDTRIP:
                (target,) = fresh()

                def roundtrip() -> None:
                    env.copy_tensor(src_rows[0], target)
                    target.numpy(out=data.destination[0])

                return self._case(roundtrip, data, poisoned=[target])
            case Op.DOWNLOAD_NEW:
                (source,) = filled()
                return FunctionCase(
                    run=source.numpy,
                    verify=lambda: data.check(source.numpy().view(np.uint8), self.name),
                )
            case Op.DECODE_STEP | Op.DECODE_STEP_BATCHED:
                return self._decode_step(workload, data, device)
            case Op.MODEL_LOAD | Op.MODEL_LOAD_EXISTING:
                return self._model_load(workload, data, device)
        raise ValueError(f"tensorferry does not measure {workload.op}")

    def _decode_step(self, workload: Workload, data: HostData, device: tf.Device) -> Case:
        """Inputs uploaded one call each (or in one batch), then the logits downloaded."""
        env = self._env
        inputs = decode_inputs(data)
        host_inputs = [env.from_numpy(value, copy=False) for value in inputs]
        device_inputs = [env.empty((1, 1), np.int64, device) for _ in inputs]
        logits = env.empty((1, DECODE_VOCAB), np.float32, device)
        env.copy_tensor(env.from_numpy(data.source.view(np.float32), copy=False), logits)
        out = data.destination.view(np.float32)
        pairs = list(zip(host_inputs, device_inputs, strict=True))

        def one_call_each() -> None:
            for host, on_device in pairs:
                env.copy_tensor(host, on_device)
            logits.numpy(out=out)

        def batched() -> None:
            env.copy_tensors(host_inputs, device_inputs)
            logits.numpy(out=out)

        run = one_call_each if workload.op is Op.DECODE_STEP else batched

        def verify() -> None:
            poison(data.destination)
            poisoned = env.from_numpy(decode_poison())
            env.copy_tensors([poisoned] * len(device_inputs), device_inputs)
            run()
            check_decode_inputs([t.numpy() for t in device_inputs], inputs, self.name)
            data.check(data.destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def _model_load(self, workload: Workload, data: HostData, device: tf.Device) -> Case:
        """One ``copy_tensors`` of every tensor, into new tensors or existing ones."""
        env = self._env
        sources = [env.from_numpy(v, copy=False) for v in workload.split(data.source[0])]
        outputs = [env.from_numpy(v, copy=False) for v in workload.split(data.destination[0])]

        def load(targets: list[tf.Tensor]) -> list[tf.Tensor]:
            env.copy_tensors(sources, targets)
            if self._wait:
                env.synchronize(device)
            return targets

        def allocated() -> list[tf.Tensor]:
            return [env.empty((n,), np.uint8, device) for n in workload.parts]

        existing = allocated() if workload.op is Op.MODEL_LOAD_EXISTING else None

        def run() -> list[tf.Tensor]:
            return load(allocated() if existing is None else existing)

        def verify() -> None:
            poison(data.destination)
            if existing is not None:
                env.copy_tensors(outputs, existing)
            targets = run()
            env.copy_tensors(targets, outputs)
            data.check(data.destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def _case(
        self,
        run: Callable[[], object],
        data: HostData,
        read_back: Sequence[tf.Tensor] = (),
        *,
        poisoned: Sequence[tf.Tensor] = (),
    ) -> Case:
        """A case whose check poisons the device tensors it writes (``read_back`` and
        ``poisoned``) and the host array, runs once, copies ``read_back`` into the
        host array, and compares that with the source.

        Poison goes up in one batch from host memory, not by ``Environment.fill``
        (one call per tensor): the source pattern is new to this workload, so an
        upload that writes nothing fails the check all the same.
        """
        env = self._env
        written = [*read_back, *poisoned]

        def rows(count: int) -> list[tf.Tensor]:
            host = env.from_numpy(data.destination, copy=False)
            return [host[i] for i in range(count)]

        def verify() -> None:
            poison(data.destination)
            if written:
                env.copy_tensors(rows(len(written)), written)
            run()
            if read_back:
                env.copy_tensors(read_back, rows(len(read_back)))
            data.check(data.destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def close(self) -> None:
        """Close the environment (idempotent); a :meth:`without_wait` path leaves it
        to the path it came from."""
        if self._wait:
            self._env.close()
