"""Open the paths, run every (workload, path) case, and collect the results."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from ._path import Case, PathUnavailableError, TransferPath
from ._progress import Progress
from ._suites import DEFAULT_WORKLOADS, ModelLoad, plan_workloads
from ._tensorferry import TensorferryPath
from ._timing import Samples, Timing, measure_interleaved
from ._workload import BATCH_OPS, SIZE_OPS, HostData, Op, VerificationError, Workload

__all__ = [
    "DEFAULT_PATHS",
    "DEFAULT_SIZES",
    "LATENCY_TIMING",
    "PATH_NAMES",
    "SUSTAINED_TIMING",
    "BenchConfig",
    "PathInfo",
    "Result",
    "RunOutcome",
    "measure_workload",
    "run_benchmark",
]

PATH_NAMES = (
    "tensorferry",
    "tensorferry-nowait",
    "wgpu-py",
    "numpy.copyto",
    "numpy.copyto-threads",
    "torch-cuda",
    "torch-cuda-pinned",
    "tensorferry-host-accessible",
    "ort-webgpu",
)
"""Every path the benchmark knows, in table order."""

_OPT_IN = frozenset({"tensorferry-nowait", "tensorferry-host-accessible"})

DEFAULT_PATHS = tuple(name for name in PATH_NAMES if name not in _OPT_IN)
"""What a run measures unless ``--paths`` says otherwise (``tensorferry-nowait`` and
``tensorferry-host-accessible``, upload/download only, are asked for by name)."""

DEFAULT_SIZES = tuple(4**k * 1024 for k in range(1, 10))
"""Powers of 4 from 4 KiB to 256 MiB."""

LATENCY_TIMING = Timing(
    warmup=20, min_repeats=300, min_seconds=0.0, max_repeats=300, block=50, block_warmup=2
)
"""``latency`` and ``decode-step``: 300 runs each, for a p99 that means something, in
blocks of 50 runs of one path (each led by 2 untimed runs), so that no
microsecond-scale run is timed right after another library used the GPU."""

SUSTAINED_TIMING = Timing(
    warmup=1, min_repeats=3, min_seconds=0.0, max_repeats=3, block=3, block_warmup=1
)
"""``sustained``: GiB-sized runs, three each after one untimed, in one block per path
(a 1 GiB device copy takes under a millisecond on an H200: alternating paths would
time it right after another library's GPU context)."""


@attrs.frozen
class BenchConfig:
    """What one benchmark run measures, and how long it measures each case.

    ``workload_names`` picks among :data:`~tensorferry.bench._suites.WORKLOAD_NAMES`;
    ``ops`` filters the ops of every workload. ``timing`` times the sweep, the
    batch and ``model-load``; ``latency_timing`` the ``latency`` and
    ``decode-step`` cases; ``sustained_timing`` the ``sustained`` ones.
    ``sustained_sizes`` None runs ``sustained`` at its own sizes, on GPUs only.
    """

    device: str = "webgpu"
    sizes: tuple[int, ...] = DEFAULT_SIZES
    batch_count: int = 1000
    batch_nbytes: int = 1024
    ops: tuple[Op, ...] = tuple(Op)
    paths: tuple[str, ...] = DEFAULT_PATHS
    timing: Timing = attrs.field(factory=Timing)
    progress: bool = True
    traceback: bool = False
    workload_names: tuple[str, ...] = DEFAULT_WORKLOADS
    latency_timing: Timing = LATENCY_TIMING
    sustained_timing: Timing = SUSTAINED_TIMING
    model_load: ModelLoad = attrs.field(factory=ModelLoad)
    sustained_sizes: tuple[int, ...] | None = None

    def sweep_workloads(self) -> list[Workload]:
        """Batches first (they are quick), then every size op, smallest size first."""
        batches = [Workload(op, self.batch_nbytes, self.batch_count) for op in BATCH_OPS]
        sized = [Workload(op, n) for n in sorted(self.sizes) for op in SIZE_OPS]
        return [w for w in (*batches, *sized) if w.op in self.ops]

    def timing_for(self, workload: Workload) -> Timing:
        """How long ``workload``'s cases are timed."""
        if workload.group in ("latency", "decode-step"):
            return self.latency_timing
        if workload.group == "sustained":
            return self.sustained_timing
        return self.timing


@attrs.frozen
class PathInfo:
    """Whether a path could be opened, and what it measures."""

    name: str
    available: bool
    reason: str = ""
    descriptions: dict[str, str] = attrs.Factory(dict)
    details: dict[str, object] = attrs.Factory(dict)


@attrs.frozen
class Result:
    """One (workload, path) case: its run times, or why it has none."""

    workload: Workload
    path: str
    samples: Samples | None = None
    error: str = ""
    wrong_data: bool = False

    @property
    def ok(self) -> bool:
        """True when the case was measured and its data verified."""
        return self.samples is not None

    @property
    def gbps(self) -> float:
        """Payload bytes per median second, in GB/s (1e9 bytes); raises if not measured."""
        if self.samples is None:
            raise ValueError(f"{self.path} {self.workload.label} was not measured: {self.error}")
        return self.workload.total_bytes / self.samples.median / 1e9


@attrs.frozen
class RunOutcome:
    """Everything a run found out, ready for the report."""

    config: BenchConfig
    paths: list[PathInfo]
    results: list[Result]
    device: dict[str, object]
    backend_errors: dict[str, str]
    interrupted: bool = False
    notes: list[str] = attrs.Factory(list)


def _openers(tensorferry: TensorferryPath) -> dict[str, Callable[[], TransferPath]]:
    """How to open each path; imports of optional peers happen only when asked for."""

    def wgpu() -> TransferPath:
        from ._wgpu import WgpuPath

        return WgpuPath(tensorferry.device)

    def numpy() -> TransferPath:
        from ._numpy import NumpyPath

        return NumpyPath()

    def threaded_numpy() -> TransferPath:
        from ._numpy import ThreadedNumpyPath

        return ThreadedNumpyPath()

    def torch(pinned: bool) -> Callable[[], TransferPath]:
        def open_torch() -> TransferPath:
            from ._torch import TorchPath

            return TorchPath(pinned=pinned)

        return open_torch

    def ort() -> TransferPath:
        from ._ort import OrtWebGpuPath

        return OrtWebGpuPath()

    def host_accessible() -> TransferPath:
        from ._host_accessible import HostAccessiblePath

        return HostAccessiblePath(tensorferry.environment, tensorferry.device)

    return {
        "tensorferry": lambda: tensorferry,
        "tensorferry-nowait": tensorferry.without_wait,
        "wgpu-py": wgpu,
        "numpy.copyto": numpy,
        "numpy.copyto-threads": threaded_numpy,
        "torch-cuda": torch(False),
        "torch-cuda-pinned": torch(True),
        "tensorferry-host-accessible": host_accessible,
        "ort-webgpu": ort,
    }


_DETAIL_NAMES = {
    "device_summary": "device",
    "device_name": "device",
    "adapter": "adapter",
    "allocation": "allocation",
}


def _details(path: TransferPath) -> dict[str, object]:
    """What a path tells about its device, for the report (attributes it may have)."""
    return {
        label: getattr(path, attribute)
        for attribute, label in _DETAIL_NAMES.items()
        if hasattr(path, attribute)
    }


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _device_info(tensorferry: TensorferryPath) -> dict[str, object]:
    device = tensorferry.device
    if device is None:
        return {"spec": None, "unavailable": tensorferry.unavailable_reason}
    return {
        "spec": str(device),
        "name": device.name,
        "backend": device.backend,
        "type": device.type.value,
        "memory": device.memory.value,
        "vendor_id": device.vendor_id,
        "device_id": device.device_id,
        "properties": dict(device.properties),
    }


@contextmanager
def _opened_paths(
    config: BenchConfig, tensorferry: TensorferryPath
) -> Iterator[tuple[list[TransferPath], list[PathInfo]]]:
    opened: list[TransferPath] = []
    infos: list[PathInfo] = []
    openers = _openers(tensorferry)
    try:
        for name in config.paths:
            try:
                path = openers[name]()
            except PathUnavailableError as exc:
                infos.append(PathInfo(name, False, str(exc)))
                continue
            except Exception as exc:  # a peer's own bug or environment: report, go on
                infos.append(PathInfo(name, False, f"failed to open: {_describe_error(exc)}"))
                continue
            opened.append(path)
            descriptions = {
                op.value: text for op in config.ops if (text := path.describe(op)) is not None
            }
            infos.append(PathInfo(name, True, "", descriptions, _details(path)))
        yield opened, infos
    finally:
        for path in reversed(opened):
            try:
                path.close()
            except Exception as exc:
                print(f"warning: closing {path.name} failed: {exc}", file=sys.stderr)


def measure_workload(
    paths: Sequence[TransferPath], workload: Workload, timing: Timing, show_traceback: bool = False
) -> list[Result]:
    """Set up, verify and time every path on one workload; release its buffers after."""
    data = HostData.for_workload(workload)
    failed: dict[str, Result] = {}
    cases: dict[str, Case] = {}

    def fail(name: str, exc: Exception, prefix: str = "") -> None:
        if show_traceback:
            traceback.print_exception(exc)
        if isinstance(exc, VerificationError):
            failed[name] = Result(workload, name, error=f"wrong data: {exc}", wrong_data=True)
        else:
            failed[name] = Result(workload, name, error=prefix + _describe_error(exc))

    try:
        for path in paths:
            try:
                cases[path.name] = path.prepare(workload, data)
            except Exception as exc:
                fail(path.name, exc, "setup failed: ")
                continue
            try:
                cases[path.name].verify()
            except Exception as exc:
                fail(path.name, exc)
        timed = measure_interleaved(
            {name: case.run for name, case in cases.items() if name not in failed}, timing
        )
    finally:
        for name, case in cases.items():
            try:
                case.close()
            except Exception as exc:
                print(f"warning: releasing {name} buffers failed: {exc}", file=sys.stderr)
    results = []
    for path in paths:
        outcome = timed.get(path.name)
        if isinstance(outcome, Samples):
            results.append(Result(workload, path.name, outcome))
            continue
        if isinstance(outcome, Exception):
            fail(path.name, outcome)
        results.append(failed[path.name])
    return results


def _takes(path: TransferPath, workload: Workload) -> bool:
    """Whether ``path`` measures ``workload``: it describes the op, and its optional
    ``groups`` attribute (the workload groups it is limited to, ``""`` the sweep)
    is absent or names the workload's group."""
    groups: frozenset[str] | None = getattr(path, "groups", None)
    return path.describe(workload.op) is not None and (groups is None or workload.group in groups)


def run_benchmark(config: BenchConfig) -> RunOutcome:
    """Measure every workload of ``config`` on every available path.

    Never raises for a path that fails: its results carry the error instead.
    Ctrl-C stops measuring and returns what was measured so far.
    """
    tensorferry = TensorferryPath.open(config.device)
    results: list[Result] = []
    interrupted = False
    try:
        planned = plan_workloads(
            config.workload_names,
            config.ops,
            config.sweep_workloads(),
            config.model_load,
            config.sustained_sizes,
            tensorferry.device,
        )
        with _opened_paths(config, tensorferry) as (paths, infos):
            plan = [
                (workload, [p for p in paths if _takes(p, workload)])
                for workload in planned.workloads
            ]
            with Progress(sum(len(p) for _, p in plan), enabled=config.progress) as progress:
                try:
                    for workload, takers in plan:
                        if not takers:
                            continue
                        progress.show(
                            f"{workload.group or 'sweep'}: {workload.op.value} {workload.label}"
                        )
                        results += measure_workload(
                            takers, workload, config.timing_for(workload), config.traceback
                        )
                        progress.advance(len(takers))
                except KeyboardInterrupt:
                    interrupted = True
        return RunOutcome(
            config=config,
            paths=infos,
            results=results,
            device=_device_info(tensorferry),
            backend_errors=tensorferry.environment.backend_errors,
            interrupted=interrupted,
            notes=planned.notes,
        )
    finally:
        tensorferry.close()
