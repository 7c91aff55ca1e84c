"""Choosing a device: device types and names in Environment.device, policies,
delegates, TENSORFERRY_DEVICE, and typed device properties."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tensorferry import (
    HOST,
    Device,
    DevicePolicy,
    DeviceType,
    Environment,
    MemoryKind,
    UnknownDeviceError,
)
from tensorferry.policy import DEVICE_ENV, apply_policy, match_device

MakeAccelerator = Callable[..., Any]


def _gpu(index: int, adapter_type: str, name: str = "") -> Device:
    return Device(
        "gpus",
        index,
        DeviceType.GPU,
        name=name or f"{adapter_type} {index}",
        properties={"adapter_type": adapter_type},
    )


SOFTWARE = Device(
    "gpus", 3, DeviceType.CPU, name="llvmpipe (CPU) via Vulkan", properties={"adapter_type": "CPU"}
)
INTEGRATED = _gpu(1, "IntegratedGPU")
DISCRETE = _gpu(2, "DiscreteGPU", name="NVIDIA H200 via Vulkan")
VIRTUAL = _gpu(4, "VirtualGPU")
NPU = Device("npus", 0, DeviceType.NPU, name="an NPU")
PINNED = Device("gpus", 5, DeviceType.GPU, MemoryKind.HOST_ACCESSIBLE, name="mappable")
EVERYTHING = (HOST, SOFTWARE, INTEGRATED, PINNED, VIRTUAL, DISCRETE, NPU)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (DevicePolicy.DEFAULT, DISCRETE),
        (DevicePolicy.PREFER_CPU, HOST),
        (DevicePolicy.PREFER_GPU, DISCRETE),
        (DevicePolicy.PREFER_NPU, NPU),
        (DevicePolicy.MAX_PERFORMANCE, DISCRETE),
        (DevicePolicy.MAX_EFFICIENCY, NPU),
        (DevicePolicy.MIN_OVERALL_POWER, NPU),
    ],
    ids=lambda p: getattr(p, "name", str(p)),
)
def test_policies_with_every_kind_of_device(policy: DevicePolicy, expected: Device) -> None:
    assert apply_policy(EVERYTHING, policy) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (DevicePolicy.PREFER_GPU, INTEGRATED),
        (DevicePolicy.PREFER_NPU, INTEGRATED),
        (DevicePolicy.MAX_PERFORMANCE, INTEGRATED),
        (DevicePolicy.MAX_EFFICIENCY, INTEGRATED),
        (DevicePolicy.MIN_OVERALL_POWER, INTEGRATED),
    ],
    ids=lambda p: getattr(p, "name", str(p)),
)
def test_policies_without_npu(policy: DevicePolicy, expected: Device) -> None:
    devices = (HOST, SOFTWARE, VIRTUAL, INTEGRATED)
    assert apply_policy(devices, policy) == expected


def test_min_overall_power_takes_host_before_a_discrete_gpu() -> None:
    assert apply_policy((HOST, DISCRETE), DevicePolicy.MIN_OVERALL_POWER) == HOST
    assert apply_policy((HOST, DISCRETE), DevicePolicy.MAX_EFFICIENCY) == DISCRETE


@pytest.mark.parametrize("policy", list(DevicePolicy), ids=lambda p: p.name)
def test_software_adapters_are_never_chosen(policy: DevicePolicy) -> None:
    # Only host memory and a software adapter (lavapipe): every policy falls back to host.
    assert apply_policy((HOST, SOFTWARE), policy) == HOST


def test_host_accessible_memory_is_never_chosen() -> None:
    assert apply_policy((HOST, PINNED), DevicePolicy.PREFER_GPU) == HOST


def test_policy_finds_nothing() -> None:
    with pytest.raises(UnknownDeviceError, match=r"policy PREFER_CPU finds no device among"):
        apply_policy((DISCRETE,), DevicePolicy.PREFER_CPU)


def test_delegate_chooses() -> None:
    seen: list[Sequence[Device]] = []

    def last(devices: Sequence[Device]) -> Device:
        seen.append(devices)
        return devices[-1]

    assert apply_policy(EVERYTHING, last) == NPU
    assert PINNED not in seen[0]  # delegates choose among default-memory devices too


def test_delegate_returning_a_stranger() -> None:
    with pytest.raises(ValueError, match=r"returned 'gpu'; expected one of the devices"):
        apply_policy(EVERYTHING, lambda devices: "gpu")  # type: ignore[arg-type,return-value]


def test_policy_of_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"must be a tensorferry\.DevicePolicy or a callable"):
        apply_policy(EVERYTHING, "gpu")  # type: ignore[arg-type]


def test_policy_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tensorferry"):
        apply_policy(EVERYTHING, DevicePolicy.MAX_EFFICIENCY)
    assert "policy MAX_EFFICIENCY chose npus:0 (npu, an NPU)" in caplog.text


# matching types and names ---------------------------------------------------------------


def test_match_by_type() -> None:
    assert match_device(EVERYTHING, "gpu") == INTEGRATED  # the first GPU, in order
    assert match_device(EVERYTHING, " NPU ") == NPU
    assert match_device((HOST, SOFTWARE), "gpu") is None  # a software adapter is no GPU


def test_match_by_name() -> None:
    assert match_device(EVERYTHING, "nvidia") == DISCRETE
    assert match_device(EVERYTHING, "llvmpipe") == SOFTWARE
    assert match_device(EVERYTHING, "via vulkan") == SOFTWARE  # first in order
    assert match_device(EVERYTHING, "no such thing") is None


@pytest.fixture
def acc_env(env: Environment, make_accelerator: MakeAccelerator) -> Environment:
    """The cpu environment plus a fake accelerator backend ``acc`` (two GPUs)."""
    env.register_backend("acc", make_accelerator("acc", device_count=2))
    return env


def test_env_device_by_type_and_name(acc_env: Environment) -> None:
    assert str(acc_env.device("gpu")) == "acc:0"
    assert str(acc_env.device("GPU")) == "acc:0"
    assert str(acc_env.device("fake acc 1")) == "acc:1"
    assert acc_env.device("cpu") == HOST  # the host backend's name wins over the CPU type


def test_env_device_backend_name_wins_over_a_device_name(
    env: Environment, make_accelerator: MakeAccelerator
) -> None:
    # Device names of backend "acc" contain "fake"; a backend named "fake" still wins.
    env.register_backend("acc", make_accelerator("acc"))
    env.register_backend("fake", make_accelerator("fake"))
    assert str(env.device("fake")) == "fake:0"


def test_env_device_no_match_lists_devices(acc_env: Environment) -> None:
    with pytest.raises(UnknownDeviceError) as info:
        acc_env.device("nothing like it")
    message = str(info.value)
    assert "no backend, device type or device name matches 'nothing like it'" in message
    assert "available backends: ['cpu', 'acc']" in message
    assert "acc:1 (GPU) fake acc 1" in message
    with pytest.raises(UnknownDeviceError, match=r"no NPU device; devices: cpu \(CPU\) host"):
        acc_env.device("npu")


# select_device and TENSORFERRY_DEVICE ---------------------------------------------------


def test_select_device_default_prefers_a_gpu(
    acc_env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert str(acc_env.select_device()) == "acc:0"
    assert acc_env.select_device(DevicePolicy.PREFER_CPU) == HOST
    assert str(acc_env.select_device(lambda devices: devices[-1])) == "acc:1"


def test_select_device_host_only(env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert env.select_device() == HOST


def test_environment_variable_overrides_the_default(
    acc_env: Environment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "acc:1")
    with caplog.at_level(logging.INFO, logger="tensorferry"):
        assert str(acc_env.select_device()) == "acc:1"
    assert "TENSORFERRY_DEVICE=acc:1 chose acc:1" in caplog.text
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert acc_env.select_device() == HOST
    # An explicit policy is the caller's word: the variable does not override it.
    assert str(acc_env.select_device(DevicePolicy.PREFER_GPU)) == "acc:0"


def test_environment_variable_naming_nothing(
    acc_env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "acc:9")
    with pytest.raises(UnknownDeviceError, match="no device 'acc:9'"):
        acc_env.select_device()


# typed properties ------------------------------------------------------------------------


def test_properties_are_typed() -> None:
    device = Device(
        "x", 0, DeviceType.GPU, properties={"max_buffer_size": 1 << 31, "adapter_type": "CPU"}
    )
    assert device.property("max_buffer_size") == 1 << 31
    assert isinstance(device.property("max_buffer_size"), int)
    assert device.property("adapter_type") == "CPU"
    assert device.property("missing") == ""
    assert device.property("missing", None) is None
    assert device.properties == (("max_buffer_size", 1 << 31), ("adapter_type", "CPU"))


@pytest.mark.parametrize("bad", [{"size": 1.5}, [("size",)], [(1, "x")], {"size": b"x"}], ids=repr)
def test_property_values_must_be_int_or_str(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"\(str key, int or str value\) pairs"):
        Device("x", 0, properties=bad)
