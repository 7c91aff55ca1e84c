"""The ``tensorferry`` command: list devices, run the benchmark.

``tensorferry devices`` lists every device the installed backends offer and
why any backend failed to load. ``tensorferry bench ...`` hands its arguments
to the benchmark, :mod:`tensorferry.bench` (see ``tensorferry bench --help``),
imported only then, so the rest of the command never loads it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tensorferry.environment import Environment

__all__ = ["main"]

_BENCH_MODULE = "tensorferry.bench"


def _devices() -> int:
    with Environment() as env:
        devices = env.devices()
        rows = [
            (
                str(d),
                d.type.value,
                f"0x{d.vendor_id:04x}",
                d.property("backend_type") or "-",
                d.memory.value,
                d.name or "-",
            )
            for d in devices
        ]
        header = ("device", "type", "vendor", "backend type", "memory", "name")
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        errors = env.backend_errors
        if errors:
            print("\nbackends that failed to load:")
            for name, reason in sorted(errors.items()):
                print(f"  {name}: {reason}")
    return 0


def _bench(argv: Sequence[str]) -> int:
    bench = importlib.import_module(_BENCH_MODULE)
    return int(bench.main(list(argv), prog="tensorferry bench"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorferry",
        description="Move tensors between host and accelerator memory: tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "devices",
        help="list the devices of every installed backend, and backends that failed to load",
        description="List the devices of every installed backend, and why any failed to load.",
    )
    commands.add_parser(
        "bench",
        help="measure transfers against raw wgpu-py, numpy, torch and ONNX Runtime "
        "(options: tensorferry bench --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tensorferry`` command with ``argv`` (default: ``sys.argv[1:]``); return
    its exit status. ``bench`` passes everything after it to the benchmark."""
    args = list(sys.argv[1:] if argv is None else argv)
    namespace, rest = _parser().parse_known_args(args)
    if namespace.command == "bench":
        return _bench(rest)
    if rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    return _devices()
