"""numpy, DLPack, torch and Tensor.to with tensors in real WebGPU memory, on every
adapter; choosing WebGPU devices by type, name and policy; the XDG_RUNTIME_DIR fix."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.dlpack import DLDeviceType


def test_asarray_downloads(env: tf.Environment, device: tf.Device) -> None:
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensor = env.from_numpy(data, device)
    array = np.asarray(tensor)
    assert array.dtype == np.float32  # not an object array
    np.testing.assert_array_equal(array, data)
    np.testing.assert_array_equal(np.asarray(tensor[1:3]), data[1:3])
    with pytest.raises(ValueError, match="copy=False"):
        np.asarray(tensor, copy=False)


def test_dlpack_device_is_webgpu(env: tf.Environment, device: tf.Device) -> None:
    tensor = env.empty(3, np.uint8, device)
    assert tensor.__dlpack_device__() == (int(DLDeviceType.WEBGPU), device.index)


def test_numpy_from_dlpack_cpu(env: tf.Environment, device: tf.Device) -> None:
    data = np.arange(10, dtype=np.int64)
    tensor = env.from_numpy(data, device)
    np.testing.assert_array_equal(np.from_dlpack(tensor, device="cpu"), data)
    with pytest.raises(BufferError, match="dl_device=\\(1, 0\\)"):
        np.from_dlpack(tensor)


def test_to_and_back(env: tf.Environment, device: tf.Device) -> None:
    data = np.linspace(0, 1, 33, dtype=np.float64)
    on_device = env.from_numpy(data).to(device)
    assert on_device.device == device
    back = on_device.to("cpu")
    assert back.device.is_host
    np.testing.assert_array_equal(back.host_array(), data)


def test_from_dlpack_uploads(env: tf.Environment, device: tf.Device) -> None:
    data = np.arange(7, dtype=np.uint16)
    tensor = env.from_dlpack(data, device=device)
    assert tensor.device == device
    np.testing.assert_array_equal(tensor.numpy(), data)


def test_between_adapters_through_to(env: tf.Environment) -> None:
    devices = [d for d in env.devices() if d.backend == "webgpu"]
    data = np.arange(16, dtype=np.int32)
    tensor = env.from_numpy(data, devices[0])
    for target in devices[1:]:
        tensor = tensor.to(target)
        assert tensor.device == target
    np.testing.assert_array_equal(np.asarray(tensor), data)


def test_torch_round_trip(env: tf.Environment, device: tf.Device) -> None:
    torch = pytest.importorskip("torch")
    source = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    on_device = env.from_dlpack(source, device=device)
    assert on_device.device == device
    back = torch.from_dlpack(on_device.to("cpu"))
    assert torch.equal(back, source)
    shared = env.from_dlpack(source)
    source[0, 0] = 42.0
    assert shared.host_array()[0, 0] == 42.0


def test_software_adapters_are_not_gpus(env: tf.Environment) -> None:
    for device in env.devices():
        if device.property("adapter_type") == "CPU":
            assert device.type is tf.DeviceType.CPU
            assert device not in env.devices(type=tf.DeviceType.GPU)
    if not env.devices(type=tf.DeviceType.GPU):
        with pytest.raises(tf.UnknownDeviceError, match=r"no GPU device \(software adapters"):
            env.device("gpu")  # the message lists the devices there are


def test_device_by_adapter_name(env: tf.Environment, device: tf.Device) -> None:
    backend_type = str(device.property("backend_type"))
    first = next(
        d for d in env.devices() if backend_type.lower() in d.name.lower() and d.backend == "webgpu"
    )
    assert env.device(f"via {backend_type}") == first


def test_select_device_by_environment_variable(
    env: tf.Environment,
    device: tf.Device,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TENSORFERRY_DEVICE", str(device))
    with caplog.at_level(logging.INFO, logger="tensorferry"):
        assert env.select_device() == device
    assert f"chose {device}" in caplog.text


def test_enumeration_needs_no_xdg_runtime_dir(run_child) -> None:  # type: ignore[no-untyped-def]
    """Without XDG_RUNTIME_DIR, listing devices writes nothing to stderr (Mesa's GL
    driver complains there otherwise) and the backend sets a private directory."""
    result = run_child(
        """
        import json, os, stat
        del os.environ["XDG_RUNTIME_DIR"]
        import tensorferry as tf
        with tf.Environment() as env:
            devices = [str(d) for d in env.devices()]
            t = env.from_numpy(list(range(4)), "webgpu")
            assert t.numpy().tolist() == [0, 1, 2, 3]
        path = os.environ["XDG_RUNTIME_DIR"]
        print(json.dumps([devices, oct(stat.S_IMODE(os.stat(path).st_mode))]))
        """
    )
    devices, mode = result.report()
    assert "webgpu:0" in devices
    assert mode == "0o700"
    assert "XDG_RUNTIME_DIR" not in result.stderr, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_cli_devices_json(run_child) -> None:  # type: ignore[no-untyped-def]
    result = run_child(
        "from tensorferry.cli import main; raise SystemExit(main())", "devices", "--json"
    )
    assert result.returncode == 0, result.describe()
    listing = json.loads(result.stdout)
    by_name = {d["device"]: d for d in listing["devices"]}
    assert by_name["cpu"]["type"] == "cpu"
    webgpu = by_name["webgpu:0"]
    assert isinstance(webgpu["properties"]["max_buffer_size"], int)
    assert webgpu["dlpack"] == [15, 0]
