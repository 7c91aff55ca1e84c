"""Turn a run's results into the text report and the JSON document."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata

import attrs

from ._runner import PathInfo, Result, RunOutcome
from ._targets import TARGET_SETS, Outcome, evaluate
from ._workload import BATCH_OPS, SIZE_OPS, Op, format_size

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


def _value_cell(result: Result | None, milliseconds: bool) -> str:
    """The result's GB/s (or median milliseconds), or why there is none."""
    if result is None:
        return "-"
    if result.samples is None:
        return "WRONG" if result.wrong_data else "error"
    return _cell(result.samples.median * 1e3 if milliseconds else result.gbps)


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
    milliseconds: bool,
) -> list[str]:
    """What each path does, a value table (one row per size or op, one column per
    path) and the table of tensorferry's speed ratios against every other path."""
    shown = [info for info in infos if any(info.name in cells for _, cells in rows)]
    paths = [info.name for info in shown]
    lines = [title, *(f"  {info.name}: {_legend(info, ops)}" for info in shown)]
    lines += _table(
        [row_label, *paths],
        [
            [label, *(_value_cell(cells.get(p), milliseconds) for p in paths)]
            for label, cells in rows
        ],
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
    mine = [r for r in results if r.workload.op is op]
    rows = [
        (format_size(n), {r.path: r for r in mine if r.workload.nbytes == n})
        for n in sorted({r.workload.nbytes for r in mine})
    ]
    return _grid(f"{op.title}: GB/s (median)", "size", rows, [op], infos, milliseconds=False)


def _batch_section(results: Sequence[Result], infos: Sequence[PathInfo]) -> list[str]:
    mine = [r for r in results if r.workload.op.is_batch]
    if not mine:
        return []
    ops = [op for op in BATCH_OPS if any(r.workload.op is op for r in mine)]
    rows = [(op.value, {r.path: r for r in mine if r.workload.op is op}) for op in ops]
    title = f"batches of {mine[0].workload.label}: milliseconds per batch (median; lower is better)"
    return _grid(title, "op", rows, ops, infos, milliseconds=True)


def check_targets(outcome: RunOutcome, target_sets: Sequence[str]) -> dict[str, list[Outcome]]:
    """Every target of the chosen sets, checked against this run."""
    return {name: [evaluate(t, outcome.results) for t in TARGET_SETS[name]] for name in target_sets}


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
    batch = _batch_section(outcome.results, outcome.paths)
    if batch:
        lines += ["", *batch]
    for op in SIZE_OPS:
        if any(r.workload.op is op for r in outcome.results):
            lines += ["", *_op_section(op, outcome.results, outcome.paths)]
    for name, checked in targets.items():
        lines += ["", f"targets set for {name} (ratios of this run):"]
        lines += [f"  {o.line()}" for o in checked]
    failures = [r for r in outcome.results if not r.ok]
    if failures:
        lines += ["", "failed cases:"]
        lines += [
            f"  {r.path} {r.workload.op.value} {r.workload.label}: {r.error}" for r in failures
        ]
    return "\n".join(lines)


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
        },
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
                }
                for o in checked
            ]
            for name, checked in targets.items()
        },
    }


def _result_json(result: Result) -> dict[str, object]:
    workload = result.workload
    entry: dict[str, object] = {
        "op": workload.op.value,
        "path": result.path,
        "nbytes": workload.nbytes,
        "count": workload.count,
        "verified": result.ok,
    }
    if result.samples is not None:
        entry |= {
            "median_s": result.samples.median,
            "fastest_s": result.samples.fastest,
            "spread": result.samples.spread,
            "gbps": result.gbps,
            "samples_s": list(result.samples.seconds),
        }
    else:
        entry |= {"error": result.error, "wrong_data": result.wrong_data}
    return entry
