"""Adoption: a caller's own wgpu device becomes a tensorferry device; a caller's
buffer becomes a tensor without a copy; the caller keeps both after env.close()."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._adapters import lacks_compute

USAGE = wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.STORAGE


@pytest.fixture
def adapter(env: tf.Environment, webgpu_index: int) -> Any:
    """The wgpu adapter behind ``webgpu:<webgpu_index>``."""
    summary = env.device(f"webgpu:{webgpu_index}").property("adapter")
    return next(a for a in tw.adapters() if a.summary == summary)


@pytest.fixture
def gpu(adapter: Any) -> Any:
    """A wgpu device of the caller's own, as a wgpu user would make it."""
    return adapter.request_device_sync()


@pytest.fixture
def adopted(fresh_env: tf.Environment, gpu: Any) -> tuple[tf.Environment, tf.Device]:
    return fresh_env, tw.adopt_device(fresh_env, gpu)


def read(gpu: Any, buffer: Any, offset: int = 0, size: int | None = None) -> bytes:
    return bytes(gpu.queue.read_buffer(buffer, offset, size))


def test_adopt_device_adds_a_device(fresh_env: tf.Environment, gpu: Any) -> None:
    env = fresh_env
    webgpu = [d for d in env.devices() if d.backend == "webgpu"]
    before = [d for d in webgpu if d.memory is tf.MemoryKind.DEFAULT]
    host_accessible = [d for d in webgpu if d.memory is tf.MemoryKind.HOST_ACCESSIBLE]
    backend = tw.backend_of(env)
    created = backend.contexts_created
    device = tw.adopt_device(env, gpu, label="mine")
    assert device.index == len(before)
    assert str(device) == f"webgpu:{len(before)}"
    assert device not in before
    assert device.property("context") == "mine"
    assert device.property("adapter") == gpu.adapter.summary
    assert [d for d in env.devices() if d.backend == "webgpu"] == [
        *before,
        device,
        *host_accessible,
    ]
    assert env.device(str(device)) == device
    assert backend.contexts_created == created + 1
    assert backend.context(device).gpu is gpu
    assert tw.adopt_device(env, gpu) == device, "adopting the same device again changes nothing"
    assert backend.contexts_created == created + 1


def test_tensors_on_an_adopted_device(adopted: tuple[tf.Environment, tf.Device], gpu: Any) -> None:
    env, device = adopted
    data = np.arange(1000, dtype=np.float32)
    tensor = env.from_numpy(data, device)
    np.testing.assert_array_equal(tensor.numpy(), data)
    buffer, offset = tw.buffer_of(tensor)
    assert read(gpu, buffer, offset, data.nbytes) == data.tobytes(), "the adopted device's memory"
    raw = tensor.view(np.uint8)
    env.copy_tensor(env.from_numpy(np.array([1, 2, 3], np.uint8)), raw[5:8])
    env.copy_tensor(raw[100:200], raw[301:401])
    expected = data.view(np.uint8).copy()
    expected[5:8] = [1, 2, 3]
    expected[301:401] = expected[100:200]
    np.testing.assert_array_equal(raw.numpy(), expected)
    env.fill(tensor[10:20], 2.5)
    assert (tensor[10:20].numpy() == 2.5).all()


def test_copies_between_an_adopted_device_and_a_builtin_one(
    adopted: tuple[tf.Environment, tf.Device], webgpu_index: int
) -> None:
    """The adopted device is another device than the adapter's own: copies are routed."""
    env, device = adopted
    builtin = env.device(f"webgpu:{webgpu_index}")
    assert builtin != device
    assert env.data_transfer_manager.get_data_transfer(builtin, device) is None
    data = np.arange(77, dtype=np.int16)
    source = env.from_numpy(data, builtin)
    target = env.empty((77,), np.int16, device)
    env.copy_tensor(source, target)
    np.testing.assert_array_equal(target.numpy(), data)


def test_wrap_buffer_shares_memory_both_ways(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any
) -> None:
    env, device = adopted
    buffer = gpu.create_buffer(size=256, usage=USAGE)
    background = np.arange(256, dtype=np.uint8)
    gpu.queue.write_buffer(buffer, 0, background)
    tensor = tw.wrap_buffer(env, device, buffer, (16,), np.float32, offset=64)
    assert tw.buffer_of(tensor) == (buffer, 64)
    assert tw.buffer_of(tensor[3:])[1] == 64 + 3 * 4
    np.testing.assert_array_equal(tensor.numpy(), background[64:128].view(np.float32))
    written = np.linspace(-1, 1, 16, dtype=np.float32)
    env.copy_tensor(env.from_numpy(written), tensor)
    expected = background.copy()
    expected[64:128] = written.view(np.uint8)
    assert read(gpu, buffer) == expected.tobytes(), "tensorferry's write is in the caller's buffer"
    theirs = np.full(16, 42.0, np.float32)
    gpu.queue.write_buffer(buffer, 64, theirs)
    np.testing.assert_array_equal(tensor.numpy(), theirs)
    env.fill(tensor[4:6], 7.0)
    expected[64:128] = theirs.view(np.uint8)
    expected[80:88] = np.full(2, 7.0, np.float32).view(np.uint8)
    assert read(gpu, buffer) == expected.tobytes()


def test_wrap_buffer_at_an_odd_offset_is_byte_exact(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any
) -> None:
    env, device = adopted
    buffer = gpu.create_buffer(size=64, usage=USAGE)
    background = np.arange(100, 164, dtype=np.uint8)
    gpu.queue.write_buffer(buffer, 0, background)
    tensor = tw.wrap_buffer(env, device, buffer, (5,), np.uint8, offset=3)
    assert tw.buffer_of(tensor) == (buffer, 3)
    np.testing.assert_array_equal(tensor.numpy(), background[3:8])
    env.copy_tensor(env.from_numpy(np.array([1, 2, 3, 4, 5], np.uint8)), tensor)
    expected = background.copy()
    expected[3:8] = [1, 2, 3, 4, 5]
    assert read(gpu, buffer) == expected.tobytes()


def test_wrap_buffer_shares_with_pooled_tensors(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any
) -> None:
    """A wrapped buffer and a pooled tensor on the adopted device copy directly."""
    env, device = adopted
    buffer = gpu.create_buffer(size=400, usage=USAGE)
    wrapped = tw.wrap_buffer(env, device, buffer, (100,), np.int32)
    pooled = env.from_numpy(np.arange(100, dtype=np.int32), device)
    assert env.data_transfer_manager.get_data_transfer(device, device) is not None
    env.copy_tensor(pooled, wrapped)
    assert read(gpu, buffer) == np.arange(100, dtype=np.int32).tobytes()


def test_wrap_buffer_of_another_device_is_refused(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any, adapter: Any, webgpu_index: int
) -> None:
    env, device = adopted
    stranger = adapter.request_device_sync()
    foreign = stranger.create_buffer(size=64, usage=USAGE)
    with pytest.raises(ValueError, match="another wgpu device"):
        tw.wrap_buffer(env, device, foreign, (16,), np.float32)
    mine = gpu.create_buffer(size=64, usage=USAGE)
    with pytest.raises(ValueError, match="another wgpu device"):
        tw.wrap_buffer(env, env.device(f"webgpu:{webgpu_index}"), mine, (16,), np.float32)


@pytest.mark.parametrize(
    "usage",
    [
        wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.STORAGE,
        wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.STORAGE,
        wgpu.BufferUsage.STORAGE,
    ],
    ids=["no-COPY_SRC", "no-COPY_DST", "neither"],
)
def test_wrap_buffer_without_copy_usage_is_refused(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any, usage: int
) -> None:
    env, device = adopted
    buffer = gpu.create_buffer(size=64, usage=usage)
    with pytest.raises(ValueError, match=re.escape("COPY_SRC | COPY_DST")):
        tw.wrap_buffer(env, device, buffer, (16,), np.float32)


@pytest.mark.parametrize(
    ("shape", "offset"), [((17,), 0), ((16,), 4), ((1,), 64), ((1,), -4)], ids=str
)
def test_wrap_buffer_that_does_not_fit_is_refused(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any, shape: tuple[int, ...], offset: int
) -> None:
    env, device = adopted
    buffer = gpu.create_buffer(size=64, usage=USAGE)
    with pytest.raises(ValueError, match=r"(fit|offset)"):
        tw.wrap_buffer(env, device, buffer, shape, np.float32, offset=offset)


def test_buffer_of(env: tf.Environment, device: tf.Device) -> None:
    tensor = env.from_numpy(np.arange(24, dtype=np.float64).reshape(6, 4), device)
    buffer, offset = tw.buffer_of(tensor)
    assert offset % 16 == 0, "a slot in a slab starts at a multiple of 16"
    assert buffer.size >= offset + tensor.nbytes
    assert tw.buffer_of(tensor[2:]) == (buffer, offset + 2 * 4 * 8)
    assert tw.buffer_of(tensor[5]) == (buffer, offset + 5 * 4 * 8)
    assert tw.buffer_of(tensor.view(np.uint8)[0][3:]) == (buffer, offset + 3)
    assert tw.buffer_of(tensor[3:3]) == (buffer, offset + 3 * 4 * 8), "an empty view"
    with pytest.raises(ValueError, match="no bytes"):
        tw.buffer_of(env.empty((0, 4), np.float64, device))
    with pytest.raises(TypeError):
        tw.buffer_of(env.from_numpy(np.arange(3)))


def test_env_close_leaves_the_adopted_device_to_its_owner(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any
) -> None:
    env, device = adopted
    buffer = gpu.create_buffer(size=64, usage=USAGE)
    wrapped = tw.wrap_buffer(env, device, buffer, (16,), np.float32)
    env.copy_tensor(env.from_numpy(np.full(16, 3.0, np.float32)), wrapped)
    pooled = env.from_numpy(np.arange(8, dtype=np.int32), device)
    assert pooled.nbytes == 32
    env.close()
    with pytest.raises(tf.ClosedError):
        wrapped.numpy()
    assert read(gpu, buffer) == np.full(16, 3.0, np.float32).tobytes(), "the wrapped buffer lives"
    gpu.queue.write_buffer(buffer, 0, np.arange(16, dtype=np.float32))
    assert read(gpu, buffer) == np.arange(16, dtype=np.float32).tobytes()
    fresh = gpu.create_buffer(size=16, usage=USAGE)
    gpu.queue.write_buffer(fresh, 0, np.arange(4, dtype=np.int32))
    encoder = gpu.create_command_encoder()
    encoder.copy_buffer_to_buffer(fresh, 0, buffer, 0, 16)
    gpu.queue.submit([encoder.finish()])
    assert read(gpu, buffer, 0, 16) == np.arange(4, dtype=np.int32).tobytes()


def test_adopt_after_close_is_refused(fresh_env: tf.Environment, gpu: Any) -> None:
    backend = tw.backend_of(fresh_env)
    fresh_env.close()
    with pytest.raises(tf.ClosedError):
        backend.adopt_device(gpu)


def test_adopting_into_two_environments(make_env: Callable[..., tf.Environment], gpu: Any) -> None:
    """One caller's device in two environments: each has its own tensorferry device,
    and closing one leaves the other working."""
    first, second = make_env(), make_env()
    one, two = tw.adopt_device(first, gpu), tw.adopt_device(second, gpu)
    a = first.from_numpy(np.arange(5.0), one)
    b = second.from_numpy(np.arange(5.0) * 2, two)
    first.close()
    with pytest.raises(tf.ClosedError):
        a.numpy()
    np.testing.assert_array_equal(b.numpy(), np.arange(5.0) * 2)


SECOND_ENUMERATION_CHILD = """
import json
import wgpu
import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._adapters import lacks_compute

env = tf.Environment()
shared = [a for a in tw.adapters() if not lacks_compute(a)]
gl = [
    a for a in wgpu.gpu.enumerate_adapters_sync()
    if a.info["backend_type"] == "OpenGL" and not lacks_compute(a)
]
report = {"gl adapters": len(gl)}
if gl:
    gpu = gl[0].request_device_sync()
    try:
        tw.adopt_device(env, gpu)
    except ValueError as exc:
        report["error"] = str(exc)
    webgpu = [d for d in env.devices() if d.backend == "webgpu"]
    report["devices"] = len([d for d in webgpu if d.memory.name == "DEFAULT"])
    report["shared devices"] = len(shared)
env.close()
print(json.dumps(report))
"""


def _computing_adapters() -> list[Any]:
    """The shared adapters a device can be opened on (GL 3.3 contexts cannot)."""
    return [a for a in tw.adapters() if not lacks_compute(a)]


def test_adopting_a_gl_device_of_another_enumeration_is_refused(
    run_child: Callable[..., Any],
) -> None:
    """A device from a second enumeration of the GL adapter would abort the process
    once both are used: adopting one raises ValueError before anything is submitted.
    (In a child interpreter: the second enumeration is the hazard itself.)"""
    if not any(a.info["backend_type"] == "OpenGL" for a in _computing_adapters()):
        pytest.skip("needs an OpenGL adapter with compute shaders")
    report = run_child(SECOND_ENUMERATION_CHILD).report()
    assert report["gl adapters"] >= 1
    assert "another wgpu adapter enumeration" in report.get("error", ""), report
    assert "tensorferry_webgpu.adapters()" in report["error"]
    assert report["devices"] == report["shared devices"], "the refused device was not added"


def test_adopting_a_device_of_the_shared_enumeration_is_accepted(
    fresh_env: tf.Environment,
) -> None:
    for adapter in _computing_adapters():
        device = tw.adopt_device(fresh_env, adapter.request_device_sync())
        data = np.arange(16, dtype=np.int32)
        np.testing.assert_array_equal(fresh_env.from_numpy(data, device).numpy(), data)


def test_a_lone_upload_into_a_destroyed_wrapped_buffer_raises(
    adopted: tuple[tf.Environment, tf.Device], gpu: Any
) -> None:
    """The lone small upload's native write reports wgpu's refusal as an error
    (named), and the device stays usable."""
    env, device = adopted
    buffer = gpu.create_buffer(size=64, usage=USAGE)
    tensor = tw.wrap_buffer(env, device, buffer, (16,), np.float32)
    buffer.destroy()
    with pytest.raises(tw.WebGPUError, match="has been destroyed"):
        env.copy_tensor(env.from_numpy(np.ones(16, np.float32)), tensor)
    data = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(env.from_numpy(data, device).numpy(), data)
