"""Device: an immutable, hashable identity of one backend's memory on one device."""

from __future__ import annotations

import attrs
import pytest

from tensorferry import HOST, Device, DeviceType, MemoryKind


def test_device_is_frozen() -> None:
    device = Device("webgpu", 0, DeviceType.GPU)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        device.index = 1  # type: ignore[misc]


def test_equal_devices_hash_equal_and_work_as_keys() -> None:
    first = Device("webgpu", 1, DeviceType.GPU, vendor_id=0x10DE, device_id=0x2330)
    second = Device("webgpu", 1, DeviceType.GPU, vendor_id=0x10DE, device_id=0x2330)
    assert first == second
    assert hash(first) == hash(second)
    assert {first: "a"}[second] == "a"
    assert len({first, second, HOST}) == 2


def test_equality_ignores_name_and_properties() -> None:
    plain = Device("webgpu", 0, DeviceType.GPU, vendor_id=0x1002)
    described = Device(
        "webgpu",
        0,
        DeviceType.GPU,
        vendor_id=0x1002,
        name="AMD Radeon",
        properties=(("backend_type", "Vulkan"),),
    )
    assert plain == described
    assert hash(plain) == hash(described)


@pytest.mark.parametrize(
    "other",
    [
        Device("webgpu", 1, DeviceType.GPU, vendor_id=0x1002),
        Device("webgpu", 0, DeviceType.NPU, vendor_id=0x1002),
        Device("webgpu", 0, DeviceType.GPU, MemoryKind.HOST_ACCESSIBLE, vendor_id=0x1002),
        Device("webgpu", 0, DeviceType.GPU, vendor_id=0x10DE),
        Device("webgpu", 0, DeviceType.GPU, vendor_id=0x1002, device_id=7),
    ],
    ids=["index", "type", "memory", "vendor_id", "device_id"],
)
def test_every_identity_field_takes_part_in_equality(other: Device) -> None:
    assert Device("webgpu", 0, DeviceType.GPU, vendor_id=0x1002) != other


def test_devices_of_two_backends_on_the_same_hardware_differ() -> None:
    hardware = {"type": DeviceType.GPU, "vendor_id": 0x10DE, "device_id": 0x2330}
    cuda = Device("cuda", 0, **hardware)
    webgpu = Device("webgpu", 0, **hardware)
    assert cuda != webgpu
    assert len({cuda, webgpu}) == 2


def test_backend_name_is_case_insensitive() -> None:
    assert Device("WebGPU", 0).backend == "webgpu"
    assert Device("CPU") == HOST


def test_negative_index_is_rejected() -> None:
    with pytest.raises(ValueError, match="index"):
        Device("webgpu", -1)


@pytest.mark.parametrize(
    ("device", "text"),
    [
        (HOST, "cpu"),
        (Device("cpu"), "cpu"),
        (Device("x", 1), "x:1"),
        (Device("webgpu", 0, DeviceType.GPU), "webgpu:0"),
        (Device("cpu", 1), "cpu:1"),
    ],
)
def test_str_form(device: Device, text: str) -> None:
    assert str(device) == text


def test_host_is_host() -> None:
    assert HOST.is_host
    assert HOST.type is DeviceType.CPU
    assert HOST.memory is MemoryKind.DEFAULT


@pytest.mark.parametrize(
    "device",
    [
        Device("cpu", 1),
        Device("cpu", 0, DeviceType.CPU, MemoryKind.HOST_ACCESSIBLE),
        Device("webgpu", 0, DeviceType.CPU),
        Device("webgpu", 0, DeviceType.GPU, MemoryKind.HOST_ACCESSIBLE),
    ],
)
def test_other_devices_are_not_host(device: Device) -> None:
    assert not device.is_host


def test_property_lookup() -> None:
    device = Device("webgpu", 0, properties=(("adapter_type", "DiscreteGPU"),))
    assert device.property("adapter_type") == "DiscreteGPU"
    assert device.property("backend_type") == ""
    assert device.property("backend_type", "unknown") == "unknown"
