"""Turn a run's results into the text report and the JSON document."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

import attrs

from ._runner import PathInfo, Result, RunOutcome
from ._targets import TARGET_SETS, Outcome, evaluate, workload_targets
from ._workload import BATCH_OPS, SIZE_OPS, Op, Workload, format_size

__all__ = ["SCHEMA", "check_targets", "machine_info", "render_text", "to_json"]

SCHEMA = "tensorferry-bench/1"
"""The ``schema`` field of the JSON document; bumped when its shape changes."""

_DISTRIBUTIONS = (
    "tensorferry",
    "numpy",
    "wgpu",
    "torch",
    "onnxruntime",
    "onnxruntime-ep-webgpu",
    "tqdm",
    "matplotlib",
)


def machine_info(argv: Sequence[str]) -> dict[str, object]:
    """Where and how the run happened: host, versions, date (UTC) and command line."""
    versions: dict[str, str | None] = {}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _cell(value: float) -> str:
    """Three significant figures without exponents."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first, *rest = row
        cells = [first.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(row) for row in rows)]


Show = Callable[[Result], str]
"""How a measured result reads in a value table."""


def _gbps(result: Result) -> str:
    return _cell(result.gbps)


def _milliseconds(result: Result) -> str:
    assert result.samples is not None
    return _cell(result.samples.median * 1e3)


def _p50_p99_us(result: Result) -> str:
    assert result.samples is not None
    return f"{_cell(result.samples.median * 1e6)} / {_cell(result.samples.p99 * 1e6)}"


def _value_cell(result: Result | None, show: Show) -> str:
    """What ``show`` makes of the result, or why there is none."""
    if result is None:
        return "-"
    if result.samples is None:
        return "WRONG" if result.wrong_data else "error"
    return show(result)


def _ratio_cell(ours: Result | None, theirs: Result | None) -> str:
    if ours and ours.samples and theirs and theirs.samples:
        return _cell(theirs.samples.median / ours.samples.median) + "x"
    return "-"


def _legend(info: PathInfo, ops: Sequence[Op]) -> str:
    """What ``info``'s path does for ``ops``: one text, or one per op when they differ."""
    texts = {op.value: info.descriptions[op.value] for op in ops if op.value in info.descriptions}
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return "; ".join(f"{op}: {text}" for op, text in texts.items())


def _grid(
    title: str,
    row_label: str,
    rows: Sequence[tuple[str, dict[str, Result]]],
    ops: Sequence[Op],
    infos: Sequence[PathInfo],
    *,
    show: Show,
) -> list[str]:
    """What each path does, a value table (one row per size or op, one column per
    path) and the table of tensorferry's speed ratios against every other path."""
    shown = [info for info in infos if any(info.name in cells for _, cells in rows)]
    paths = [info.name for info in shown]
    lines = [title, *(f"  {info.name}: {_legend(info, ops)}" for info in shown)]
    lines += _table(
        [row_label, *paths],
        [[label, *(_value_cell(cells.get(p), show) for p in paths)] for label, cells in rows],
    )
    peers = [p for p in paths if p != "tensorferry"]
    if "tensorferry" in paths and peers:
        lines.append("tensorferry speed / peer speed (> 1: tensorferry is faster)")
        lines += _table(
            [row_label, *peers],
            [
                [label, *(_ratio_cell(cells.get("tensorferry"), cells.get(p)) for p in peers)]
                for label, cells in rows
            ],
        )
    return lines


def _op_section(op: Op, results: Sequence[Result], infos: Sequence[PathInfo]) -> list[str]:
    mine = [r for r in results if r.workload.op is op and not r.workload.group]
    rows = [
        (format_size(n), {r.path: r for r in mine if r.workload.nbytes == n})
        for n in sorted({r.workload.nbytes for r in mine})
    ]
    return _grid(f"{op.title}: GB/s (median)", "size", rows, [op], infos, show=_gbps)


def _batch_section(results: Sequence[Result], infos: Sequence[PathInfo]) -> list[str]:
    mine = [r for r in results if r.workload.op.is_batch and not r.workload.group]
    if not mine:
        return []
    ops = [op for op in BATCH_OPS if any(r.workload.op is op for r in mine)]
    rows = [(op.value, {r.path: r for r in mine if r.workload.op is op}) for op in ops]
    title = f"batches of {mine[0].workload.label}: milliseconds per batch (median; lower is better)"
    return _grid(title, "op", rows, ops, infos, show=_milliseconds)


_GROUP_TITLES = {
    "latency": "latency of one 4 KiB transfer (uploads timed until the data has landed): "
    "microseconds, p50 / p99 (lower is better)",
    "decode-step": "decode step, three int64[1,1] uploads then float32[1,128256] logits down: "
    "microseconds, p50 / p99 (lower is better)",
    "model-load": "model load, {label}: GB/s (median)",
    "sustained": "sustained transfers: GB/s (median)",
}


def _group_section(group: str, results: Sequence[Result], infos: Sequence[PathInfo]) -> list[str]:
    """One table for a named workload: a row per op (and size, for ``sustained``)."""
    mine = [r for r in results if r.workload.group == group]
    if not mine:
        return []
    workloads = list(dict.fromkeys(r.workload for r in mine))
    ops = list(dict.fromkeys(w.op for w in workloads))
    by_size = group == "sustained"

    def label(workload: Workload) -> str:
        op = workload.op.value
        return f"{format_size(workload.nbytes)} {op}" if by_size else op

    rows = [(label(w), {r.path: r for r in mine if r.workload == w}) for w in workloads]
    show = _p50_p99_us if group in ("latency", "decode-step") else _gbps
    title = _GROUP_TITLES[group].format(label=workloads[0].label)
    return _grid(title, "op", rows, ops, infos, show=show)


def check_targets(outcome: RunOutcome, target_sets: Sequence[str]) -> dict[str, list[Outcome]]:
    """Every target of the chosen sets, checked against this run; the latency and
    bandwidth targets of set ``name`` come under ``name-latency-bandwidth``."""
    checked = {}
    for name in target_sets:
        checked[name] = [evaluate(t, outcome.results) for t in TARGET_SETS[name]]
        checked[f"{name}-latency-bandwidth"] = [
            evaluate(t, outcome.results) for t in workload_targets(name, outcome.results)
        ]
    return checked


def render_text(outcome: RunOutcome, targets: dict[str, list[Outcome]]) -> str:
    """The human-readable report: paths, one table per op, ratios, targets, errors."""
    device = outcome.device
    lines = [
        f"tensorferry bench: device {device.get('spec') or 'unavailable'}"
        + (f" ({device['name']})" if device.get("name") else ""),
    ]
    for info in outcome.paths:
        if not info.available:
            lines.append(f"  {info.name}: unavailable: {info.reason}")
            continue
        detail = "; ".join(f"{k}: {_summary(v)}" for k, v in info.details.items())
        lines.append(f"  {info.name}: {detail or 'available'}")
    device_reason = str(device.get("unavailable", ""))
    for name, reason in outcome.backend_errors.items():
        if reason not in device_reason:
            lines.append(f"  backend {name}: {reason}")
    if outcome.interrupted:
        lines.append("  interrupted: the tables hold what was measured before Ctrl-C")
    lines += [f"  note: {note}" for note in outcome.notes]
    sections = [
        _group_section("latency", outcome.results, outcome.paths),
        _group_section("decode-step", outcome.results, outcome.paths),
        _batch_section(outcome.results, outcome.paths),
        *(
            _op_section(op, outcome.results, outcome.paths)
            for op in SIZE_OPS
            if any(r.workload.op is op and not r.workload.group for r in outcome.results)
        ),
        _group_section("model-load", outcome.results, outcome.paths),
        _group_section("sustained", outcome.results, outcome.paths),
    ]
    for section in sections:
        if section:
            lines += ["", *section]
    for name, checked in targets.items():
        lines += ["", f"targets set for {name} (ratios of this run):"]
        lines += [f"  {o.line()}" for o in checked]
    failures = [r for r in outcome.results if not r.ok]
    if failures:
        lines += ["", "failed cases:"]
        lines += [
            f"  {r.path} {_where(r.workload)}{r.workload.op.value} {r.workload.label}: {r.error}"
            for r in failures
        ]
    return "\n".join(lines)


def _where(workload: Workload) -> str:
    return f"{workload.group}: " if workload.group else ""


def _summary(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("summary", value))
    return str(value)


def to_json(
    outcome: RunOutcome, targets: dict[str, list[Outcome]], machine: dict[str, object]
) -> dict[str, object]:
    """The JSON document: machine, configuration, paths, every case's samples, targets."""
    config = outcome.config
    return {
        "schema": SCHEMA,
        "machine": machine,
        "device": outcome.device,
        "backend_errors": outcome.backend_errors,
        "interrupted": outcome.interrupted,
        "config": {
            "device": config.device,
            "sizes": list(config.sizes),
            "batch": {"count": config.batch_count, "nbytes": config.batch_nbytes},
            "ops": [op.value for op in config.ops],
            "paths": list(config.paths),
            "timing": attrs.asdict(config.timing),
            "workloads": list(config.workload_names),
            "latency_timing": attrs.asdict(config.latency_timing),
            "sustained_timing": attrs.asdict(config.sustained_timing),
            "model_load": attrs.asdict(config.model_load),
            "sustained_sizes": (
                None if config.sustained_sizes is None else list(config.sustained_sizes)
            ),
        },
        "notes": list(outcome.notes),
        "paths": [attrs.asdict(info) for info in outcome.paths],
        "results": [_result_json(r) for r in outcome.results],
        "targets": {
            name: [
                {
                    "text": o.target.text,
                    "requirement": o.target.requirement,
                    "value": o.value,
                    "passed": o.passed,
                    "note": o.note,
                    "reference": (
                        None
                        if o.reference is None
                        else {"path": o.target.reference, "gbps": o.reference}
                    ),
                }
                for o in checked
            ]
            for name, checked in targets.items()
        },
    }


def _result_json(result: Result) -> dict[str, object]:
    workload = result.workload
    entry: dict[str, object] = {
        "workload": workload.group or ("batches" if workload.op.is_batch else "sizes"),
        "op": workload.op.value,
        "path": result.path,
        "nbytes": workload.nbytes,
        "count": workload.count,
        "verified": result.ok,
    }
    if workload.parts:
        entry["tensor_nbytes"] = list(workload.parts)
    if result.samples is not None:
        entry |= {
            "median_s": result.samples.median,
            "p50_us": result.samples.median * 1e6,
            "p99_us": result.samples.p99 * 1e6,
            "fastest_s": result.samples.fastest,
            "spread": result.samples.spread,
            "gbps": result.gbps,
            "samples_s": list(result.samples.seconds),
        }
    else:
        entry |= {"error": result.error, "wrong_data": result.wrong_data}
    return entry
