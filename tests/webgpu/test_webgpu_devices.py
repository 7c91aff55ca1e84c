"""Devices: one per adapter, best first, described by the adapter's facts, and the
``TENSORFERRY_WEBGPU_ADAPTERS`` filter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _adapters as tw_adapters
from tensorferry_webgpu._adapters import lacks_compute, order_adapters

TYPE_ORDER = ["DiscreteGPU", "IntegratedGPU", "VirtualGPU", "CPU"]
"""Adapter types, best first, as the backend documents its order."""
OPENGL = {"OpenGL", "OpenGLES"}


def expected_order(adapters: list[Any]) -> list[str]:
    """Adapter summaries in the documented order: by type (discrete, integrated,
    virtual, CPU, then anything else), native APIs before OpenGL, then wgpu's order."""

    def key(item: tuple[int, Any]) -> tuple[int, int, int]:
        position, adapter = item
        info = adapter.info
        kind = str(info["adapter_type"])
        rank = TYPE_ORDER.index(kind) if kind in TYPE_ORDER else len(TYPE_ORDER)
        return (rank, str(info["backend_type"]) in OPENGL, position)

    return [a.summary for _, a in sorted(enumerate(adapters), key=key)]


def webgpu_devices(env: tf.Environment) -> list[tf.Device]:
    return [
        d
        for d in env.devices()
        if d.backend == "webgpu" and d.memory is tf.MemoryKind.DEFAULT  # one per adapter
    ]


@pytest.fixture
def no_adapter_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the test without TENSORFERRY_WEBGPU_ADAPTERS, whatever the caller set."""
    monkeypatch.delenv(tw.ADAPTERS_ENV, raising=False)


def usable_adapters() -> list[Any]:
    """The machine's adapters that can become devices (OpenGL contexts without
    compute shaders cannot), in wgpu's order."""
    return [a for a in tw.adapters() if not lacks_compute(a)]


@pytest.fixture
def backend_types() -> list[str]:
    """The backend types (Vulkan, OpenGL...) of the usable adapters, in wgpu's order."""
    return [str(a.info["backend_type"]) for a in usable_adapters()]


@pytest.mark.usefixtures("no_adapter_filter")
def test_one_device_per_adapter_best_first(make_env: Callable[..., tf.Environment]) -> None:
    adapters = usable_adapters()
    devices = webgpu_devices(make_env())
    assert [d.property("adapter") for d in devices] == expected_order(adapters)
    assert [str(d) for d in devices] == [f"webgpu:{i}" for i in range(len(adapters))]
    assert len(set(devices)) == len(devices), "devices of different adapters must differ"


@pytest.mark.usefixtures("no_adapter_filter")
def test_vulkan_comes_before_opengl(
    make_env: Callable[..., tf.Environment], backend_types: list[str]
) -> None:
    if not {"Vulkan", "OpenGL"} <= set(backend_types):
        pytest.skip(f"needs a Vulkan and an OpenGL adapter, found {backend_types}")
    order = [d.property("backend_type") for d in webgpu_devices(make_env())]
    assert order.index("Vulkan") < order.index("OpenGL"), order


@pytest.mark.usefixtures("no_adapter_filter")
def test_order_does_not_depend_on_enumeration_order() -> None:
    """The same real adapters, in reverse enumeration order, are ordered the same way."""
    adapters = usable_adapters()
    forward = [a.summary for a in order_adapters(adapters)]
    assert [a.summary for a in order_adapters(adapters[::-1])] == forward
    assert forward == expected_order(adapters)


@pytest.mark.usefixtures("no_adapter_filter")
def test_devices_are_stable_across_environments(make_env: Callable[..., tf.Environment]) -> None:
    first, second = make_env(), make_env()
    assert webgpu_devices(first) == webgpu_devices(second)
    assert [d.name for d in webgpu_devices(first)] == [d.name for d in webgpu_devices(second)]


def test_device_describes_its_adapter(env: tf.Environment, device: tf.Device) -> None:
    by_summary = {a.summary: a for a in tw.adapters()}
    adapter = by_summary[device.property("adapter")]
    info = adapter.info
    assert device.backend == "webgpu"
    # Software adapters (lavapipe, llvmpipe) run on the processor: type CPU, never GPU.
    software = info["adapter_type"] == "CPU"
    assert device.type is (tf.DeviceType.CPU if software else tf.DeviceType.GPU)
    assert device.memory is tf.MemoryKind.DEFAULT
    assert device.name == adapter.summary
    assert device.property("adapter_type") == info["adapter_type"]
    assert device.property("backend_type") == info["backend_type"]
    assert device.property("vendor") == info["vendor"]
    assert device.vendor_id == info["vendor_id"]
    assert device.device_id == info["device_id"]
    assert device.property("max_buffer_size") == adapter.limits["max-buffer-size"]
    assert type(device.property("max_buffer_size")) is int
    assert device.property("dlpack_device_type") == 15
    assert env.device(str(device)) == device
    assert not device.is_host


def test_backend_name_alone_means_the_best_device(env: tf.Environment) -> None:
    assert env.device("webgpu") == webgpu_devices(env)[0]
    assert env.device("WebGPU:0") == webgpu_devices(env)[0]


def test_adapters_env_reorders(
    make_env: Callable[..., tf.Environment],
    monkeypatch: pytest.MonkeyPatch,
    backend_types: list[str],
) -> None:
    if not {"Vulkan", "OpenGL"} <= set(backend_types):
        pytest.skip(f"needs a Vulkan and an OpenGL adapter, found {backend_types}")
    monkeypatch.setenv(tw.ADAPTERS_ENV, "OpenGL,Vulkan")
    order = [d.property("backend_type") for d in webgpu_devices(make_env())]
    assert order[0] == "OpenGL"
    assert order.index("OpenGL") < order.index("Vulkan")
    monkeypatch.setenv(tw.ADAPTERS_ENV, "  vulkan , OPENGL ")  # case and spaces do not matter
    order = [d.property("backend_type") for d in webgpu_devices(make_env())]
    assert order[0] == "Vulkan"
    assert order.index("Vulkan") < order.index("OpenGL")


def test_adapters_env_restricts(
    make_env: Callable[..., tf.Environment],
    monkeypatch: pytest.MonkeyPatch,
    backend_types: list[str],
) -> None:
    if "OpenGL" not in backend_types or len(backend_types) < 2:
        pytest.skip(f"needs an OpenGL adapter and another, found {backend_types}")
    monkeypatch.setenv(tw.ADAPTERS_ENV, "opengl")
    env = make_env()
    devices = webgpu_devices(env)
    assert [d.property("backend_type") for d in devices] == ["OpenGL"] * backend_types.count(
        "OpenGL"
    )
    assert str(devices[0]) == "webgpu:0"
    tensor = env.from_numpy(np.arange(5, dtype=np.int32), "webgpu:0")
    np.testing.assert_array_equal(tensor.numpy(), np.arange(5, dtype=np.int32))


def test_adapters_env_lists_each_adapter_once(
    make_env: Callable[..., tf.Environment],
    monkeypatch: pytest.MonkeyPatch,
    backend_types: list[str],
) -> None:
    """A token that matches every adapter ("via", in every wgpu summary) after one
    that matches some keeps the first token's adapters first, without duplicates."""
    last = backend_types[-1]
    monkeypatch.setenv(tw.ADAPTERS_ENV, f"{last},via,{last}")
    devices = webgpu_devices(make_env())
    assert len(devices) == len(backend_types)
    assert len({d.property("adapter") for d in devices}) == len(devices)
    assert devices[0].property("backend_type") == last


def test_adapters_env_matching_nothing(
    make_env: Callable[..., tf.Environment], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No adapter left: the backend is unavailable, says that the filter removed
    every adapter and which adapters there are (not what to install), and the host
    backend keeps working."""
    monkeypatch.setenv(tw.ADAPTERS_ENV, "no-such-adapter-anywhere")
    env = make_env()
    # Other installed backends (a toy plugin, say) may add devices; webgpu adds none.
    assert [d for d in env.devices() if d.backend == "webgpu"] == []
    assert tf.HOST in env.devices()
    assert "webgpu" not in env.load_all()
    reason = env.backend_errors["webgpu"]
    assert f"{tw.ADAPTERS_ENV}='no-such-adapter-anywhere' matches none of the adapters" in reason
    for adapter in tw.adapters():
        assert adapter.summary in reason
    assert "mesa-vulkan-drivers" not in reason
    with pytest.raises(tf.BackendUnavailableError) as caught:
        env.device("webgpu:0")
    assert isinstance(caught.value, LookupError)
    assert tw.ADAPTERS_ENV in str(caught.value)
    with pytest.raises(tf.BackendUnavailableError):
        env.empty(4, np.float32, "webgpu")
    data = np.arange(7, dtype=np.float64)
    np.testing.assert_array_equal(env.from_numpy(data).numpy(), data)


def test_only_the_deliberate_feature_warning_is_silenced(env: tf.Environment) -> None:
    """tensorferry asks for mappable-primary-buffers on discrete GPUs on purpose (for
    host-accessible tensors); wgpu's warning about it is dropped, nothing else."""
    import logging

    for device in env.devices():  # opening a device through the backend installs the filter
        if device.backend == "webgpu":
            env.empty(4, np.uint8, device)
            break
    wgpu_logger = logging.getLogger("wgpu")

    def passes(message: str) -> bool:
        record = wgpu_logger.makeRecord("wgpu", logging.WARNING, __file__, 1, message, (), None)
        return all(f.filter(record) for f in wgpu_logger.filters if hasattr(f, "filter"))

    assert not passes(
        "Feature MAPPABLE_PRIMARY_BUFFERS enabled on a discrete gpu. This is a massive "
        "performance footgun and likely not what you wanted"
    )
    assert passes("Device lost")
    assert passes("Validation Error: something else")


class _Reported:
    """What wgpu reports of an adapter, as recorded on real machines (the order
    and filter rules read nothing else)."""

    def __init__(self, summary: str, adapter_type: str, backend_type: str, description: str):
        self.summary = summary
        self.info = {
            "adapter_type": adapter_type,
            "backend_type": backend_type,
            "description": description,
        }


NVIDIA_GL = _Reported(  # the H200 machine's OpenGL adapter: every device request fails
    "NVIDIA H200/PCIe/SSE2 (Unknown) via OpenGL", "Unknown", "OpenGL", "3.3.0 NVIDIA 580.159.04"
)
NVIDIA_VK = _Reported("NVIDIA H200 (DiscreteGPU) via Vulkan", "DiscreteGPU", "Vulkan", "580.159.04")
MESA_GL = _Reported(
    "llvmpipe (LLVM 15.0.6, 256 bits) (CPU) via OpenGL",
    "CPU",
    "OpenGL",
    "4.5 (Core Profile) Mesa 22.3.6",
)


@pytest.mark.parametrize(
    ("backend_type", "description", "lacks"),
    [
        ("OpenGL", "3.3.0 NVIDIA 580.159.04", True),
        ("OpenGL", "4.2 Mesa", True),
        ("OpenGL", "4.3 Mesa", False),
        ("OpenGL", "4.5 (Core Profile) Mesa 22.3.6", False),
        ("OpenGLES", "OpenGL ES 3.0 Mesa 22.3.6", True),
        ("OpenGLES", "OpenGL ES 3.1 Mesa 22.3.6", False),
        ("OpenGL", "no version here", False),
        ("Vulkan", "1.0 driver", False),
    ],
)
def test_opengl_contexts_older_than_compute_shaders_are_recognised(
    backend_type: str, description: str, lacks: bool
) -> None:
    reported = _Reported("an adapter", "Unknown", backend_type, description)
    assert lacks_compute(reported) is lacks  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_adapter_filter")
def test_opengl_contexts_without_compute_shaders_become_no_device() -> None:
    found = [NVIDIA_GL, MESA_GL, NVIDIA_VK]
    kept = order_adapters(found)  # type: ignore[arg-type]
    assert [a.summary for a in kept] == [NVIDIA_VK.summary, MESA_GL.summary]
    message = tw_adapters.no_adapter_message([NVIDIA_GL], "install a driver")  # type: ignore[list-item]
    assert "only OpenGL adapters without compute shaders" in message
    assert NVIDIA_GL.summary in message
