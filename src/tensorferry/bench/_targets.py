"""tensorferry's performance targets per kind of machine, checked against the ratios of one run."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from ._host_accessible import HostAccessiblePath
from ._numpy import ThreadedNumpyPath
from ._runner import Result
from ._suites import DECODE_VOCAB, LATENCY_NBYTES
from ._workload import Op, Workload, format_size

__all__ = [
    "TARGET_SETS",
    "Outcome",
    "Target",
    "evaluate",
    "select_target_set",
    "workload_targets",
]

_MiB = 1 << 20


class Kind(enum.Enum):
    """How a target compares tensorferry with its reference."""

    SPEEDUP = "speedup"  # peer time / tensorferry time >= threshold
    COST = "cost"  # tensorferry time / peer time <= threshold
    BANDWIDTH = "bandwidth"  # tensorferry GB/s >= threshold
    TIME = "time"  # tensorferry median (p50) seconds <= threshold


def _duration(seconds: float) -> str:
    """``9e-05`` -> ``"90 us"``, ``0.003`` -> ``"3 ms"``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e3:.3g} ms"


@attrs.frozen
class Target:
    """One target: ``workload`` on tensorferry's ``path`` against ``peer`` (or absolute).

    ``reference`` names a path whose rate in the same run says what the host
    itself reaches on the same work (its own threaded copy); the report prints it
    beside the value, so that a target missed where the host stops shows that.
    """

    text: str
    workload: Workload
    kind: Kind
    threshold: float
    peer: str = ""
    path: str = "tensorferry"
    reference: str = ""

    @property
    def requirement(self) -> str:
        """``">= 4x"``, ``"<= 1.15x"`` or ``">= 25 GB/s"``."""
        if self.kind is Kind.BANDWIDTH:
            return f">= {self.threshold:g} GB/s"
        if self.kind is Kind.TIME:
            return f"<= {_duration(self.threshold)} p50"
        sign = ">=" if self.kind is Kind.SPEEDUP else "<="
        return f"{sign} {self.threshold:g}x"


@attrs.frozen
class Outcome:
    """A target checked: its value, or why it could not be checked."""

    target: Target
    value: float | None
    passed: bool | None
    note: str = ""
    reference: float | None = None
    """GB/s of the target's reference path in the same run, if it measured the workload."""

    def line(self) -> str:
        """The report line, e.g. ``download 64 MiB: ... = 5.2x (target >= 4x) PASS``,
        followed by the reference path's rate and tensorferry's fraction of it, if
        measured."""
        target = self.target
        if self.value is None:
            verdict = "FAIL" if self.passed is False else "not measured"
            return f"{target.text}: {verdict}: {self.note} (target {target.requirement})"
        verdict = "PASS" if self.passed else "FAIL"
        if target.kind is Kind.TIME:
            value = _duration(self.value)
        else:
            value = f"{self.value:.3g}{' GB/s' if target.kind is Kind.BANDWIDTH else 'x'}"
        line = f"{target.text} = {value} (target {target.requirement}) {verdict}"
        if self.reference is not None:
            line += (
                f"; the host's own copy ({target.reference}) {self.reference:.3g} GB/s, "
                f"tensorferry at {self.value / self.reference:.2f}x of it"
            )
        return line


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


def _sized(results: Sequence[Result], op: Op, smallest: int, largest: int) -> list[Workload]:
    """The workloads of ``op`` the sweep and ``sustained`` measured from ``smallest``
    to ``largest`` bytes, smallest first."""
    found = {
        r.workload
        for r in results
        if r.workload.op is op and r.workload.group in ("", "sustained")
        if smallest <= r.workload.nbytes <= largest
    }
    return sorted(found, key=lambda w: (w.nbytes, w.group))


def _text(workload: Workload) -> str:
    """``"upload 4 KiB"``, or ``"sustained upload 1 GiB"``."""
    group = f"{workload.group} " if workload.group else ""
    return f"{group}{workload.op.value} {format_size(workload.nbytes)}"


def _against_raw(results: Sequence[Result], threshold: float, largest: int) -> list[Target]:
    """tensorferry / raw wgpu-py >= ``threshold`` for every size measured up and down
    from 4 KiB to ``largest``."""
    return [
        Target(f"{_text(w)}: tensorferry / raw wgpu-py", w, Kind.SPEEDUP, threshold, "wgpu-py")
        for op in (Op.UPLOAD, Op.DOWNLOAD)
        for w in _sized(results, op, 4 << 10, largest)
    ]


def _sustained_near(results: Sequence[Result], op: Op, nbytes: int) -> Workload:
    """The sustained workload of ``op`` at ``nbytes``, else the largest this run measured
    within a sixteenth below it (where the device's largest buffer is a little
    smaller: 4000 or 4032 MiB for 4 GiB on the H200)."""
    found = [
        r.workload
        for r in results
        if r.workload.op is op
        and r.workload.group == "sustained"
        and nbytes - nbytes // 16 <= r.workload.nbytes <= nbytes
    ]
    return max(found, key=lambda w: w.nbytes, default=Workload(op, nbytes, group="sustained"))


def _device_copy(results: Sequence[Result], nbytes: int) -> Workload:
    """The d2d workload of ``nbytes`` this run measured: the sweep's, else ``sustained``'s."""
    found = _sized(results, Op.D2D, nbytes, nbytes)
    return found[0] if found else Workload(Op.D2D, nbytes)


_LATENCY_UPLOAD = Workload(Op.UPLOAD, LATENCY_NBYTES, group="latency")
_LATENCY_DOWNLOAD = Workload(Op.DOWNLOAD, LATENCY_NBYTES, group="latency")
_BATCH_OPS = (Op.BATCH_UPLOAD, Op.BATCH_DOWNLOAD, Op.BATCH_D2D)
_GiB = 1 << 30


def _lavapipe_workload_targets(results: Sequence[Result]) -> list[Target]:
    return [
        *_against_raw(results, 0.95, 4 * _MiB),
        Target(
            "4 KiB download (latency workload): tensorferry / read_buffer",
            _LATENCY_DOWNLOAD,
            Kind.SPEEDUP,
            1.2,
            "wgpu-py",
        ),
        _speedup(
            Op.BATCH_UPLOAD,
            1024,
            "wgpu-py",
            2,
            "1000 x 1 KiB upload: one copy_tensors / a loop of write_buffer",
            count=1000,
        ),
    ]


def _model_load(results: Sequence[Result]) -> Workload:
    """The run's model-load workload (its sizes depend on the options and the device)."""
    found = [r.workload for r in results if r.workload.op is Op.MODEL_LOAD]
    return found[0] if found else Workload(Op.MODEL_LOAD, 0, group="model-load")


def _gpu_workload_targets(results: Sequence[Result]) -> list[Target]:
    targets = [
        Target("4 KiB download (latency workload)", _LATENCY_DOWNLOAD, Kind.TIME, 90e-6),
        Target(
            "4 KiB download (latency workload): tensorferry / read_buffer",
            _LATENCY_DOWNLOAD,
            Kind.SPEEDUP,
            2,
            "wgpu-py",
        ),
        Target("4 KiB upload until landed (latency workload)", _LATENCY_UPLOAD, Kind.TIME, 100e-6),
        *(
            Target(op.value, Workload(op, 4 * DECODE_VOCAB, group="decode-step"), Kind.TIME, 200e-6)
            for op in (Op.DECODE_STEP, Op.DECODE_STEP_BATCHED)
        ),
    ]
    for op in _BATCH_OPS:
        batch = Workload(op, 1024, 1000)
        targets += [
            Target(f"{op.value} 1000 x 1 KiB", batch, Kind.TIME, 3e-3),
            Target(
                f"{op.value} 1000 x 1 KiB: tensorferry / torch CUDA loop",
                batch,
                Kind.SPEEDUP,
                4,
                "torch-cuda",
            ),
        ]
    model = _model_load(results)
    targets += [
        Target("model-load, allocation included", model, Kind.BANDWIDTH, 25),
        Target(
            "model-load: tensorferry / torch .to('cuda') from pageable memory",
            model,
            Kind.SPEEDUP,
            3.5,
            "torch-cuda",
        ),
    ]
    d2d_1g, d2d_256m = _device_copy(results, _GiB), _device_copy(results, 256 * _MiB)
    targets += [
        Target(_text(d2d_1g), d2d_1g, Kind.BANDWIDTH, 1000),
        Target(_text(d2d_256m), d2d_256m, Kind.BANDWIDTH, 700),
        Target(
            f"{_text(d2d_256m)}: tensorferry / copy_buffer_to_buffer",
            d2d_256m,
            Kind.SPEEDUP,
            2.5,
            "wgpu-py",
        ),
    ]
    targets += [
        Target(
            _text(w) if w.nbytes == n else f"{_text(w)} (for {format_size(n)})",
            w,
            Kind.BANDWIDTH,
            25,
            reference=ThreadedNumpyPath.name,
        )
        for n in (_GiB, 4 * _GiB)
        for op in (Op.UPLOAD, Op.DOWNLOAD, Op.DOWNLOAD_NEW)
        for w in [_sustained_near(results, op, n)]
    ]
    return [*targets, *_against_raw(results, 1.0, _GiB), *_host_accessible(results)]


def _host_accessible(results: Sequence[Result]) -> list[Target]:
    """Host-accessible memory (tensorferry's pinned memory) at >= 45 GB/s and >= 0.8x
    torch's pinned copies, both ways, at the sizes from 256 MiB that this run measured
    the host-accessible path at."""
    path = HostAccessiblePath.name
    return [
        target
        for op in (Op.UPLOAD, Op.DOWNLOAD)
        for w in _sized(results, op, 256 * _MiB, 4 * _GiB)
        if _find(results, w, path) is not None
        for target in (
            Target(f"{_text(w)} host-accessible", w, Kind.BANDWIDTH, 45, path=path),
            Target(
                f"{_text(w)}: host-accessible / torch CUDA pinned",
                w,
                Kind.SPEEDUP,
                0.8,
                "torch-cuda-pinned",
                path=path,
            ),
        )
    ]


_WORKLOAD_TARGETS = {"lavapipe": _lavapipe_workload_targets, "gpu": _gpu_workload_targets}


def workload_targets(name: str, results: Sequence[Result]) -> list[Target]:
    """The latency and bandwidth targets of target set ``name`` (``lavapipe`` or ``gpu``)
    for the latency, decode-step, model-load and sustained workloads and the sweep sizes
    of ``results``; separate from :data:`TARGET_SETS`, whose workloads are fixed."""
    return _WORKLOAD_TARGETS[name](results)


def _find(results: Sequence[Result], workload: Workload, path: str) -> Result | None:
    return next((r for r in results if r.workload == workload and r.path == path), None)


def evaluate(target: Target, results: Sequence[Result]) -> Outcome:
    """Check ``target`` against ``results`` of one run."""
    ours = _find(results, target.workload, target.path)
    if ours is None or ours.samples is None:
        if ours is None:
            return Outcome(target, None, None, "not in this run")
        return Outcome(target, None, False if ours.wrong_data else None, ours.error)
    if target.kind is Kind.BANDWIDTH:
        value = ours.gbps
        host = _find(results, target.workload, target.reference) if target.reference else None
        reference = host.gbps if host is not None and host.samples is not None else None
        return Outcome(target, value, value >= target.threshold, reference=reference)
    if target.kind is Kind.TIME:
        value = ours.samples.median
        return Outcome(target, value, value <= target.threshold)
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
