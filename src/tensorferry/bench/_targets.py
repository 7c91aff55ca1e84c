"""tensorferry's performance targets per kind of machine, checked against the ratios of one run."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from ._runner import Result
from ._workload import Op, Workload, format_size

__all__ = ["TARGET_SETS", "Outcome", "Target", "evaluate", "select_target_set"]

_MiB = 1 << 20


class Kind(enum.Enum):
    """How a target compares tensorferry with its reference."""

    SPEEDUP = "speedup"  # peer time / tensorferry time >= threshold
    COST = "cost"  # tensorferry time / peer time <= threshold
    BANDWIDTH = "bandwidth"  # tensorferry GB/s >= threshold


@attrs.frozen
class Target:
    """One target: ``workload`` on tensorferry against ``peer`` (or absolute)."""

    text: str
    workload: Workload
    kind: Kind
    threshold: float
    peer: str = ""

    @property
    def requirement(self) -> str:
        """``">= 4x"``, ``"<= 1.15x"`` or ``">= 25 GB/s"``."""
        if self.kind is Kind.BANDWIDTH:
            return f">= {self.threshold:g} GB/s"
        sign = ">=" if self.kind is Kind.SPEEDUP else "<="
        return f"{sign} {self.threshold:g}x"


@attrs.frozen
class Outcome:
    """A target checked: its value, or why it could not be checked."""

    target: Target
    value: float | None
    passed: bool | None
    note: str = ""

    def line(self) -> str:
        """The report line, e.g. ``download 64 MiB: ... = 5.2x (target >= 4x) PASS``."""
        target = self.target
        if self.value is None:
            verdict = "FAIL" if self.passed is False else "not measured"
            return f"{target.text}: {verdict}: {self.note} (target {target.requirement})"
        unit = " GB/s" if target.kind is Kind.BANDWIDTH else "x"
        verdict = "PASS" if self.passed else "FAIL"
        return f"{target.text} = {self.value:.3g}{unit} (target {target.requirement}) {verdict}"


def _speedup(op: Op, nbytes: int, peer: str, threshold: float, text: str, count: int = 1) -> Target:
    return Target(text, Workload(op, nbytes, count), Kind.SPEEDUP, threshold, peer)


def _lavapipe_targets() -> tuple[Target, ...]:
    size = 64 * _MiB
    return (
        _speedup(Op.DOWNLOAD, size, "wgpu-py", 4, "download 64 MiB: tensorferry / read_buffer"),
        _speedup(
            Op.ROUNDTRIP,
            size,
            "wgpu-py",
            3,
            "upload+download 64 MiB: tensorferry / (write_buffer + read_buffer)",
        ),
        _speedup(
            Op.BATCH_DOWNLOAD,
            1024,
            "wgpu-py",
            20,
            "1000 x 1 KiB downloads: one copy_tensors / a loop of read_buffer",
            count=1000,
        ),
        Target(
            "cpu -> cpu 64 MiB: tensorferry time / numpy.copyto time",
            Workload(Op.H2H, size),
            Kind.COST,
            1.15,
            "numpy.copyto",
        ),
    )


def _gpu_targets() -> tuple[Target, ...]:
    size = 256 * _MiB
    targets: list[Target] = []
    for op in (Op.UPLOAD, Op.DOWNLOAD):
        label = f"{op.value} {format_size(size)}"
        targets += [
            Target(f"{label}: tensorferry", Workload(op, size), Kind.BANDWIDTH, 25),
            _speedup(op, size, "torch-cuda", 1, f"{label}: tensorferry / torch CUDA pageable"),
            _speedup(op, size, "wgpu-py", 5, f"{label}: tensorferry / raw wgpu-py"),
            _speedup(op, size, "ort-webgpu", 8, f"{label}: tensorferry / ONNX Runtime WebGPU EP"),
        ]
    targets.append(
        Target(
            "single 4 KiB upload: tensorferry time / (write_buffer + sync) time",
            Workload(Op.UPLOAD, 4096),
            Kind.COST,
            1.5,
            "wgpu-py",
        )
    )
    return tuple(targets)


TARGET_SETS = {"lavapipe": _lavapipe_targets(), "gpu": _gpu_targets()}
"""The targets by the kind of machine they were set for."""


def select_target_set(choice: str, adapter_type: str | None) -> list[str]:
    """Which target sets to check: ``auto`` picks by the wgpu adapter's type
    (a CPU adapter is lavapipe; a discrete or integrated GPU is a GPU)."""
    if choice == "none":
        return []
    if choice == "all":
        return list(TARGET_SETS)
    if choice != "auto":
        return [choice]
    kind = (adapter_type or "").lower()
    if kind == "cpu":
        return ["lavapipe"]
    if kind.endswith("gpu"):
        return ["gpu"]
    return []


def _find(results: Sequence[Result], workload: Workload, path: str) -> Result | None:
    return next((r for r in results if r.workload == workload and r.path == path), None)


def evaluate(target: Target, results: Sequence[Result]) -> Outcome:
    """Check ``target`` against ``results`` of one run."""
    ours = _find(results, target.workload, "tensorferry")
    if ours is None or ours.samples is None:
        if ours is None:
            return Outcome(target, None, None, "not in this run")
        return Outcome(target, None, False if ours.wrong_data else None, ours.error)
    if target.kind is Kind.BANDWIDTH:
        value = ours.gbps
        return Outcome(target, value, value >= target.threshold)
    theirs = _find(results, target.workload, target.peer)
    if theirs is None or theirs.samples is None:
        return Outcome(
            target, None, None, theirs.error if theirs else f"{target.peer} not in this run"
        )
    if target.kind is Kind.SPEEDUP:
        value = theirs.samples.median / ours.samples.median
        return Outcome(target, value, value >= target.threshold)
    value = ours.samples.median / theirs.samples.median
    return Outcome(target, value, value <= target.threshold)
