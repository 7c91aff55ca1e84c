"""Adapter discovery: which wgpu adapters become tensorferry devices, in which order."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tensorferry import Device, DeviceType, MemoryKind

if TYPE_CHECKING:
    import wgpu

__all__ = ["ADAPTERS_ENV", "BACKEND_NAME", "adapters", "describe", "order_adapters"]

BACKEND_NAME = "webgpu"

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

            _adapters = list(wgpu.gpu.enumerate_adapters_sync())
        return list(_adapters)


_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "CPU": 3}
_API_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 0, "OpenGL": 1, "OpenGLES": 1}


def _rank(adapter: wgpu.GPUAdapter, position: int) -> tuple[int, int, int]:
    info = adapter.info
    return (
        _TYPE_RANK.get(str(info["adapter_type"]), 4),
        _API_RANK.get(str(info["backend_type"]), 2),
        position,
    )


def order_adapters(adapters: Sequence[wgpu.GPUAdapter]) -> list[wgpu.GPUAdapter]:
    """Best first: discrete, integrated, virtual, then CPU fallbacks; native APIs
    before OpenGL; ties keep wgpu's order. Applies :data:`ADAPTERS_ENV` when set."""
    ordered = [a for _, a in sorted((_rank(a, i), a) for i, a in enumerate(adapters))]
    spec = os.environ.get(ADAPTERS_ENV, "").strip()
    if not spec:
        return ordered
    tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
    chosen: list[wgpu.GPUAdapter] = []
    for token in tokens:
        chosen.extend(a for a in ordered if token in a.summary.lower() and a not in chosen)
    return chosen


def describe(adapter: wgpu.GPUAdapter, index: int, *, label: str = "") -> Device:
    """The tensorferry device for ``adapter`` at position ``index``."""
    info = adapter.info
    properties: tuple[tuple[str, str], ...] = (
        ("adapter", str(adapter.summary)),
        ("adapter_type", str(info["adapter_type"])),
        ("backend_type", str(info["backend_type"])),
        ("vendor", str(info["vendor"])),
        ("description", str(info["description"])),
        ("max_buffer_size", str(adapter.limits["max-buffer-size"])),
    )
    if label:
        properties += (("context", label),)
    return Device(
        BACKEND_NAME,
        index,
        DeviceType.GPU,
        MemoryKind.DEFAULT,
        vendor_id=int(info["vendor_id"]),
        device_id=int(info["device_id"]),
        name=f"{label}: {adapter.summary}" if label else adapter.summary,
        properties=properties,
    )
