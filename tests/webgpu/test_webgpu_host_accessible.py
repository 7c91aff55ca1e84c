"""Host-accessible memory (``MemoryKind.HOST_ACCESSIBLE``): tensorferry's pinned memory.

Every test runs on real adapters: lavapipe offers ``mappable-primary-buffers`` and
so has a host-accessible device; Mesa's OpenGL adapter does not, and has none.
Cases that would crash the interpreter if the protection failed (reading an array
after an unmap, submitting work on a mapped buffer) run in a child interpreter.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf

wgpu = pytest.importorskip("wgpu")
tw = pytest.importorskip("tensorferry_webgpu")

HOST = tf.MemoryKind.HOST_ACCESSIBLE


def _host_devices(env: tf.Environment) -> list[tf.Device]:
    return [d for d in env.devices() if d.memory is HOST]


@pytest.fixture
def host_device(env: tf.Environment) -> tf.Device:
    """The host-accessible device of the first adapter that has one."""
    found = _host_devices(env)
    if not found:
        pytest.skip("no adapter here offers mappable-primary-buffers")
    return found[0]


def test_one_host_accessible_device_per_adapter_that_can_map_its_buffers(
    env: tf.Environment,
) -> None:
    backend = env.backend("webgpu")
    assert isinstance(backend, tw.WebGPUBackend)
    default = [d for d in env.devices() if d.backend == "webgpu" and d.memory is not HOST]
    host = _host_devices(env)
    mappable = {a.summary for a in tw.adapters() if "mappable-primary-buffers" in a.features}
    assert {d.index for d in host} == {d.index for d in default if d.name in mappable}
    for device in host:
        twin = default[device.index]
        assert (device.type, device.vendor_id, device.device_id) == (
            twin.type,
            twin.vendor_id,
            twin.device_id,
        )
        assert device != twin
        assert str(device) == f"{twin}:host" != str(twin)
        assert env.device(str(device)) == device
        assert env.device(str(twin), memory=HOST) == device
        assert env.device(f" WEBGPU:{device.index}:HOST ") == device


def test_the_opengl_adapter_has_no_host_accessible_device(env: tf.Environment) -> None:
    gl = [
        d
        for d in env.devices()
        if d.backend == "webgpu" and str(d.property("backend_type")).startswith("OpenGL")
    ]
    if not gl:
        pytest.skip("no OpenGL adapter on this machine")
    assert all(d.memory is not HOST for d in gl)
    for device in gl:
        with pytest.raises(tf.UnknownDeviceError, match=f"no device 'webgpu:{device.index}:host'"):
            env.device(f"webgpu:{device.index}:host")
        with pytest.raises(tf.UnknownDeviceError, match="with HOST_ACCESSIBLE memory"):
            env.device(str(device), memory=HOST)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("webgpu:0:pinned", "memory kind 'pinned'"),
        ("webgpu:0:", "memory kind ''"),
        ("webgpu:0:host:1", "memory kind 'host:1'"),
        ("webgpu::host", "index ''"),
        ("webgpu:00:host", "index '00'"),
        ("webgpu:0 :host", "whitespace"),
    ],
)
def test_bad_memory_kinds_in_specs_are_refused(
    env: tf.Environment, spec: str, message: str
) -> None:
    with pytest.raises(tf.UnknownDeviceError, match=message) as caught:
        env.device(spec)
    assert "webgpu:0:host" in str(caught.value)


def test_memory_argument_is_checked(env: tf.Environment, host_device: tf.Device) -> None:
    with pytest.raises(TypeError, match="MemoryKind"):
        env.device("webgpu:0", memory="host")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="HOST_ACCESSIBLE memory but memory=DEFAULT"):
        env.device(str(host_device), memory=tf.MemoryKind.DEFAULT)
    assert env.device("webgpu", memory=HOST) == host_device
    word = host_device.name.split()[0]  # part of the adapter's name: "llvmpipe", "NVIDIA"...
    assert env.device(word, memory=HOST).memory is HOST
    assert env.device("webgpu").memory is tf.MemoryKind.DEFAULT
    assert env.device(word).memory is tf.MemoryKind.DEFAULT


def test_policies_never_pick_host_accessible_memory(env: tf.Environment) -> None:
    for policy in tf.DevicePolicy:
        assert env.select_device(policy).memory is tf.MemoryKind.DEFAULT


@pytest.mark.parametrize("nbytes", [0, 1, 3, 4, 1001, 3 << 20])
def test_round_trips_through_host_accessible_memory(
    env: tf.Environment, host_device: tf.Device, nbytes: int
) -> None:
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    t = env.from_numpy(data, device=host_device)
    assert t.device == host_device
    assert np.array_equal(t.numpy(), data)
    device = env.device(f"webgpu:{host_device.index}")
    on_device = t.to(device)
    back = on_device.to(host_device)
    assert back.device == host_device
    assert np.array_equal(back.numpy(), data)


def test_vulkan_host_memory_is_read_mapped_and_written_through_read_maps(
    env: tf.Environment, host_device: tf.Device
) -> None:
    """On Vulkan host-accessible buffers lack MAP_WRITE (which would put them in a
    discrete GPU's BAR); the host's writes through mapped() still reach the device."""
    t = env.zeros(4096, np.uint8, device=host_device)
    buffer, _ = tw.buffer_of(t)
    if host_device.property("backend_type") == "Vulkan":
        assert buffer.usage & wgpu.BufferUsage.MAP_READ
        assert not buffer.usage & wgpu.BufferUsage.MAP_WRITE
    data = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)
    with t.mapped() as a:
        a[:] = data
        del a
    device = env.device(f"webgpu:{host_device.index}")
    on_device = t.to(device)
    assert np.array_equal(on_device.numpy(), data)
    env.copy_tensor(env.from_numpy(data[::-1].copy()), t)  # the host writes by a copy, too
    assert np.array_equal(t.to(device).numpy(), data[::-1])


def test_offsets_and_neighbours_are_byte_exact(env: tf.Environment, host_device: tf.Device) -> None:
    device = env.device(f"webgpu:{host_device.index}")
    base = np.arange(40, dtype=np.uint8).reshape(10, 4)
    t = env.from_numpy(base, device=host_device)
    src = env.from_numpy(np.full((3, 4), 200, np.uint8), device=device)
    env.copy_tensor(src[0:3].reshape(12)[1:10], t.reshape(40)[5:14])
    expected = base.reshape(40).copy()
    expected[5:14] = 200
    assert np.array_equal(t.numpy().reshape(40), expected)
    with t[2:4].mapped() as a:
        assert a.shape == (2, 4)
        assert np.array_equal(a, expected.reshape(10, 4)[2:4])
        a[:] = 9
        del a
    expected.reshape(10, 4)[2:4] = 9
    assert np.array_equal(t.numpy().reshape(40), expected)


def test_device_copies_are_one_copy_command(
    env: tf.Environment, host_device: tf.Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy between host-accessible and device memory is one copy command (one DMA),
    never the copy kernel, whatever its size."""
    from tensorferry_webgpu import _queue
    from tensorferry_webgpu._copy_kernel import CopyKernel

    device = env.device(f"webgpu:{host_device.index}")
    data = np.arange(1 << 20, dtype=np.float32)
    t = env.from_numpy(data, device=host_device)
    target = env.empty(data.shape, data.dtype, device=device)
    commands: list[int] = []
    kernels: list[object] = []
    real_encode, real_submit = _queue.encode_copies, _queue.submit_copies

    def encode(encoder: Any, copies: list[Any]) -> None:
        commands.extend(copy[4] for copy in copies)
        real_encode(encoder, copies)

    def submit(gpu: Any, queue: Any, copies: list[Any]) -> None:
        commands.extend(copy[4] for copy in copies)
        real_submit(gpu, queue, copies)

    monkeypatch.setattr(_queue, "encode_copies", encode)
    monkeypatch.setattr(_queue, "submit_copies", submit)
    monkeypatch.setattr(CopyKernel, "encode", lambda *args: kernels.append(args))
    env.copy_tensor(t, target)
    assert commands == [data.nbytes]
    commands.clear()
    env.copy_tensor(target, t)
    assert commands == [data.nbytes]
    assert kernels == []
    monkeypatch.undo()
    assert np.array_equal(target.numpy(), data)


def test_host_copies_map_the_buffer_instead_of_staging(
    make_env: Callable[..., tf.Environment], staged_options: Callable[..., Any]
) -> None:
    with make_env(staged_options()) as env:
        found = _host_devices(env)
        if not found:
            pytest.skip("no adapter here offers mappable-primary-buffers")
        backend = env.backend("webgpu")
        assert isinstance(backend, tw.WebGPUBackend)
        data = np.arange(3 << 18, dtype=np.int32)
        t = env.from_numpy(data, device=found[0])
        assert np.array_equal(t.numpy(), data)
        up, down = backend.staging_stats(found[0])
        assert (up.buffers, down.buffers) == (0, 0)


def test_mapped_is_zero_copy_and_writable(env: tf.Environment, host_device: tf.Device) -> None:
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    t = env.from_numpy(data, device=host_device)
    with t.mapped() as a:
        assert a.shape == (3, 4)
        assert a.dtype == np.float64
        assert a.flags.writeable
        assert np.array_equal(a, data)
        np.multiply(a, 2, out=a)
        del a
    assert np.array_equal(t.numpy(), data * 2)
    with t.mapped() as b:
        assert np.array_equal(b, data * 2)
        del b


def test_structured_dtypes_map(env: tf.Environment, host_device: tf.Device) -> None:
    dtype = np.dtype([("a", np.uint8), ("b", np.float32)])
    data = np.zeros(5, dtype)
    data["a"] = np.arange(5)
    data["b"] = np.arange(5) / 2
    t = env.from_numpy(data, device=host_device)
    with t.mapped() as a:
        assert a.dtype == dtype
        assert np.array_equal(a, data)
        del a


def test_zero_byte_tensors_map_to_empty_arrays(env: tf.Environment, host_device: tf.Device) -> None:
    t = env.empty((0, 3), np.float32, device=host_device)
    with t.mapped() as a:
        assert a.shape == (0, 3)


def test_device_memory_and_host_memory_answer_mapped(
    env: tf.Environment, host_device: tf.Device
) -> None:
    device = env.device(f"webgpu:{host_device.index}")
    t = env.empty((4,), np.float32, device=device)
    with pytest.raises(TypeError, match="host-accessible memory"):
        t.mapped()
    host = env.from_numpy(np.arange(4.0))
    with host.mapped() as a:
        a[0] = 5
    assert host.numpy()[0] == 5


def test_copies_refuse_while_the_scope_is_open(env: tf.Environment, host_device: tf.Device) -> None:
    device = env.device(f"webgpu:{host_device.index}")
    t = env.from_numpy(np.arange(64, dtype=np.float32), device=host_device)
    other = env.empty((64,), np.float32, device=device)
    backend = env.backend("webgpu")
    assert isinstance(backend, tw.WebGPUBackend)
    with t.mapped() as a:
        for attempt in (
            lambda: t.numpy(),
            lambda: env.copy_tensor(t, other),
            lambda: env.copy_tensor(other, t),
            lambda: env.copy_tensor(t[0:8], t[8:16]),
            lambda: env.fill(t, 1.0),
            lambda: backend.read_raw(t.storage, 0, 4),
            lambda: t.mapped().__enter__(),
            lambda: env.copy_tensors_async([other], [t]).wait(),
        ):
            with pytest.raises(tf.MappedError, match=r"open tensor\.mapped"):
                attempt()
        a[0] = 42
        del a
    assert t.numpy()[0] == 42


def test_an_array_kept_after_the_scope_keeps_the_memory_mapped(
    env: tf.Environment, host_device: tf.Device
) -> None:
    t = env.from_numpy(np.arange(8, dtype=np.int64), device=host_device)
    with t.mapped() as a:
        a[1] = 100
    assert a[1] == 100  # still mapped: reading it is safe
    with pytest.raises(tf.MappedError, match="still referenced after its scope"):
        t.numpy()
    del a
    gc.collect()
    assert t.numpy()[1] == 100


def test_views_alive_at_exit_raise_and_keep_the_memory_mapped(
    env: tf.Environment, host_device: tf.Device
) -> None:
    t = env.from_numpy(np.arange(8, dtype=np.int32), device=host_device)
    kept = []

    def keep_a_view() -> None:
        with t.mapped() as a:
            kept.append(a[2:])

    with pytest.raises(tf.MappedError, match="views of it"):
        keep_a_view()
    assert list(kept[0]) == [2, 3, 4, 5, 6, 7]
    with pytest.raises(tf.MappedError, match="still referenced"):
        t.numpy()
    kept.clear()
    assert list(t.numpy()) == list(range(8))


def test_one_view_kept_without_the_name_defers_the_unmap_quietly(
    env: tf.Environment, host_device: tf.Device
) -> None:
    """A single outstanding reference looks like the ``as`` name, so exit does not
    raise; the memory still stays mapped until the view is gone."""
    t = env.from_numpy(np.arange(8, dtype=np.int32), device=host_device)
    with t.mapped() as a:
        view = a[2:]
        del a
    assert list(view) == [2, 3, 4, 5, 6, 7]
    with pytest.raises(tf.MappedError, match="still referenced"):
        t.numpy()
    del view
    assert list(t.numpy()) == list(range(8))


def test_read_only_tensors_map_read_only(env: tf.Environment, host_device: tf.Device) -> None:
    t = env.from_numpy(np.arange(4, dtype=np.float32), device=host_device)
    # No WebGPU tensor is read-only today; an instance attribute makes this one say so.
    vars(t.storage)["writable"] = False
    try:
        with t.mapped() as a:
            assert not a.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                a[0] = 1
            del a
    finally:
        del vars(t.storage)["writable"]
    assert t.numpy()[0] == 0


def test_memory_is_counted_apart_and_returned(make_env: Callable[..., tf.Environment]) -> None:
    env = make_env()
    found = _host_devices(env)
    if not found:
        pytest.skip("no adapter here offers mappable-primary-buffers")
    host_device = found[0]
    backend = env.backend("webgpu")
    assert isinstance(backend, tw.WebGPUBackend)
    device = env.device(f"webgpu:{host_device.index}")
    gc.collect()
    before = backend.bytes_in_use(host_device), backend.bytes_in_use(device)
    t = env.empty((1000,), np.uint8, device=host_device)
    assert backend.bytes_in_use(host_device) == before[0] + 1000
    assert backend.bytes_in_use(device) == before[1]
    with t.mapped() as a:
        a[:] = 1
    del t
    gc.collect()
    assert backend.bytes_in_use(host_device) == before[0] + 1000  # `a` keeps it alive
    del a
    gc.collect()
    assert backend.bytes_in_use(host_device) == before[0]
    again = env.empty((1000,), np.uint8, device=host_device)  # a recycled, unmapped buffer
    assert again.numpy().shape == (1000,)


CHILD = """
import gc, json, sys
import numpy as np
import tensorferry as tf

case = sys.argv[1]
env = tf.Environment()
host = [d for d in env.devices() if d.memory is tf.MemoryKind.HOST_ACCESSIBLE]
if not host:
    print(json.dumps({"skip": True}))
    sys.exit(0)
h = host[0]
dev = env.device(f"webgpu:{h.index}")
t = env.from_numpy(np.arange(1 << 16, dtype=np.float32), device=h)
d = env.from_numpy(np.ones(1 << 16, dtype=np.float32), device=dev)
seen = []
if case == "copy-in-scope":
    with t.mapped() as a:
        for call in (lambda: env.copy_tensor(d, t), lambda: env.copy_tensor(t, d)):
            try:
                call()
            except tf.MappedError:
                seen.append("refused")
        total = float(a.sum())
        del a
    seen.append(total)
elif case == "view-outlives":
    views = []
    try:
        with t.mapped() as a:
            views.append(a[10:])
            views.append(memoryview(a))
            del a
    except tf.MappedError:
        seen.append("exit-refused")
    for _ in range(3):
        try:
            env.copy_tensor(d, t)
        except tf.MappedError:
            seen.append("refused")
    seen.append(float(views[0][0]))
    views.clear()
    gc.collect()
    env.copy_tensor(d, t)
    seen.append(float(t.numpy()[10]))
elif case == "drop-tensor":
    with t.mapped() as a:
        pass
    del t
    gc.collect()
    more = [env.empty((1 << 16,), np.float32, device=h) for _ in range(4)]
    for m in more:
        env.copy_tensor(d, m)
    seen.append(float(a[5]))
    del a
    gc.collect()
    seen.append(float(more[0].numpy()[5]))
elif case == "async":
    with t.mapped() as a:
        try:
            env.copy_tensors_async([d], [t]).wait()
        except tf.MappedError:
            seen.append("refused")
        del a
    env.copy_tensors_async([d], [t]).wait()
    seen.append(float(t.numpy()[0]))
elif case == "planned-then-mapped":
    # An async batch is planned before the scope opens and runs inside it: the
    # transfer checks again, under the lock that maps, before it submits anything.
    transfer = env.backend("webgpu").data_transfers()[0]
    runs = transfer._plan([(d, t)])
    with t.mapped() as a:
        try:
            transfer._execute(runs)
        except tf.MappedError:
            seen.append("refused")
        del a
    transfer._execute(runs)
    seen.append(float(t.numpy()[0]))
env.close()
print(json.dumps({"seen": seen}))
"""


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("copy-in-scope", ["refused", "refused", float(sum(range(1 << 16)))]),
        ("view-outlives", ["exit-refused", "refused", "refused", "refused", 10.0, 1.0]),
        ("drop-tensor", [5.0, 1.0]),
        ("async", ["refused", 1.0]),
        ("planned-then-mapped", ["refused", 1.0]),
    ],
)
def test_nothing_a_user_does_crashes_the_process(
    run_child: Callable[..., Any], case: str, expected: list[object]
) -> None:
    result = run_child(CHILD, case)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if answer.get("skip"):
        pytest.skip("no adapter here offers mappable-primary-buffers")
    assert answer["seen"] == expected


@pytest.mark.parametrize("choice", [False, True, None])
def test_host_accessible_devices_follow_the_option(
    make_env: Callable[..., tf.Environment], choice: bool | None
) -> None:
    """``host_accessible=False`` offers none; ``True`` one per adapter with
    mappable-primary-buffers; the default one per such adapter on Vulkan or with
    unified memory."""
    env = make_env(tw.ContextOptions(host_accessible=choice))
    host = [d for d in env.devices() if d.memory is tf.MemoryKind.HOST_ACCESSIBLE]
    adapters = tw.adapters()
    capable = [a for a in adapters if "mappable-primary-buffers" in a.features]
    default = [
        a
        for a in capable
        if a.info["adapter_type"] in {"CPU", "IntegratedGPU"} or a.info["backend_type"] == "Vulkan"
    ]
    expected = {False: [], True: capable, None: default}[choice]
    assert sorted(d.property("adapter") for d in host) == sorted(a.summary for a in expected)
