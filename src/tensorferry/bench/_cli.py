"""Command line of the benchmark: ``tensorferry bench`` and ``python -m tensorferry.bench``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

import tensorferry as tf

from ._multi import GPU_TO_GPU_SIZES, MULTI_WORKLOADS, MultiReport, gpu_devices, run_multi
from ._plot import PlotUnavailableError, draw_plot
from ._report import check_targets, machine_info, render_text, to_json
from ._runner import (
    DEFAULT_PATHS,
    DEFAULT_SIZES,
    LATENCY_TIMING,
    PATH_NAMES,
    BenchConfig,
    Result,
    RunOutcome,
    run_benchmark,
)
from ._suites import DEFAULT_WORKLOADS, QUICK_WORKLOADS, WORKLOAD_NAMES, ModelLoad, is_gpu
from ._targets import TARGET_SETS, select_target_set
from ._timing import Samples, Timing
from ._workload import Op, format_size, parse_size

__all__ = ["EXIT_UNAVAILABLE", "build_parser", "main"]

_QUICK_SMALL_SIZES = (4 << 10, 1 << 20)
"""What ``--quick`` measures beside the sizes of the targets it checks."""
_FULL_TIMING = Timing(block=10, block_warmup=1)
_QUICK_TIMING = Timing(
    warmup=1, min_repeats=3, min_seconds=0.02, max_repeats=50, block=10, block_warmup=1
)
_QUICK_LATENCY = Timing(
    warmup=10, min_repeats=100, min_seconds=0.0, max_repeats=100, block=25, block_warmup=2
)
_RESULTS_DIR = Path("bench-results")

EXIT_UNAVAILABLE = 3
"""Exit status when the device asked for (``--device``) cannot be used."""


def _size_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_size(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batch(text: str) -> tuple[int, int]:
    count, sep, size = text.lower().partition("x")
    try:
        if not sep or int(count) <= 0:
            raise ValueError(f"cannot parse batch {text!r}; expected COUNTxSIZE, e.g. 1000x1K")
        return int(count), parse_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _choices(valid: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                f"choose from: {', '.join(valid)}"
            )
        return names

    return parse


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Measure tensorferry's transfers (upload, download, device-to-device, round trip, "
            "host-to-host, and batches of small tensors) next to raw wgpu-py, numpy.copyto, "
            "torch CUDA and ONNX Runtime's WebGPU EP where those are available. Prints GB/s "
            "tables, ratios and how the run compares with tensorferry's performance targets "
            "for the kind of device, writes JSON and a PNG plot. Exit status: 0; 1 when a "
            "transfer returned wrong data; 2 for bad options; 3 when the device cannot be "
            "used (nothing is measured or written then); 130 after Ctrl-C."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seconds, not minutes: few repeats, the batches, and sizes "
        f"{', '.join(map(format_size, _QUICK_SMALL_SIZES))} plus those of the targets "
        "checked (64 MiB on a CPU adapter, 256 MiB and 4 KiB on a GPU)",
    )
    parser.add_argument(
        "--device",
        default="webgpu",
        help="tensorferry device: webgpu, webgpu:1, cpu... (default: webgpu)",
    )
    parser.add_argument(
        "--sizes",
        type=_size_list,
        help="comma-separated sizes, e.g. 4K,1M,64MiB (default: powers of 4 from 4 KiB to 256 MiB)",
    )
    parser.add_argument("--max-size", type=_one_size, help="leave out sizes above this")
    parser.add_argument(
        "--batch",
        type=_batch,
        default=(1000, 1024),
        metavar="COUNTxSIZE",
        help="the batch workload (default: 1000x1K)",
    )
    parser.add_argument(
        "--workloads",
        type=_choices((*WORKLOAD_NAMES, "all")),
        help=f"comma-separated workloads: {', '.join(WORKLOAD_NAMES)}, or all (default: "
        f"{','.join(DEFAULT_WORKLOADS)}; --quick: {','.join(QUICK_WORKLOADS)}). sizes: the "
        "size ops over --sizes; batches: --batch; latency: 4 KiB upload until landed, "
        "download and round trip, p50/p99; decode-step: three int64[1,1] uploads then "
        "float32[1,128256] logits down; model-load: --model-tensors tensors, log-uniform "
        "sizes from 4 KiB to --model-max-size, into new and into existing device tensors; "
        "sustained: upload, download and download into a new array at --sustained-sizes; "
        "fan-out: model-load spread over every device of the backend, beside one device, "
        "one group after another and the host's copy limit; gpu-to-gpu: the first two "
        "devices, streamed through host, beside their download and upload (and torch's "
        "cuda:0 -> cuda:1) at --gpu-to-gpu-sizes",
    )
    parser.add_argument(
        "--gpu-to-gpu-sizes",
        type=_size_list,
        default=GPU_TO_GPU_SIZES,
        metavar="SIZES",
        help="sizes of the gpu-to-gpu workload (default: 256MiB,1GiB)",
    )
    op_names = [op.value for op in Op]
    parser.add_argument(
        "--ops",
        type=_choices(op_names),
        help=f"comma-separated ops, measured in every workload that has them: "
        f"{', '.join(op_names)}",
    )
    parser.add_argument(
        "--latency-samples",
        type=int,
        help=f"timed runs per latency and decode-step case (default "
        f"{LATENCY_TIMING.min_repeats}; --quick: {_QUICK_LATENCY.min_repeats})",
    )
    parser.add_argument(
        "--block",
        type=int,
        help=f"timed runs of one path in a row before the next path's turn (default "
        f"{LATENCY_TIMING.block} in latency and decode-step cases, each block led by "
        f"{LATENCY_TIMING.block_warmup} untimed runs, --quick: {_QUICK_LATENCY.block}; "
        f"{_FULL_TIMING.block} elsewhere, led by {_FULL_TIMING.block_warmup}; sustained "
        "cases run their three runs in one block regardless); 1 alternates the paths every "
        "run, so each run follows another library's use of the GPU",
    )
    parser.add_argument(
        "--model-tensors", type=int, default=300, help="tensors in model-load (default 300)"
    )
    parser.add_argument(
        "--model-max-size",
        type=_one_size,
        help="largest model-load tensor (default: 64 MiB, about 1.9 GiB in all, on a GPU; "
        "4 MiB elsewhere; --max-size caps it)",
    )
    parser.add_argument(
        "--sustained-sizes",
        type=_size_list,
        help="sizes of the sustained workload (default: 1G,4G, on GPUs only); a size just "
        "above the device's largest buffer runs at the largest 64 MiB multiple that fits, "
        "a larger one is left out, with a note",
    )
    parser.add_argument(
        "--paths",
        type=_choices(PATH_NAMES),
        help=f"comma-separated paths: {', '.join(PATH_NAMES)} (default: all but "
        "tensorferry-nowait, which times tensorferry's copies into device memory without "
        "waiting for the device, and tensorferry-host-accessible, uploads from and downloads "
        "into the device's host-accessible memory)",
    )
    parser.add_argument("--repeats", type=int, help="timed runs per case, at least (default 5)")
    parser.add_argument("--warmup", type=int, help="untimed runs per case first (default 2)")
    parser.add_argument(
        "--min-time", type=float, help="seconds of timed runs per case, at least (default 0.2)"
    )
    parser.add_argument(
        "--json", type=Path, help=f"where to write the JSON (default: {_RESULTS_DIR}/...json)"
    )
    parser.add_argument(
        "--plot", type=Path, help="where to draw the PNG (default: next to the JSON)"
    )
    parser.add_argument(
        "--targets",
        choices=("auto", *TARGET_SETS, "all", "none"),
        default="auto",
        help="which performance targets to check (default: auto, by the adapter type of "
        "the device: those set for lavapipe on a CPU adapter, for GPUs on a GPU; none for "
        "other devices)",
    )
    parser.add_argument("--no-progress", action="store_true", help="show no progress")
    parser.add_argument(
        "--traceback", action="store_true", help="print the traceback of every failed case"
    )
    return parser


def _config(args: argparse.Namespace, target_sets: Sequence[str]) -> BenchConfig:
    if args.block is not None and args.block < 1:
        raise ValueError("expected --block >= 1")
    base = _QUICK_TIMING if args.quick else _FULL_TIMING
    timing = Timing(
        warmup=base.warmup if args.warmup is None else args.warmup,
        min_repeats=base.min_repeats if args.repeats is None else args.repeats,
        min_seconds=base.min_seconds if args.min_time is None else args.min_time,
        max_repeats=base.max_repeats,
        block=base.block if args.block is None else args.block,
        block_warmup=base.block_warmup,
    )
    if timing.warmup < 0 or timing.min_repeats < 1 or timing.min_seconds < 0:
        raise ValueError("expected --warmup >= 0, --repeats >= 1 and --min-time >= 0")
    sizes = args.sizes or (_quick_sizes(target_sets) if args.quick else DEFAULT_SIZES)
    if args.max_size is not None:
        sizes = tuple(n for n in sizes if n <= args.max_size)
    ops = tuple(Op(name) for name in args.ops) if args.ops else tuple(Op)
    workloads = args.workloads or (QUICK_WORKLOADS if args.quick else DEFAULT_WORKLOADS)
    if "all" in workloads:
        workloads = WORKLOAD_NAMES
    if not sizes and set(workloads) <= {"sizes"}:
        raise ValueError("no size is left to measure; check --sizes and --max-size")
    latency = _QUICK_LATENCY if args.quick else LATENCY_TIMING
    if args.latency_samples is not None:
        if args.latency_samples < 1:
            raise ValueError("expected --latency-samples >= 1")
        latency = attrs.evolve(
            latency, min_repeats=args.latency_samples, max_repeats=args.latency_samples
        )
    if args.block is not None:
        latency = attrs.evolve(latency, block=args.block)
    if args.model_tensors < 1:
        raise ValueError("expected --model-tensors >= 1")
    count, nbytes = args.batch
    return BenchConfig(
        device=args.device,
        sizes=tuple(sorted(set(sizes))),
        batch_count=count,
        batch_nbytes=nbytes,
        ops=ops,
        paths=args.paths or DEFAULT_PATHS,
        timing=timing,
        progress=not args.no_progress,
        traceback=args.traceback,
        workload_names=workloads,
        latency_timing=latency,
        model_load=ModelLoad(
            count=args.model_tensors, max_nbytes=args.model_max_size, limit=args.max_size
        ),
        sustained_sizes=args.sustained_sizes,
    )


def _sweep(outcome: RunOutcome) -> list[Result]:
    """The results of the size sweep and the batch."""
    return [r for r in outcome.results if not r.workload.group]


def _quick_sizes(target_sets: Sequence[str]) -> tuple[int, ...]:
    """Small sizes and every size a checked target needs: the headline figures."""
    headline = {
        target.workload.nbytes
        for name in target_sets
        for target in TARGET_SETS[name]
        if not target.workload.op.is_batch
    }
    return tuple(sorted({*_QUICK_SMALL_SIZES, *headline}))


def _resolve_device(spec: str) -> tuple[tf.Device | None, str]:
    """The device ``--device`` names, or None and why it cannot be used."""
    with tf.Environment() as env:
        try:
            return env.device(spec), ""
        except (tf.UnknownDeviceError, TypeError, ValueError) as exc:
            return None, str(exc)


def _wgpu_adapter(outcome: RunOutcome) -> dict[str, object]:
    """The adapter raw wgpu-py used (that of the device under test), or ``{}``."""
    for info in outcome.paths:
        adapter = info.details.get("adapter")
        if info.name == "wgpu-py" and isinstance(adapter, dict):
            return adapter
    return {}


def _adapter_summary(outcome: RunOutcome) -> str | None:
    """One line naming the accelerator measured."""
    summary = _wgpu_adapter(outcome).get("summary") or outcome.device.get("name")
    return str(summary) if summary else None


def _adapter_type(outcome: RunOutcome) -> str | None:
    """The ``adapter_type`` property of the tensorferry device under test, if it has one."""
    properties = outcome.device.get("properties")
    if isinstance(properties, dict):
        return str(properties.get("adapter_type", "")) or None
    return None


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the benchmark; return 0, 1 if a transfer returned wrong data, 3 when the
    device cannot be used (before measuring or writing anything), 130 on Ctrl-C."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    adapter_type: str | None = None
    if any(name.startswith("tensorferry") for name in (args.paths or DEFAULT_PATHS)):
        device, reason = _resolve_device(args.device)
        if device is None:
            print(
                f"{prog or 'tensorferry bench'}: cannot use device {args.device!r}: {reason}",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
        adapter_type = str(device.property("adapter_type")) or None
    target_sets = select_target_set(args.targets, adapter_type)
    try:
        config = _config(args, target_sets)
    except ValueError as exc:
        parser.error(str(exc))
    outcome = run_benchmark(config)
    targets = check_targets(outcome, select_target_set(args.targets, _adapter_type(outcome)))
    print(render_text(outcome, targets), flush=True)
    multi = _run_multi(config, args.gpu_to_gpu_sizes)
    if multi is not None:
        print(multi.render(), flush=True)

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    json_path: Path = args.json or _RESULTS_DIR / f"tensorferry-bench-{stamp}.json"
    plot_path: Path = args.plot or json_path.with_suffix(".png")
    command = [
        *(prog or "python -m tensorferry.bench").split(),
        *(sys.argv[1:] if argv is None else argv),
    ]
    machine = machine_info(command) | {"adapter": _adapter_summary(outcome)}
    document = to_json(outcome, targets, machine)
    if multi is not None:
        document["multi_device"] = attrs.asdict(multi, value_serializer=_plain)
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {json_path}")
    except OSError as exc:
        print(f"\nwarning: cannot write {json_path}: {exc}", file=sys.stderr)
    try:
        # the plot draws the sweep and the batch; the named workloads are in the tables
        draw_plot(attrs.evolve(outcome, results=_sweep(outcome)), plot_path)
        print(f"wrote {plot_path}")
    except PlotUnavailableError as exc:
        print(f"note: {exc}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"note: no plot: {exc}", file=sys.stderr)

    if outcome.interrupted:
        return 130
    wrong = any(r.wrong_data for r in outcome.results) or (
        multi is not None and any(r.error.startswith("VerificationError") for r in multi.rates)
    )
    return 1 if wrong else 0


def _run_multi(config: BenchConfig, gpu_to_gpu_sizes: Sequence[int]) -> MultiReport | None:
    """The multi-device workloads named in ``config``, on a fresh environment."""
    names = [n for n in config.workload_names if n in MULTI_WORKLOADS]
    if not names:
        return None
    backend = config.device.partition(":")[0].strip().lower()
    with tf.Environment() as env:
        devices = gpu_devices(env, backend)
        model = config.model_load
        parts = model.sizes(model.largest(is_gpu(devices[0] if devices else None)))
        return run_multi(
            env,
            backend,
            names,
            parts=parts,
            gpu_to_gpu_sizes=gpu_to_gpu_sizes,
            timing=config.timing,
        )


def _plain(instance: object, field: object, value: object) -> object:
    """JSON-ready values for attrs.asdict: run times as a list of seconds."""
    if isinstance(value, Samples):
        return list(value.seconds)
    return value
