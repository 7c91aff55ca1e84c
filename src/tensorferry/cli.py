"""The ``tensorferry`` command: list devices, run the benchmark.

``tensorferry devices`` lists every device the installed backends offer, marks
the one :meth:`tensorferry.Environment.select_device` picks, and says why any
backend failed to load; ``tensorferry devices SPEC`` shows what one spec
(``gpu``, ``llvmpipe``, ``webgpu:1``) resolves to and exits with status 3 when
nothing does. ``tensorferry bench ...`` hands its arguments to the benchmark,
:mod:`tensorferry.bench` (see ``tensorferry bench --help``), imported only then.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

import tensorferry
from tensorferry.device import Device
from tensorferry.dlpack import dlpack_device
from tensorferry.environment import Environment
from tensorferry.errors import UnknownDeviceError

__all__ = ["EXIT_UNAVAILABLE", "main"]

EXIT_UNAVAILABLE = 3
"""Exit status when the device or backend asked for is not available."""

_BENCH_MODULE = "tensorferry.bench"


def _type_label(device: Device) -> str:
    if device.type.value == "cpu" and not device.is_host:
        return "cpu (software)"  # e.g. lavapipe: a GPU API computed on the processor
    return device.type.value


def _as_json(device: Device, default: Device | None) -> dict[str, object]:
    return {
        "device": str(device),
        "backend": device.backend,
        "index": device.index,
        "type": device.type.value,
        "memory": device.memory.value,
        "vendor_id": device.vendor_id,
        "device_id": device.device_id,
        "name": device.name,
        "properties": dict(device.properties),
        "dlpack": list(dlpack_device(device)),
        "default": device == default,
    }


def _table(devices: Sequence[Device], default: Device | None) -> list[str]:
    rows = [
        (
            ("* " if d == default else "  ") + str(d),
            _type_label(d),
            f"0x{d.vendor_id:04x}",
            str(d.property("backend_type") or "-"),
            d.memory.value,
            d.name or "-",
        )
        for d in devices
    ]
    header = ("  device", "type", "vendor", "backend type", "memory", "name")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _devices(spec: str | None, as_json: bool) -> int:
    with Environment() as env:
        try:
            devices = [env.device(spec)] if spec is not None else env.devices()
        except UnknownDeviceError as exc:  # BackendUnavailableError included
            print(f"tensorferry devices: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        try:
            default: Device | None = env.select_device()
        except (UnknownDeviceError, TypeError, ValueError) as exc:
            print(f"tensorferry devices: no default device: {exc}", file=sys.stderr)
            default = None
        errors = env.backend_errors
        if as_json:
            document = {
                "version": tensorferry.__version__,
                "devices": [_as_json(d, default) for d in devices],
                "default": None if default is None else str(default),
                "backend_errors": errors,
            }
            print(json.dumps(document, indent=2))
            return 0
        lines = _table(devices, default)
        if default in devices:
            lines += ["", "* the default device (select_device(); TENSORFERRY_DEVICE overrides it)"]
        if errors:
            lines += ["", "backends that failed to load:"]
            lines += [f"  {name}: {reason}" for name, reason in sorted(errors.items())]
        print("\n".join(lines))
    return 0


def _bench(argv: Sequence[str]) -> int:
    bench = importlib.import_module(_BENCH_MODULE)
    return int(bench.main(list(argv), prog="tensorferry bench"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorferry",
        description="Move tensors between host and accelerator memory: list the devices "
        "tensorferry can use, and measure its transfers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {tensorferry.__version__}"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what tensorferry does to standard error (-v: devices chosen and why, "
        "backends that fail to load; -vv: every routed copy too)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    devices = commands.add_parser(
        "devices",
        help="list the devices of every installed backend, and backends that failed to load",
        description="List the devices of every installed backend, mark the default one, "
        "and say why any backend failed to load. Exit status 3 when SPEC names no device.",
    )
    devices.add_argument(
        "spec",
        nargs="?",
        help="show only the device this resolves to: a backend (webgpu, webgpu:1, cpu), "
        "a type (gpu, npu) or part of a device name (llvmpipe)",
    )
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parser(
        "bench",
        help="measure transfers next to raw wgpu-py, numpy, torch and ONNX Runtime "
        "(options: tensorferry bench --help)",
        add_help=False,
    )
    return parser


def _configure_logging(verbosity: int) -> None:
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    logger = logging.getLogger("tensorferry")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tensorferry`` command with ``argv`` (default: ``sys.argv[1:]``); return
    its exit status: 0, 2 for bad arguments, 3 when the device or backend asked for
    is unavailable (``bench`` documents its own). ``bench`` passes everything
    after it to the benchmark."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    namespace, rest = parser.parse_known_args(args)
    _configure_logging(namespace.verbose)
    if namespace.command == "bench":
        return _bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return _devices(namespace.spec, namespace.json)
