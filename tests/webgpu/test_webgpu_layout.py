"""The WebGPU backend's shape: data flows one way through its modules, none is too
long to read, and one module alone reaches past wgpu-py's public API.

These read the source (no adapter needed); they fail when a change breaks the
layering that gives every path one home.
"""

from __future__ import annotations

import ast
import pathlib
import re

import tensorferry_webgpu

PACKAGE = pathlib.Path(tensorferry_webgpu.__file__).parent

LAYERS = [
    {"_align", "_native", "_guards", "_patch", "_threads", "_adapters"},
    {"_waits"},
    {"_buffers", "_errors", "_copy_kernel"},
    {"_slabs"},
    {"_options"},
    {"_context"},
    {"_mapping", "_opening"},
    {"_storage", "_queue"},
    {"_ops"},
    {"_stream"},
    {"_upload", "_download", "_direct", "_device_copy", "_fill", "_raw"},
    {"_batch"},
    {"_transfer"},
    {"_backend"},
    {"__init__"},
]
"""transfer -> batch -> stagers -> queue -> context: a module imports only modules
of lower layers (TYPE_CHECKING imports included), so there is no cycle, and the
collaborators of one layer (the stagers) never call each other."""

PRIVATE_WGPU = re.compile(
    r"\._internal\b|_experimental_|READ_NOSYNC|wgpu_native|(?<!self)\._device\b|_map_state|_mapped_status"
    r"|\._poller\b|\bmap_async\(|\bmap_sync\(|\bread_mapped\("
)
"""wgpu-py's private API, and its public map calls (every map goes through the blocking poll)."""

MAX_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
    return {path.stem: path for path in sorted(PACKAGE.glob("*.py"))}


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "tensorferry_webgpu" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_has_a_layer() -> None:
    layered = set().union(*LAYERS)
    assert set(_modules()) == layered, "add new modules to LAYERS where they belong"


def test_imports_only_go_down_the_layers() -> None:
    rank = {name: level for level, names in enumerate(LAYERS) for name in names}
    upward = [
        f"{name} (layer {rank[name]}) imports {dep} (layer {rank[dep]})"
        for name, path in _modules().items()
        for dep in sorted(_imports(path))
        if rank[dep] >= rank[name]
    ]
    assert not upward, upward


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        name: count
        for name, path in _modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


NATIVE = {"_native", "_waits"}
"""The modules that reach past wgpu-py's public API: its calls, and the waits."""


def test_only_the_native_modules_use_wgpu_private_api() -> None:
    users = {
        name: sorted(set(PRIVATE_WGPU.findall(path.read_text())))
        for name, path in _modules().items()
        if name not in NATIVE and PRIVATE_WGPU.search(path.read_text())
    }
    assert not users, users
