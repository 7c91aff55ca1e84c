"""The named workloads: the size sweep and the batch, and the scenarios beside them
(``latency``, ``decode-step``, ``model-load``, ``sustained``), planned for one device."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import numpy.typing as npt

import tensorferry as tf

from ._workload import (
    POISON_BYTE,
    HostData,
    Op,
    VerificationError,
    Workload,
    approx_size,
    format_size,
)

__all__ = [
    "DECODE_INPUTS",
    "DECODE_OPS",
    "DECODE_VOCAB",
    "DEFAULT_WORKLOADS",
    "LATENCY_NBYTES",
    "LATENCY_OPS",
    "MODEL_LOAD_OPS",
    "QUICK_WORKLOADS",
    "SUSTAINED_OPS",
    "SUSTAINED_SIZES",
    "WORKLOAD_NAMES",
    "ModelLoad",
    "Plan",
    "check_decode_inputs",
    "decode_inputs",
    "decode_poison",
    "is_gpu",
    "max_buffer_size",
    "plan_workloads",
]

WORKLOAD_NAMES = (
    "sizes",
    "batches",
    "latency",
    "decode-step",
    "model-load",
    "sustained",
    "fan-out",
    "gpu-to-gpu",
)
"""Every workload ``--workloads`` can name: ``sizes`` is the sweep of the size ops,
``batches`` the batch of small tensors; ``fan-out`` and ``gpu-to-gpu`` use every
device of the backend (see :mod:`tensorferry.bench._multi`)."""

DEFAULT_WORKLOADS = ("sizes", "batches", "latency", "decode-step", "model-load")
"""What a run measures unless told otherwise; ``sustained`` (GiB-sized) only when named."""

QUICK_WORKLOADS = ("sizes", "batches", "latency", "decode-step")
"""What ``--quick`` measures."""

LATENCY_NBYTES = 4096
LATENCY_OPS = (Op.UPLOAD, Op.DOWNLOAD, Op.ROUNDTRIP)
"""The ``latency`` workload: one 4 KiB upload until landed, one download, one round trip."""

DECODE_OPS = (Op.DECODE_STEP, Op.DECODE_STEP_BATCHED)
DECODE_INPUTS = 3
"""A decoding step uploads three int64[1,1] tensors: token id, position and a flag."""
DECODE_VOCAB = 128256
"""...and downloads float32[1, DECODE_VOCAB] logits (Llama 3's vocabulary)."""

MODEL_LOAD_OPS = (Op.MODEL_LOAD, Op.MODEL_LOAD_EXISTING)

SUSTAINED_OPS = (Op.UPLOAD, Op.DOWNLOAD, Op.DOWNLOAD_NEW, Op.D2D)
SUSTAINED_SIZES = (1 << 30, 4 << 30)
SUSTAINED_STEP = 64 << 20
"""A sustained size above the device's largest buffer, but within a sixteenth of it,
is measured at the largest multiple of this that fits (4 GiB at 4032 MiB where
the largest buffer is 4 GiB - 2 MiB, as on the H200); a larger one is left out."""
"""Sizes of the ``sustained`` workload unless ``--sustained-sizes`` says otherwise."""

_GPU_MODEL_MAX = 64 << 20
_OTHER_MODEL_MAX = 4 << 20
_PART_ALIGNMENT = 256


@attrs.frozen
class ModelLoad:
    """The ``model-load`` workload: ``count`` tensors with sizes log-uniform from
    ``min_nbytes`` to the largest, drawn with ``seed`` (the same every run).

    ``max_nbytes`` None means 64 MiB on a GPU (about 1.9 GiB in all) and 4 MiB on
    other devices (lavapipe: about 170 MiB, seconds); ``limit`` caps either.
    """

    count: int = 300
    max_nbytes: int | None = None
    min_nbytes: int = 4096
    seed: int = 5
    limit: int | None = None

    def largest(self, gpu: bool) -> int:
        """The size of the largest tensor on a GPU (``gpu``) or another device."""
        if self.max_nbytes is not None:
            largest = self.max_nbytes
        else:
            largest = _GPU_MODEL_MAX if gpu else _OTHER_MODEL_MAX
        return largest if self.limit is None else min(largest, self.limit)

    def sizes(self, largest: int) -> tuple[int, ...]:
        """The tensor sizes, multiples of 256 bytes, in the order they are copied."""
        smallest = min(self.min_nbytes, largest)
        rng = np.random.default_rng(self.seed)
        logs = rng.uniform(np.log(smallest), np.log(largest), self.count)
        rounded = np.round(np.exp(logs) / _PART_ALIGNMENT) * _PART_ALIGNMENT
        return tuple(int(n) for n in np.clip(rounded, smallest, largest))


def decode_inputs(data: HostData) -> list[npt.NDArray[np.int64]]:
    """The token id, position and flag of a decoding step: new int64[1,1] arrays whose
    values come from the workload's pattern, so bytes left by an earlier workload never pass."""
    words = data.source.reshape(-1)[: 8 * DECODE_INPUTS].view(np.int64)
    return [np.array([[value]], dtype=np.int64) for value in words.tolist()]


def decode_poison() -> npt.NDArray[np.int64]:
    """An int64[1,1] of poison bytes, written over a step's inputs before it is checked."""
    return np.full((1, 1), POISON_BYTE, np.uint8).repeat(8, axis=1).view(np.int64)


def check_decode_inputs(
    received: Sequence[npt.ArrayLike], expected: Sequence[npt.NDArray[np.int64]], what: str
) -> None:
    """Raise :class:`VerificationError` unless the inputs read back from the device
    (``received``) are ``expected``, value for value."""
    got = [np.asarray(r).reshape(-1).view(np.int64).tolist() for r in received]
    want = [e.reshape(-1).tolist() for e in expected]
    if got != want:
        raise VerificationError(
            f"{what}: the decode step's inputs on the device are {got}, not {want}"
        )


def is_gpu(device: tf.Device | None) -> bool:
    """True for a device on a discrete or integrated GPU (not lavapipe, not the host)."""
    if device is None or device.is_host:
        return False
    adapter_type = str(device.property("adapter_type") or "").lower()
    if adapter_type:
        return adapter_type.endswith("gpu")
    return device.type is tf.DeviceType.GPU


def max_buffer_size(device: tf.Device | None) -> int | None:
    """The largest buffer ``device`` can allocate, where its backend says."""
    if device is None:
        return None
    value = device.property("max_buffer_size")
    try:
        return int(str(value)) if value else None
    except ValueError:
        return None


@attrs.frozen
class Plan:
    """The workloads to measure, in order, and notes on what was left out and why."""

    workloads: list[Workload]
    notes: list[str]


def plan_workloads(
    names: Sequence[str],
    ops: Sequence[Op],
    sweep: Sequence[Workload],
    model_load: ModelLoad,
    sustained_sizes: Sequence[int] | None,
    device: tf.Device | None,
) -> Plan:
    """Every workload of ``names`` whose op is in ``ops``, for ``device``.

    ``sweep`` holds the size sweep's and the batch's workloads. The quick
    scenarios come first (``latency`` before anything has churned the
    allocator), the GiB-sized ones last. ``sustained`` runs at
    :data:`SUSTAINED_SIZES` on GPUs only unless ``sustained_sizes`` names sizes;
    a size above the device's largest buffer is measured a little smaller
    (:data:`SUSTAINED_STEP`) or left out, with a note.
    """
    notes: list[str] = []
    gpu = is_gpu(device)
    planned: list[Workload] = []
    if "latency" in names:
        planned += [Workload(op, LATENCY_NBYTES, group="latency") for op in LATENCY_OPS]
    if "decode-step" in names:
        planned += [Workload(op, DECODE_VOCAB * 4, group="decode-step") for op in DECODE_OPS]
    planned += [w for w in sweep if ("batches" if w.op.is_batch else "sizes") in names]
    if "model-load" in names:
        parts = model_load.sizes(model_load.largest(gpu))
        planned += [
            Workload(op, sum(parts), group="model-load", parts=parts) for op in MODEL_LOAD_OPS
        ]
    if "sustained" in names:
        planned += _sustained(sustained_sizes, device, gpu, notes)
    return Plan([w for w in planned if w.op in ops], notes)


def _sustained(
    sizes: Sequence[int] | None, device: tf.Device | None, gpu: bool, notes: list[str]
) -> list[Workload]:
    if sizes is None:
        if not gpu:
            notes.append(
                f"sustained: left out, it runs at {', '.join(map(format_size, SUSTAINED_SIZES))} "
                "on GPUs only; --sustained-sizes runs it here"
            )
            return []
        sizes = SUSTAINED_SIZES
    largest = max_buffer_size(device)
    kept = []
    for size in sorted(set(sizes)):
        if largest is not None and size > largest:
            fitting = largest // SUSTAINED_STEP * SUSTAINED_STEP
            limit = f"the largest buffer of {device} ({approx_size(largest)}, {largest} bytes)"
            if fitting < size - size // 16:
                notes.append(f"sustained {format_size(size)}: left out, above {limit}")
                continue
            notes.append(
                f"sustained {format_size(size)}: measured at {format_size(fitting)}, {limit}"
            )
            size = fitting
        kept.append(size)
    return [Workload(op, size, group="sustained") for size in kept for op in SUSTAINED_OPS]
