"""The PNG plot: bandwidth against size, log-log, one line per path, one panel per op;
and one panel of the batches: time per batch, one bar per path and batch op."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ._runner import Result, RunOutcome
from ._workload import BATCH_OPS, SIZE_OPS, format_size

__all__ = ["PlotUnavailableError", "draw_plot"]


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def draw_plot(outcome: RunOutcome, destination: Path) -> None:
    """Draw the measured size ops of ``outcome`` into a PNG at ``destination``.

    Raises :class:`PlotUnavailableError` without matplotlib, ``ValueError`` when
    there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(
            f"matplotlib is not importable ({exc}), so no plot; pip install 'tensorferry[bench]'"
        ) from exc
    done = [r for r in outcome.results if r.samples is not None]
    measured = [r for r in done if not r.workload.op.is_batch]
    batches = [r for r in done if r.workload.op.is_batch]
    ops = [op for op in SIZE_OPS if any(r.workload.op is op for r in measured)]
    panels = len(ops) + (1 if batches else 0)
    if not panels:
        raise ValueError("nothing was measured, so there is nothing to plot")
    order = [info.name for info in outcome.paths]
    colors = {path: f"C{index}" for index, path in enumerate(order)}
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False, layout="constrained"
    )
    sizes = sorted({r.workload.nbytes for r in measured})
    for panel, op in zip(axes.flat, ops, strict=False):
        for path in order:
            points = sorted(
                (r.workload.nbytes, r.gbps)
                for r in measured
                if r.workload.op is op and r.path == path
            )
            if points:
                xs, ys = zip(*points, strict=True)
                style = "-" if path.startswith("tensorferry") else "--"
                panel.plot(xs, ys, style, color=colors[path], marker="o", markersize=3, label=path)
        panel.set_xscale("log", base=2)
        panel.set_yscale("log")
        panel.set_xticks(sizes, [format_size(n) for n in sizes], rotation=45, fontsize=7)
        panel.minorticks_off()
        panel.set_title(op.title, fontsize=9)
        panel.set_xlabel("size")
        panel.set_ylabel("GB/s (median)")
        panel.grid(True, which="major", alpha=0.3)
        panel.legend(fontsize=7)
    if batches:
        _draw_batches(list(axes.flat)[len(ops)], batches, order, colors)
    for panel in list(axes.flat)[panels:]:
        panel.set_visible(False)
    device = outcome.device.get("name") or outcome.device.get("spec") or "no device"
    figure.suptitle(f"tensorferry bench: {device}\n{_workloads(outcome)}", fontsize=10)
    destination.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(destination, dpi=110)
    plt.close(figure)


def _draw_batches(
    panel: Any, batches: list[Result], order: list[str], colors: dict[str, str]
) -> None:
    """Milliseconds per batch, log scale: one group of bars per batch op."""
    ops = [op for op in BATCH_OPS if any(r.workload.op is op for r in batches)]
    paths = [p for p in order if any(r.path == p for r in batches)]
    width = 0.8 / max(1, len(paths))
    for slot, path in enumerate(paths):
        xs, ys = [], []
        for position, op in enumerate(ops):
            found = [r for r in batches if r.workload.op is op and r.path == path]
            if found and found[0].samples is not None:
                xs.append(position + (slot - (len(paths) - 1) / 2) * width)
                ys.append(found[0].samples.median * 1e3)
        panel.bar(xs, ys, width, color=colors[path], label=path)
    panel.set_xticks(range(len(ops)), [op.value for op in ops], fontsize=8)
    panel.set_yscale("log")
    panel.set_ylabel("ms per batch (median, lower is better)")
    panel.set_title(f"batches of {batches[0].workload.label}", fontsize=9)
    panel.grid(True, axis="y", which="major", alpha=0.3)
    panel.legend(fontsize=7)


def _workloads(outcome: RunOutcome) -> str:
    """One line naming the workloads: the sizes and the batch."""
    config = outcome.config
    parts = []
    if config.sizes:
        parts.append(f"sizes {format_size(min(config.sizes))} to {format_size(max(config.sizes))}")
    if any(op.is_batch for op in config.ops):
        parts.append(f"batches of {config.batch_count} x {format_size(config.batch_nbytes)}")
    return "; ".join(parts)
