"""The PNG plot: bandwidth against size, log-log, one line per path, one panel per op."""

from __future__ import annotations

import math
from pathlib import Path

from ._runner import RunOutcome
from ._workload import SIZE_OPS, format_size

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
    measured = [r for r in outcome.results if r.samples is not None and not r.workload.op.is_batch]
    ops = [op for op in SIZE_OPS if any(r.workload.op is op for r in measured)]
    if not ops:
        raise ValueError("no size was measured, so there is nothing to plot")
    order = [info.name for info in outcome.paths]
    columns = min(3, len(ops))
    rows = math.ceil(len(ops) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False, layout="constrained"
    )
    sizes = sorted({r.workload.nbytes for r in measured})
    colors = {path: f"C{index}" for index, path in enumerate(order)}
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
    for panel in list(axes.flat)[len(ops) :]:
        panel.set_visible(False)
    device = outcome.device.get("name") or outcome.device.get("spec") or "no device"
    figure.suptitle(f"tensorferry bench: {device}", fontsize=10)
    destination.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(destination, dpi=110)
    plt.close(figure)
