"""The multi-device workloads: ``fan-out`` and ``gpu-to-gpu``.

``fan-out`` is the ``model-load`` workload spread over every device of a backend:
tensor i goes to device i mod N, in one ``copy_tensors``, which the manager runs
per device concurrently. It is measured beside the same batch on one device, the
same spread batch run one group after another (a manager with fan-out off), and
the host's copy limit (numpy copying the same bytes on N threads).

``gpu-to-gpu`` copies one tensor between the first two devices (no transfer
connects them: the manager streams it through host memory), beside the single
download from the first and upload to the second, and torch's ``cuda:0 ->
cuda:1`` copy where torch sees two CUDA devices. Every case is verified byte for
byte before it is timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import attrs
import numpy as np
import numpy.typing as npt

import tensorferry as tf

from ._timing import Samples, Timing, measure_interleaved
from ._workload import HostData, Op, VerificationError, Workload, format_size, poison

__all__ = [
    "GPU_TO_GPU_SIZES",
    "MULTI_WORKLOADS",
    "MultiReport",
    "Rate",
    "gpu_devices",
    "measure_fan_out",
    "measure_gpu_to_gpu",
    "run_multi",
]

MULTI_WORKLOADS = ("fan-out", "gpu-to-gpu")
"""The workload names this module measures."""

GPU_TO_GPU_SIZES = (256 << 20, 1 << 30)
"""Sizes of ``gpu-to-gpu`` unless told otherwise."""

_TARGET_FRACTION = 0.8


@attrs.frozen
class Rate:
    """One measured case: what it is, bytes per run, and its run times (or why none)."""

    label: str
    nbytes: int
    samples: Samples | None = None
    error: str = ""

    @property
    def gbps(self) -> float | None:
        """Payload GB/s (1e9 bytes) at the median time; None when not measured."""
        if self.samples is None:
            return None
        return self.nbytes / self.samples.median / 1e9

    def line(self) -> str:
        """``label: 1.23 GB/s`` or ``label: not measured (why)``."""
        rate = self.gbps
        if rate is None:
            return f"  {self.label}: not measured ({self.error})"
        return f"  {self.label}: {rate:.3g} GB/s"


@attrs.frozen
class MultiReport:
    """The measured rates of the multi-device workloads and their target lines."""

    rates: list[Rate]
    targets: list[str]
    notes: list[str]

    def render(self) -> str:
        """The report section as text."""
        lines = ["", "multi-device workloads"]
        lines += [rate.line() for rate in self.rates]
        lines += [f"  note: {note}" for note in self.notes]
        if self.targets:
            lines += ["", "multi-device targets"]
            lines += [f"  {line}" for line in self.targets]
        return "\n".join(lines)


def gpu_devices(env: tf.Environment, backend: str) -> list[tf.Device]:
    """Every device of ``backend`` (its non-host devices), best first."""
    return [d for d in env.devices() if d.backend == backend and not d.is_host]


def _timed(
    runs: dict[str, Callable[[], object]], nbytes: dict[str, int], timing: Timing
) -> list[Rate]:
    outcome = measure_interleaved(runs, timing)
    rates = []
    for label in runs:
        result = outcome[label]
        if isinstance(result, Samples):
            rates.append(Rate(label, nbytes[label], result))
        else:
            rates.append(Rate(label, nbytes[label], error=f"{type(result).__name__}: {result}"))
    return rates


def _verified(run: Callable[[], object], check: Callable[[], None]) -> str:
    """Run once and check; return the error text, or "" when the data is right."""
    try:
        run()
        check()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def host_copy_limit(nbytes: int, threads: int, timing: Timing) -> Rate:
    """numpy copying ``nbytes`` on ``threads`` threads at once (the host's memcpy limit
    for spreading one batch over that many devices)."""
    source = np.ones(nbytes, np.uint8)
    target = np.empty_like(source)
    shares = np.array_split(np.arange(nbytes), threads)
    bounds = [(int(s[0]), int(s[-1]) + 1) for s in shares if s.size]

    def copy() -> None:
        workers = [
            threading.Thread(target=np.copyto, args=(target[a:b], source[a:b])) for a, b in bounds
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    label = f"host copy limit, numpy on {threads} thread(s)"
    return _timed({label: copy}, {label: nbytes}, timing)[0]


def measure_fan_out(
    env: tf.Environment, devices: Sequence[tf.Device], parts: Sequence[int], timing: Timing
) -> tuple[list[Rate], list[str]]:
    """The model-load batch (tensors of ``parts`` bytes) on the first device alone, and
    spread over ``devices`` concurrently and one group after another; target lines."""
    workload = _workload_of(parts)
    data = HostData.for_workload(workload)
    sources = [env.from_numpy(v, copy=False) for v in workload.split(data.source[0])]
    outputs = [env.from_numpy(v, copy=False) for v in workload.split(data.destination[0])]
    single = [env.empty((n,), np.uint8, devices[0]) for n in parts]
    spread = [env.empty((n,), np.uint8, devices[i % len(devices)]) for i, n in enumerate(parts)]
    in_order = tf.DataTransferManager(fan_out_threads=0)
    for transfer in env.data_transfer_manager.data_transfers:
        in_order.register_data_transfer(transfer)
    landed = np.empty(4, np.uint8)

    def loader(manager_copy: Callable[..., None], targets: list[tf.Tensor]) -> Callable[[], None]:
        lasts = {t.device: t for t in targets}.values()  # the last tensor of each device

        def load() -> None:
            manager_copy(sources, targets)
            for last in lasts:  # wait until every device has the data
                last[0:4].numpy(out=landed)

        return load

    def checker(targets: list[tf.Tensor]) -> Callable[[], None]:
        def check() -> None:
            poison(data.destination)
            env.copy_tensors(targets, outputs)
            data.check(data.destination, "tensorferry")

        return check

    count = len(devices)
    cases = {f"model-load on {devices[0]} alone": (single, env.copy_tensors)}
    if count > 1:
        cases[f"fan-out over {count} devices, concurrent"] = (spread, env.copy_tensors)
        cases[f"fan-out over {count} devices, one group after another"] = (
            spread,
            in_order.copy_tensors,
        )
    try:
        runs: dict[str, Callable[[], object]] = {}
        failed: list[Rate] = []
        for label, (tensors, copy) in cases.items():
            run = loader(copy, tensors)
            error = _verified(run, checker(tensors))
            if error:
                failed.append(Rate(label, workload.nbytes, error=error))
            else:
                runs[label] = run
        rates = _timed(runs, dict.fromkeys(runs, workload.nbytes), timing) + failed
    finally:
        for transfer in in_order.data_transfers:
            in_order.unregister_data_transfer(transfer, wait=True)
    limit = host_copy_limit(workload.nbytes, count, timing)
    by_label = {r.label: r.gbps for r in rates}
    single_rate = by_label.get(f"model-load on {devices[0]} alone")
    fanned = by_label.get(f"fan-out over {count} devices, concurrent")
    lines: list[str] = []
    if count < 2:
        lines.append(f"fan-out: needs two devices, found {count} ({devices[0]})")
    elif single_rate is None or fanned is None or limit.gbps is None:
        lines.append("fan-out: not measured (see the rates above)")
    else:
        ideal = min(count * single_rate, limit.gbps)
        ratio = fanned / ideal
        verdict = "PASS" if ratio >= _TARGET_FRACTION else "FAIL"
        lines.append(
            f"fan-out over {count} devices = {fanned:.3g} GB/s = {ratio:.2f}x of "
            f"min({count} x {single_rate:.3g}, host limit {limit.gbps:.3g}) GB/s "
            f"(target >= {_TARGET_FRACTION}x) {verdict}"
        )
    return [*rates, limit], lines


def _workload_of(parts: Sequence[int]) -> Workload:
    """The model-load workload of these tensor sizes."""
    return Workload(Op.MODEL_LOAD, sum(parts), group="fan-out", parts=tuple(parts))


def measure_gpu_to_gpu(
    env: tf.Environment, devices: Sequence[tf.Device], nbytes: int, timing: Timing
) -> tuple[list[Rate], list[str]]:
    """The routed copy ``devices[0] -> devices[1]`` of ``nbytes`` (through host memory,
    as the environment's manager routes it: whole, unless streaming is turned on)
    beside the single download from the first and upload to the second; the target line."""
    size = format_size(nbytes)
    if len(devices) < 2:
        found = ", ".join(map(str, devices)) or "none"
        return [], [f"gpu-to-gpu {size}: needs two devices, found {len(devices)} ({found})"]
    first, second = devices[0], devices[1]
    source_array = HostData.for_workload(_workload_of((nbytes,))).source.reshape(-1)
    host_in = env.from_numpy(source_array, copy=False)
    back = np.empty_like(source_array)
    host_out = env.from_numpy(back, copy=False)
    on_first = env.empty((nbytes,), np.uint8, first)
    on_second = env.empty((nbytes,), np.uint8, second)
    env.copy_tensor(host_in, on_first)
    landed = np.empty(4, np.uint8)

    def routed() -> None:
        env.copy_tensor(on_first, on_second)
        on_second[0:4].numpy(out=landed)

    def download() -> None:
        env.copy_tensor(on_first, host_out)

    def upload() -> None:
        env.copy_tensor(host_in, on_second)
        on_second[0:4].numpy(out=landed)

    def check_second() -> None:
        poison(back)
        env.copy_tensor(on_second, host_out)
        _check(back, source_array, "routed")

    def check_back() -> None:
        _check(back, source_array, "download")

    labels = {
        "routed": f"gpu-to-gpu {size}: {first} -> {second}, routed through host",
        "download": f"gpu-to-gpu {size}: download from {first}",
        "upload": f"gpu-to-gpu {size}: upload to {second}",
    }
    runs: dict[str, Callable[[], object]] = {}
    failed = []
    for key, run, check in (
        ("routed", routed, check_second),
        ("download", download, check_back),
        ("upload", upload, check_second),
    ):
        error = _verified(run, check)
        if error:
            failed.append(Rate(labels[key], nbytes, error=error))
        else:
            runs[labels[key]] = run
    rates = _timed(runs, dict.fromkeys(runs, nbytes), timing) + failed
    rates += _torch_peer(nbytes, timing)
    by_label = {r.label: r.gbps for r in rates}
    stream, down, up = (by_label.get(labels[k]) for k in ("routed", "download", "upload"))
    if stream is None or down is None or up is None:
        return rates, [f"gpu-to-gpu {size}: not measured (see the rates above)"]
    slower = min(down, up)
    ratio = stream / slower
    verdict = "PASS" if ratio >= _TARGET_FRACTION else "FAIL"
    return rates, [
        f"gpu-to-gpu {size}: routed copy {stream:.3g} GB/s = {ratio:.2f}x of the slower "
        f"of download {down:.3g} and upload {up:.3g} GB/s (target >= {_TARGET_FRACTION}x) "
        f"{verdict}"
    ]


def _check(got: npt.NDArray[np.uint8], expected: npt.NDArray[np.uint8], what: str) -> None:
    if not np.array_equal(got, expected):
        wrong = np.flatnonzero(got != expected)
        raise VerificationError(
            f"{what}: {wrong.size} of {expected.size} bytes differ, first at byte {int(wrong[0])}"
        )


def _torch_peer(nbytes: int, timing: Timing) -> list[Rate]:
    """torch's ``cuda:0 -> cuda:1`` copy, where torch sees two CUDA devices."""
    label = f"gpu-to-gpu {format_size(nbytes)}: torch cuda:0 -> cuda:1"
    try:
        import torch
    except ImportError:
        return [Rate(label, nbytes, error="torch is not importable")]
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return [Rate(label, nbytes, error="needs two CUDA devices")]
    source = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda:0")
    target = torch.empty(nbytes, dtype=torch.uint8, device="cuda:1")

    def copy() -> None:
        target.copy_(source)
        torch.cuda.synchronize("cuda:1")

    copy()
    if not torch.equal(target.cpu(), source.cpu()):
        return [Rate(label, nbytes, error="wrong data")]
    return _timed({label: copy}, {label: nbytes}, timing)


def run_multi(
    env: tf.Environment,
    backend: str,
    names: Sequence[str],
    *,
    parts: Sequence[int],
    gpu_to_gpu_sizes: Sequence[int] = GPU_TO_GPU_SIZES,
    timing: Timing | None = None,
) -> MultiReport:
    """Measure the multi-device workloads of ``names`` on the devices of ``backend``."""
    timing = timing or Timing()
    devices = gpu_devices(env, backend)
    rates: list[Rate] = []
    targets: list[str] = []
    notes: list[str] = []
    if not devices:
        return MultiReport([], [], [f"no {backend} devices: the multi-device workloads need two"])
    if "fan-out" in names:
        measured, lines = measure_fan_out(env, devices, parts, timing)
        rates += measured
        targets += lines
    if "gpu-to-gpu" in names:
        for size in gpu_to_gpu_sizes:
            limits = [n for n in map(_max_buffer, devices[:2]) if n is not None]
            if limits and size > min(limits):
                notes.append(f"gpu-to-gpu {format_size(size)}: above the largest buffer")
                continue
            measured, lines = measure_gpu_to_gpu(env, devices, size, timing)
            rates += measured
            targets += lines
    return MultiReport(rates, targets, notes)


def _max_buffer(device: tf.Device) -> int | None:
    value = device.property("max_buffer_size")
    return value if isinstance(value, int) else None
