"""Choosing a device: by kind or name (``env.device("gpu")``) and by policy (``env.select_device``).

The policies are named after ONNX Runtime's execution-provider device policies
(``OrtExecutionProviderDevicePolicy``) and read a device's type and its
``adapter_type`` property (WebGPU's vocabulary: ``DiscreteGPU``,
``IntegratedGPU``, ``VirtualGPU``, ``CPU``). Software adapters (Mesa's llvmpipe
and lavapipe) are devices of type CPU, so no policy and no ``"gpu"`` ever picks
one; host memory is the fallback of every policy.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from tensorferry.device import Device, DeviceType, MemoryKind
from tensorferry.errors import UnknownDeviceError

__all__ = [
    "DEVICE_ENV",
    "DevicePolicy",
    "DevicePolicyDelegate",
    "apply_policy",
    "default_spec",
    "match_device",
    "no_match_message",
]

logger = logging.getLogger(__name__)

DEVICE_ENV = "TENSORFERRY_DEVICE"
"""Environment variable naming the device :meth:`Environment.select_device` returns when
called without a policy (any spec :meth:`Environment.device` takes: ``"webgpu:1"``,
``"gpu"``, ``"NVIDIA"``...)."""


class DevicePolicy(enum.Enum):
    """How :meth:`tensorferry.Environment.select_device` picks a device, best choice first.

    * ``DEFAULT``: as ``PREFER_GPU``. (ONNX Runtime's default prefers the CPU,
      because it runs models; tensorferry exists to move data to an accelerator.)
    * ``PREFER_CPU``: host memory.
    * ``PREFER_GPU``: a GPU (discrete, integrated, virtual, then others), else host memory.
    * ``PREFER_NPU``: an NPU, else as ``PREFER_GPU``.
    * ``MAX_PERFORMANCE``: a discrete GPU, other GPUs, an NPU, then host memory.
    * ``MAX_EFFICIENCY``: an NPU, an integrated GPU, other GPUs, then host memory.
    * ``MIN_OVERALL_POWER``: an NPU, an integrated GPU, host memory, then other GPUs.

    Devices of one rank keep the environment's order (each backend's best first).
    """

    DEFAULT = "default"
    PREFER_CPU = "prefer_cpu"
    PREFER_NPU = "prefer_npu"
    PREFER_GPU = "prefer_gpu"
    MAX_PERFORMANCE = "max_performance"
    MAX_EFFICIENCY = "max_efficiency"
    MIN_OVERALL_POWER = "min_overall_power"


DevicePolicyDelegate: TypeAlias = Callable[[Sequence[Device]], Device]
"""A policy of your own: given the candidate devices (host first, each backend's
best first), return one of them."""

# Ranks of device classes per policy; a class missing from a policy is never chosen.
_HOST, _NPU, _DISCRETE, _INTEGRATED, _OTHER_GPU = "host", "npu", "discrete", "integrated", "gpu"
_GPUS = (_DISCRETE, _INTEGRATED, _OTHER_GPU)
_ORDERS: dict[DevicePolicy, tuple[str, ...]] = {
    DevicePolicy.DEFAULT: (*_GPUS, _HOST),
    DevicePolicy.PREFER_CPU: (_HOST,),
    DevicePolicy.PREFER_GPU: (*_GPUS, _HOST),
    DevicePolicy.PREFER_NPU: (_NPU, *_GPUS, _HOST),
    DevicePolicy.MAX_PERFORMANCE: (*_GPUS, _NPU, _HOST),
    DevicePolicy.MAX_EFFICIENCY: (_NPU, _INTEGRATED, _DISCRETE, _OTHER_GPU, _HOST),
    DevicePolicy.MIN_OVERALL_POWER: (_NPU, _INTEGRATED, _HOST, _DISCRETE, _OTHER_GPU),
}


def _device_class(device: Device) -> str | None:
    if device.is_host:
        return _HOST
    if device.type is DeviceType.NPU:
        return _NPU
    if device.type is DeviceType.GPU:
        adapter_type = device.property("adapter_type")
        if adapter_type == "DiscreteGPU":
            return _DISCRETE
        if adapter_type == "IntegratedGPU":
            return _INTEGRATED
        return _OTHER_GPU
    return None  # a device of type CPU that is not host memory: a software adapter


def apply_policy(devices: Sequence[Device], policy: DevicePolicy | DevicePolicyDelegate) -> Device:
    """The device ``policy`` picks among ``devices`` (those of the default memory kind).

    Raises ``TypeError`` for a policy that is neither a :class:`DevicePolicy` nor
    a callable, ``ValueError`` when a delegate returns something that is not one
    of the candidates, and :class:`UnknownDeviceError` when no candidate fits.
    """
    candidates = [d for d in devices if d.memory is MemoryKind.DEFAULT]
    if isinstance(policy, DevicePolicy):
        order = _ORDERS[policy]
        ranked = [
            (order.index(cls), position, device)
            for position, device in enumerate(candidates)
            if (cls := _device_class(device)) in order
        ]
        if not ranked:
            raise UnknownDeviceError(
                f"policy {policy.name} finds no device among {[str(d) for d in candidates]}"
            )
        chosen = min(ranked, key=lambda item: item[:2])[2]
        logger.info(
            "policy %s chose %s (%s, %s) among %s",
            policy.name,
            chosen,
            _device_class(chosen),
            chosen.name,
            [str(d) for d in candidates],
        )
        return chosen
    if not callable(policy):
        raise TypeError(
            f"policy must be a tensorferry.DevicePolicy or a callable taking the devices and "
            f"returning one, got {type(policy).__name__}"
        )
    chosen = policy(tuple(candidates))
    if not isinstance(chosen, Device) or chosen not in candidates:
        raise ValueError(
            f"the policy delegate {policy!r} returned {chosen!r}; expected one of the devices "
            f"it was given: {[str(d) for d in candidates]}"
        )
    logger.info("policy delegate %r chose %s (%s)", policy, chosen, chosen.name)
    return chosen


def default_spec() -> str | None:
    """The device spec in :data:`DEVICE_ENV`, or None when it is unset or blank."""
    return os.environ.get(DEVICE_ENV, "").strip() or None


_TYPE_NAMES = {t.value: t for t in DeviceType if t is not DeviceType.CPU}


def match_device(devices: Sequence[Device], spec: str) -> Device | None:
    """The device a spec that is not a backend name means, or None if none matches.

    Precedence: a device type (``"gpu"``, ``"npu"``; case-insensitive) picks the
    first device of that type in ``devices``; any other text picks the first
    device whose name or ``adapter`` property contains it (case-insensitive,
    ``"llvmpipe"``, ``"NVIDIA"``, ``"via OpenGL"``). ``"cpu"`` is the host
    backend's name and never gets here.
    """
    text = spec.strip().lower()
    kind = _TYPE_NAMES.get(text)
    if kind is not None:
        found = next((d for d in devices if d.type is kind), None)
        reason = f"the first {kind.name} device"
    else:
        found = next(
            (
                d
                for d in devices
                if text and (text in d.name.lower() or text in str(d.property("adapter")).lower())
            ),
            None,
        )
        reason = f"the first device whose name contains {spec.strip()!r}"
    if found is not None:
        logger.info("device %r is %s: %s (%s)", spec, reason, found, found.name)
    return found


def no_match_message(
    spec: str, devices: Sequence[Device], backends: Sequence[str], errors: Mapping[str, str]
) -> str:
    """Why ``spec`` names no device: what was expected, the backends and devices
    there are, and why any backend did not load."""
    listing = "; ".join(f"{d} ({d.type.name}) {d.name}".rstrip() for d in devices) or "none"
    failed = "".join(f"; backend {name!r} did not load: {why}" for name, why in errors.items())
    kind = _TYPE_NAMES.get(spec.strip().lower())
    if kind is not None:
        software = (
            " (software adapters such as llvmpipe are CPU devices)"
            if kind is DeviceType.GPU
            else ""
        )
        return f"no {kind.name} device{software}; devices: {listing}{failed}"
    return (
        f"no backend, device type or device name matches {spec!r}; expected a backend "
        f"name, 'gpu', 'npu' or part of a device name; available backends: "
        f"{list(backends)}; devices: {listing}{failed}"
    )
