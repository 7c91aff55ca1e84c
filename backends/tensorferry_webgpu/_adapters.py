"""Adapter discovery: which wgpu adapters become tensorferry devices, in which order."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tensorferry import Device, DeviceType, MemoryKind

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "ADAPTERS_ENV",
    "BACKEND_NAME",
    "DLPACK_WEBGPU",
    "adapters",
    "describe",
    "lacks_compute",
    "no_adapter_message",
    "order_adapters",
]

logger = logging.getLogger("tensorferry.webgpu")

BACKEND_NAME = "webgpu"

DLPACK_WEBGPU = 15
"""``kDLWebGPU``: the DLPack device type of WebGPU memory."""

ADAPTERS_ENV = "TENSORFERRY_WEBGPU_ADAPTERS"
"""Comma-separated, case-insensitive substrings of adapter summaries (such as
``"Vulkan"``, ``"NVIDIA"``, ``"llvmpipe (LLVM 15.0.6, 256 bits) (CPU) via OpenGL"``).
When set, only adapters matching a token become devices, ordered by the first
token they match."""

_lock = threading.Lock()
_adapters: list[wgpu.GPUAdapter] | None = None


def adapters() -> list[wgpu.GPUAdapter]:
    """Every adapter wgpu reports, enumerated once per process and shared.

    Sharing is required, not an optimisation: devices made from OpenGL adapters
    of two separate enumerations abort the process (wgpu-hal's EGL context
    lock fails with BadAccess) once both are polled from their threads. A wgpu
    user who wants a device on the same GL adapter should request it from here.
    """
    global _adapters
    with _lock:
        if _adapters is None:
            import wgpu

            _ensure_runtime_dir()
            _adapters = list(wgpu.gpu.enumerate_adapters_sync())
            logger.debug("wgpu found %d adapters: %s", len(_adapters), _summaries(_adapters))
        return list(_adapters)


def _ensure_runtime_dir() -> None:
    # Mesa's OpenGL driver writes "error: XDG_RUNTIME_DIR is invalid or not set"
    # to stderr for every adapter enumeration and device without one (typical in
    # containers and CI); a private directory, as a login session would have, quiets it.
    path = os.environ.get("XDG_RUNTIME_DIR", "")
    if path and os.path.isdir(path):
        return
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tensorferry-xdg-")
    logger.debug("XDG_RUNTIME_DIR was unset; using %s", os.environ["XDG_RUNTIME_DIR"])


def _summaries(found: Sequence[wgpu.GPUAdapter]) -> list[str]:
    return [str(a.summary) for a in found]


_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "CPU": 3}
_API_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 0, "OpenGL": 1, "OpenGLES": 1}


def _rank(adapter: wgpu.GPUAdapter, position: int) -> tuple[int, int, int]:
    info = adapter.info
    return (
        _TYPE_RANK.get(str(info["adapter_type"]), 4),
        _API_RANK.get(str(info["backend_type"]), 2),
        position,
    )


_GL_COMPUTE = {"OpenGL": (4, 3), "OpenGLES": (3, 1)}
"""The first context versions with compute shaders, per OpenGL flavour."""


def lacks_compute(adapter: wgpu.GPUAdapter) -> bool:
    """Whether ``adapter`` is an OpenGL (ES) context older than compute shaders
    (OpenGL 4.3, OpenGL ES 3.1), by the version that opens its description.

    wgpu lists such adapters, but every device request on one fails ("The
    selected version doesn't support Features(BUFFER_STORAGE | COMPUTE_SHADER
    ...)": the NVIDIA driver's "3.3.0 NVIDIA 580.159.04" context on the H200).
    A description without a version counts as capable.
    """
    info = adapter.info
    needed = _GL_COMPUTE.get(str(info["backend_type"]))
    if needed is None:
        return False
    found = re.search(r"(\d+)\.(\d+)", str(info["description"]))
    return found is not None and (int(found[1]), int(found[2])) < needed


def order_adapters(adapters: Sequence[wgpu.GPUAdapter]) -> list[wgpu.GPUAdapter]:
    """Best first: discrete, integrated, virtual, then CPU fallbacks; native APIs
    before OpenGL; ties keep wgpu's order. Leaves out OpenGL contexts without
    compute shaders (:func:`lacks_compute`). Applies :data:`ADAPTERS_ENV` when set."""
    usable = [a for a in adapters if not lacks_compute(a)]
    if len(usable) < len(adapters):
        logger.info(
            "leaving out OpenGL adapters without compute shaders: %s",
            _summaries([a for a in adapters if lacks_compute(a)]),
        )
    ordered = [a for _, a in sorted((_rank(a, i), a) for i, a in enumerate(usable))]
    spec = os.environ.get(ADAPTERS_ENV, "").strip()
    if not spec:
        return ordered
    tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
    chosen: list[wgpu.GPUAdapter] = []
    for token in tokens:
        chosen.extend(a for a in ordered if token in a.summary.lower() and a not in chosen)
    left_out = [a for a in ordered if a not in chosen]
    if left_out:
        logger.info("%s=%r leaves out %s", ADAPTERS_ENV, spec, _summaries(left_out))
    return chosen


def no_adapter_message(found: Sequence[wgpu.GPUAdapter], install_hint: str) -> str:
    """Why there is no WebGPU device: the filter removed every adapter (naming
    it and the adapters there are), or wgpu found none (then ``install_hint``)."""
    spec = os.environ.get(ADAPTERS_ENV, "").strip()
    if found and all(lacks_compute(a) for a in found):
        return (
            f"wgpu found only OpenGL adapters without compute shaders: {_summaries(found)}; "
            "tensorferry needs OpenGL 4.3 or OpenGL ES 3.1 and up, or Vulkan, Metal or D3D12"
        )
    if found and spec:
        return (
            f"{ADAPTERS_ENV}={spec!r} matches none of the adapters wgpu found: "
            f"{_summaries(found)}; set it to comma-separated parts of those names, or unset it"
        )
    return f"wgpu found no adapter; {install_hint}"


def describe(adapter: wgpu.GPUAdapter, index: int, *, label: str = "") -> Device:
    """The tensorferry device for ``adapter`` at position ``index``.

    Software adapters (``adapter_type`` ``"CPU"``: Mesa's lavapipe and llvmpipe)
    are devices of type CPU: they run on the processor, and someone asking for
    a GPU must not get one. Their memory is still WebGPU memory, not host memory.
    """
    info = adapter.info
    adapter_type = str(info["adapter_type"])
    properties: tuple[tuple[str, int | str], ...] = (
        ("adapter", str(adapter.summary)),
        ("adapter_type", adapter_type),
        ("backend_type", str(info["backend_type"])),
        ("vendor", str(info["vendor"])),
        ("description", str(info["description"])),
        ("max_buffer_size", int(adapter.limits["max-buffer-size"])),
        ("dlpack_device_type", DLPACK_WEBGPU),
    )
    if label:
        properties += (("context", label),)
    return Device(
        BACKEND_NAME,
        index,
        DeviceType.CPU if adapter_type == "CPU" else DeviceType.GPU,
        MemoryKind.DEFAULT,
        vendor_id=int(info["vendor_id"]),
        device_id=int(info["device_id"]),
        name=f"{label}: {adapter.summary}" if label else adapter.summary,
        properties=properties,
    )
