"""Environment: backend discovery and lifetime, device strings, numpy in and out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tensorferry import (
    ENTRY_POINT_GROUP,
    HOST,
    BackendUnavailableError,
    ClosedError,
    Device,
    DeviceType,
    Environment,
    ForeignTensorError,
    HostStorage,
    InvalidArrayError,
    OutOfDeviceMemoryError,
    Tensor,
    UnknownDeviceError,
    UnsupportedDtypeError,
)

PLUGINS = "tensorferry_core_test_plugins"
"""An in-memory module the injected entry points point into."""

MakeAccelerator = Callable[..., Any]
Install = Callable[..., None]


def _entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch, make_accelerator: MakeAccelerator) -> Any:
    """Backend factories importable as ``tensorferry_core_test_plugins:<name>``.

    ``plugins.calls`` counts the calls of the ``lazy`` factory, and ``plugins.made``
    holds the backend it made.
    """
    module: Any = types.ModuleType(PLUGINS)
    module.calls = 0
    module.made = None

    def lazy() -> Any:
        module.calls += 1
        module.made = make_accelerator("lazy", device_count=2)
        return module.made

    def faulty() -> Any:
        raise RuntimeError("no driver for this accelerator")

    module.lazy = lazy
    module.faulty = faulty
    module.not_a_backend = object
    module.misnamed = lambda: make_accelerator("other")
    monkeypatch.setitem(sys.modules, PLUGINS, module)
    return module


@pytest.fixture
def with_lazy(installed_backends: Install, plugins: Any) -> Any:
    """Environments see ``cpu`` and the counting ``lazy`` backend (two GPUs)."""
    installed_backends(_entry_point("lazy", f"{PLUGINS}:lazy"))
    return plugins


@pytest.fixture
def lazy_env(with_lazy: Any) -> Iterator[Environment]:
    """An environment over ``cpu`` and ``lazy``, closed afterwards."""
    with Environment() as env:
        yield env


@pytest.fixture
def acca(make_accelerator: MakeAccelerator, env: Environment) -> Any:
    """A fake accelerator registered at run time with ``env``."""
    backend = make_accelerator("acca", device_count=2)
    env.register_backend("acca", backend)
    return backend


# discovery and lazy loading --------------------------------------------------------


def test_installed_cpu_backend_is_discovered() -> None:
    with Environment() as env:
        assert env.backend_names[0] == "cpu"
        assert env.device("cpu") == HOST
        assert env.backend_errors == {}


def test_injected_entry_points_are_discovered(lazy_env: Environment) -> None:
    assert lazy_env.backend_names == ["cpu", "lazy"]


def test_backends_load_only_when_needed(lazy_env: Environment, with_lazy: Any) -> None:
    tensor = lazy_env.from_numpy(np.arange(3))
    lazy_env.to_numpy(tensor)
    assert lazy_env.device("cpu:0") == HOST
    assert with_lazy.calls == 0
    assert lazy_env.device("lazy:1") == Device(
        "lazy", 1, DeviceType.GPU, vendor_id=0x1234, device_id=1
    )
    assert with_lazy.calls == 1
    lazy_env.device("lazy")
    lazy_env.devices()
    lazy_env.from_numpy(np.arange(3), "lazy:0")
    assert with_lazy.calls == 1


def test_devices_loads_every_backend(lazy_env: Environment, with_lazy: Any) -> None:
    devices = lazy_env.devices()
    assert with_lazy.calls == 1
    assert devices == [HOST, *with_lazy.made.devices()]
    assert lazy_env.devices(type=DeviceType.GPU) == with_lazy.made.devices()
    assert lazy_env.devices(type=DeviceType.CPU) == [HOST]
    assert lazy_env.devices(type=DeviceType.NPU) == []


def test_load_all_returns_the_loaded_names(lazy_env: Environment, with_lazy: Any) -> None:
    assert lazy_env.load_all() == ["cpu", "lazy"]
    assert lazy_env.load_all() == ["cpu", "lazy"]
    assert with_lazy.calls == 1


@pytest.mark.parametrize(
    ("backends", "names"),
    [
        ([], ["cpu"]),
        (["cpu"], ["cpu"]),
        (["LAZY"], ["cpu", "lazy"]),
        (("lazy", "cpu"), ["cpu", "lazy"]),
    ],
    ids=str,
)
def test_backends_restricts_what_may_load(
    with_lazy: Any, backends: list[str], names: list[str]
) -> None:
    with Environment(backends=backends) as env:
        assert env.backend_names == names
        env.devices()
    assert with_lazy.calls == names.count("lazy")


def test_restricted_out_backend_is_unknown(with_lazy: Any) -> None:
    with (
        Environment(backends=["cpu"]) as env,
        pytest.raises(
            UnknownDeviceError,
            match=r"available backends: \['cpu'\]; it is installed, but this environment",
        ),
    ):
        env.device("lazy:0")
    assert with_lazy.calls == 0


def test_restricting_to_an_uninstalled_backend_raises(with_lazy: Any) -> None:
    with pytest.raises(
        UnknownDeviceError,
        match=r"no installed backend named 'nope'; installed backends: \['cpu', 'lazy'\]",
    ):
        Environment(backends=["cpu", "nope"])


# device strings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cpu", "cpu"),
        ("cpu:0", "cpu"),
        (" CPU:0 ", "cpu"),
        (HOST, "cpu"),
        ("lazy", "lazy:0"),
        ("lazy:1", "lazy:1"),
        ("Lazy:1", "lazy:1"),
        (Device("lazy", 1, DeviceType.GPU, vendor_id=0x1234, device_id=1), "lazy:1"),
    ],
    ids=str,
)
def test_device_resolves(lazy_env: Environment, spec: str | Device, expected: str) -> None:
    device = lazy_env.device(spec)
    assert str(device) == expected
    assert device in lazy_env.devices()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nope",
            r"no backend, device type or device name matches 'nope'; expected a backend name, "
            r"'gpu', 'npu' or part of a device name; available backends: \['cpu', 'lazy'\]; "
            r"devices: cpu \(CPU\) host memory; lazy:0 \(GPU\) fake lazy 0",
        ),
        ("nope:0", r"no backend named 'nope'; available backends: \['cpu', 'lazy'\]"),
        ("cpu:1", r"no device 'cpu:1'; backend 'cpu' has \['cpu'\]"),
        ("lazy:5", r"no device 'lazy:5'; backend 'lazy' has \['lazy:0', 'lazy:1'\]"),
        ("cpu:x", r"'cpu:x' has index 'x', not a non-negative integer.*expected 'backend' or"),
        ("", r"the device spec '' is empty; expected 'backend' or 'backend:index'"),
        ("webgpu:+1", r"has index '\+1', not a non-negative integer written in digits"),
        ("cpu:-0", r"has index '-0', not a non-negative integer"),
        ("cpu:-1", r"has index '-1'"),
        ("cpu:01", r"without sign or leading zeros"),
        ("cpu:1_0", r"has index '1_0'"),
        ("cpu:\u0661", r"not a non-negative integer written in digits"),
        ("cpu:", r"has index ''"),
        (":0", r"has no backend name"),
        (" WebGPU : 0 ", r"' WebGPU : 0 ' has whitespace inside; expected 'backend'"),
        ("   ", r"is empty"),
        (Device("lazy", 7), r"lazy:7 is not a device of this environment"),
        (Device("nope", 0), r"no backend named 'nope'"),
    ],
    ids=str,
)
def test_unknown_device(lazy_env: Environment, spec: str | Device, message: str) -> None:
    with pytest.raises(UnknownDeviceError, match=message) as info:
        lazy_env.device(spec)
    assert isinstance(info.value, LookupError)


@pytest.mark.parametrize("spec", [0, 3, None, True, b"cpu"], ids=repr)
def test_device_spec_of_wrong_type(env: Environment, spec: Any) -> None:
    with pytest.raises(TypeError, match=f"must be a str or a Device, got {type(spec).__name__}"):
        env.device(spec)


@pytest.mark.parametrize("name", [" CPU ", "Cpu"])
def test_backend_names_ignore_case_and_surrounding_whitespace(env: Environment, name: str) -> None:
    assert env.backend(name) is env.backend("cpu")


def test_uninstalled_builtin_backend_names_its_install_command(
    installed_backends: Install,
) -> None:
    installed_backends()  # the cpu backend alone
    with (
        Environment() as env,
        pytest.raises(
            UnknownDeviceError, match=r"install it with pip install 'tensorferry\[webgpu"
        ),
    ):
        env.device("webgpu:0")


# backends that do not load -------------------------------------------------------------


def test_backend_that_fails_to_import(installed_backends: Install, env_factory: Any) -> None:
    installed_backends(_entry_point("broken", "no_such_module_xyz:create"))
    env = env_factory()
    message = (
        r"backend 'broken' is unavailable: entry point 'no_such_module_xyz:create' failed to "
        r"import \(No module named 'no_such_module_xyz'\); reinstall .* with the extras it needs"
    )
    for _ in range(2):
        with pytest.raises(BackendUnavailableError, match=message) as info:
            env.device("broken")
        assert isinstance(info.value, UnknownDeviceError)
        assert isinstance(info.value, LookupError)
    assert list(env.backend_errors) == ["broken"]
    assert "no_such_module_xyz" in env.backend_errors["broken"]
    # the host keeps working
    assert env.load_all() == ["cpu"]
    assert env.devices() == [HOST]
    np.testing.assert_array_equal(env.to_numpy(env.from_numpy(np.arange(4))), np.arange(4))


@pytest.mark.parametrize(
    ("factory", "message", "cause"),
    [
        ("faulty", "no driver for this accelerator", RuntimeError),
        ("not_a_backend", "returned object, expected a tensorferry.Backend", TypeError),
        ("misnamed", "backend registered as 'plugin' calls itself 'other'", ValueError),
        ("missing_attribute", "missing_attribute", AttributeError),
    ],
)
def test_factory_that_fails(
    installed_backends: Install,
    plugins: Any,
    env_factory: Any,
    factory: str,
    message: str,
    cause: type[Exception],
) -> None:
    installed_backends(_entry_point("plugin", f"{PLUGINS}:{factory}"))
    env = env_factory()
    with pytest.raises(
        BackendUnavailableError, match=f"backend 'plugin' is unavailable: .*{message}"
    ) as info:
        env.backend("plugin")
    assert isinstance(info.value.__cause__, cause)
    assert env.devices() == [HOST]


@pytest.fixture
def env_factory() -> Iterator[Callable[..., Environment]]:
    """Build environments (after entry points are patched) that are closed afterwards."""
    made: list[Environment] = []

    def make(**options: Any) -> Environment:
        made.append(Environment(**options))
        return made[-1]

    yield make
    for env in made:
        env.close()


# backends registered at run time ---------------------------------------------------------


def test_register_backend_instance(env: Environment, make_accelerator: MakeAccelerator) -> None:
    backend = make_accelerator("acca")
    assert env.register_backend("AccA", backend) is backend
    assert "acca" in env.backend_names
    assert env.backend("acca") is backend
    assert backend.transfer in env.data_transfer_manager.data_transfers
    tensor = env.from_numpy(np.arange(5.0), "acca:0")
    assert tensor.device == Device("acca", 0, DeviceType.GPU, vendor_id=0x1234)
    np.testing.assert_array_equal(env.to_numpy(tensor), np.arange(5.0))


def test_register_backend_factory_is_called_once_at_once(
    env: Environment, make_accelerator: MakeAccelerator
) -> None:
    made: list[Any] = []

    def factory() -> Any:
        made.append(make_accelerator("acca"))
        return made[-1]

    backend = env.register_backend("acca", factory)
    assert made == [backend]
    env.device("acca:0")
    env.devices()
    assert made == [backend]


@pytest.mark.parametrize("as_factory", [False, True], ids=["instance", "factory"])
def test_register_backend_checks_the_name(
    env: Environment, make_accelerator: MakeAccelerator, as_factory: bool
) -> None:
    backend = make_accelerator("acca")
    with pytest.raises(ValueError, match="registered as 'accb' calls itself 'acca'"):
        env.register_backend("accb", (lambda: backend) if as_factory else backend)
    assert "accb" not in env.backend_names
    assert backend.transfer not in env.data_transfer_manager.data_transfers


def test_register_backend_rejects_what_is_not_a_backend(env: Environment) -> None:
    with pytest.raises(TypeError, match=r"returned object, expected a tensorferry\.Backend"):
        env.register_backend("thing", object)


def test_register_backend_twice_raises(env: Environment, acca: Any, make_accelerator: Any) -> None:
    with pytest.raises(ValueError, match="a backend named 'acca' is loaded already"):
        env.register_backend("acca", make_accelerator("acca"))


def test_register_backend_replaces_an_unloaded_entry_point(
    lazy_env: Environment, with_lazy: Any, make_accelerator: MakeAccelerator
) -> None:
    replacement = make_accelerator("lazy")
    lazy_env.register_backend("lazy", replacement)
    assert lazy_env.backend("lazy") is replacement
    assert with_lazy.calls == 0


def test_register_backend_after_a_failed_load(
    installed_backends: Install, env_factory: Any, make_accelerator: MakeAccelerator
) -> None:
    installed_backends(_entry_point("broken", "no_such_module_xyz:create"))
    env = env_factory()
    with pytest.raises(BackendUnavailableError):
        env.device("broken")
    env.register_backend("broken", make_accelerator("broken"))
    assert env.backend_errors == {}
    assert str(env.device("broken")) == "broken:0"


def test_unregister_backend(env: Environment, acca: Any, events: list[str]) -> None:
    tensor = env.from_numpy(np.arange(3), "acca:1")
    host = env.from_numpy(np.zeros(3, tensor.dtype))
    env.unregister_backend("acca")
    assert events[-2:] == ["close transfer acca", "close backend acca"]
    assert acca.transfer not in env.data_transfer_manager.data_transfers
    assert "acca" not in env.backend_names
    with pytest.raises(ClosedError, match="released storage"):
        env.copy_tensor(tensor, host)
    with pytest.raises(ClosedError):
        env.to_numpy(tensor)
    with pytest.raises(ClosedError):
        tensor.numpy()
    with pytest.raises(UnknownDeviceError, match="no backend named 'acca'"):
        env.device("acca:0")
    np.testing.assert_array_equal(env.to_numpy(host), [0, 0, 0])


def test_unregister_unknown_backend_raises(env: Environment, acca: Any) -> None:
    env.unregister_backend("ACCA")
    with pytest.raises(LookupError, match="no loaded backend named 'acca'; loaded: "):
        env.unregister_backend("acca")


def test_backend_can_be_registered_again(
    env: Environment, acca: Any, make_accelerator: MakeAccelerator
) -> None:
    env.unregister_backend("acca")
    again = make_accelerator("acca")
    env.register_backend("acca", again)
    tensor = env.from_numpy(np.arange(2), "acca")
    assert tensor.storage in again.allocations
    np.testing.assert_array_equal(tensor.numpy(), [0, 1])


def test_unregister_backend_unregisters_the_transfers_it_registered(
    env: Environment, make_accelerator: MakeAccelerator
) -> None:
    # Backend.data_transfers() may build new objects on each call.
    backend = make_accelerator("acca", fresh_transfers=True)
    env.register_backend("acca", backend)
    [registered] = backend.handed_out
    assert registered in env.data_transfer_manager.data_transfers
    env.unregister_backend("acca")
    assert registered not in env.data_transfer_manager.data_transfers
    assert registered.inner.closed


class _BlockingTransfer:
    """Wraps a transfer; each copy waits for ``release`` before it starts copying."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.release = threading.Event()

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return bool(self.inner.can_copy(src_device, dst_device))

    def copy_tensors(self, pairs: Any) -> None:
        self.started.set()
        self.release.wait(timeout=10)
        self.inner.copy_tensors(pairs)

    def close(self) -> None:
        self.inner.close()


def test_unregister_backend_lets_copies_in_flight_finish(
    env: Environment, make_accelerator: MakeAccelerator, events: list[str]
) -> None:
    backend = make_accelerator("acca")
    backend.transfer = blocking = _BlockingTransfer(backend.transfer)
    env.register_backend("acca", backend)
    src = env.from_numpy(np.arange(4.0))
    dst = env.empty(4, np.float64, "acca:0")
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    copier = run(lambda: env.copy_tensor(src, dst))
    assert blocking.started.wait(timeout=5)
    remover = run(lambda: env.unregister_backend("acca"))
    time.sleep(0.05)
    closed_during_copy = "close backend acca" in events
    blocking.release.set()
    copier.join(timeout=5)
    remover.join(timeout=5)
    assert errors == []
    assert not closed_during_copy


# close -------------------------------------------------------------------------------------


def test_close_closes_transfers_then_backends_in_reverse_order(
    make_accelerator: MakeAccelerator, events: list[str]
) -> None:
    env = Environment(backends=["cpu"])
    env.device("cpu")
    cpu_transfer = env.data_transfer_manager.data_transfers[0]
    for name in ("acca", "accb"):
        env.register_backend(name, make_accelerator(name))
    env.close()
    assert events == [
        "close transfer accb",
        "close transfer acca",
        "close backend accb",
        "close backend acca",
    ]
    assert env.closed
    assert env.data_transfer_manager.closed
    with pytest.raises(ClosedError):
        cpu_transfer.copy_tensors([])
    env.close()
    assert len(events) == 4


def test_context_manager_closes(make_accelerator: MakeAccelerator, events: list[str]) -> None:
    with Environment(backends=["cpu"]) as env:
        assert isinstance(env, Environment)
        env.register_backend("acca", make_accelerator("acca"))
    assert env.closed
    assert events == ["close transfer acca", "close backend acca"]


def test_context_manager_closes_on_error() -> None:
    with pytest.raises(KeyError), Environment(backends=["cpu"]) as env:
        raise KeyError("boom")
    assert env.closed


@pytest.mark.parametrize(
    "use",
    [
        lambda env, t: env.device("cpu"),
        lambda env, t: env.devices(),
        lambda env, t: env.backend("cpu"),
        lambda env, t: env.load_all(),
        lambda env, t: env.empty(3, np.int8),
        lambda env, t: env.zeros(3, np.int8),
        lambda env, t: env.from_numpy(np.arange(3)),
        lambda env, t: env.from_numpy(np.arange(3), copy=False),
        lambda env, t: env.to_numpy(t),
        lambda env, t: t.numpy(),
        lambda env, t: env.fill(t, 1),
        lambda env, t: env.copy_tensor(t, t),
        lambda env, t: env.copy_tensors([t], [t]),
        lambda env, t: env.copy_tensors_async([t], [t]),
        lambda env, t: env.register_backend("cpu2", lambda: None),
        lambda env, t: env.unregister_backend("cpu"),
    ],
    ids=[
        "device",
        "devices",
        "backend",
        "load_all",
        "empty",
        "zeros",
        "from_numpy",
        "from_numpy-shared",
        "to_numpy",
        "tensor.numpy",
        "fill",
        "copy_tensor",
        "copy_tensors",
        "copy_tensors_async",
        "register_backend",
        "unregister_backend",
    ],
)
def test_use_after_close_raises(use: Callable[[Environment, Tensor], object]) -> None:
    env = Environment(backends=["cpu"])
    tensor = env.from_numpy(np.arange(3))
    env.close()
    with pytest.raises(ClosedError, match="closed"):
        use(env, tensor)


def test_interpreter_exit_with_an_open_environment_is_clean() -> None:
    script = textwrap.dedent(
        """
        import numpy as np
        import tensorferry as tf

        class Noisy:
            name = "noisy"
            def devices(self): return []
            def allocate(self, device, nbytes): raise MemoryError
            def data_transfers(self): return []
            def close(self): print("noisy closed")

        env = tf.Environment(backends=["cpu"])
        env.register_backend("noisy", Noisy())
        tensor = env.from_numpy(np.arange(10))
        handle = env.copy_tensors_async([tensor], [env.empty(10, tensor.dtype)])
        assert (tensor.numpy() == np.arange(10)).all()
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == "noisy closed\n"


# numpy in and out -----------------------------------------------------------------------------


def test_from_numpy_copies_by_default(env: Environment) -> None:
    data = np.arange(6, dtype=np.int32)
    tensor = env.from_numpy(data)
    assert tensor.owner is env
    assert not np.shares_memory(tensor.host_array(), data)
    data[:] = -1
    np.testing.assert_array_equal(tensor.numpy(), np.arange(6))


def test_from_numpy_copy_of_a_read_only_array_is_writable(env: Environment) -> None:
    data = np.arange(3)
    data.flags.writeable = False
    tensor = env.from_numpy(data)
    assert tensor.writable
    env.fill(tensor, 9)
    np.testing.assert_array_equal(tensor.numpy(), [9, 9, 9])


def test_from_numpy_without_copy_shares_memory(env: Environment) -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = env.from_numpy(data, copy=False)
    assert np.shares_memory(tensor.host_array(), data)
    assert (tensor.shape, tensor.dtype, tensor.writable) == ((2, 3), np.float32, True)
    env.fill(tensor[1], 7)
    np.testing.assert_array_equal(data[1], [7, 7, 7])
    data[0, 0] = -3
    assert env.to_numpy(tensor)[0, 0] == -3


def test_from_numpy_without_copy_of_a_read_only_array(env: Environment) -> None:
    data = np.arange(4)
    data.flags.writeable = False
    tensor = env.from_numpy(data, copy=False)
    assert not tensor.writable
    np.testing.assert_array_equal(tensor.numpy(), np.arange(4))
    with pytest.raises(InvalidArrayError, match="read-only"):
        env.fill(tensor, 0)
    with pytest.raises(InvalidArrayError, match="read-only"):
        env.copy_tensor(env.zeros(4, data.dtype), tensor)
    np.testing.assert_array_equal(data, np.arange(4))


def _strided() -> npt.NDArray[Any]:
    return np.arange(10)[::2]


def _transposed() -> npt.NDArray[Any]:
    return np.arange(6).reshape(2, 3).T


def _fortran() -> npt.NDArray[Any]:
    return np.asfortranarray(np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("make", [_strided, _transposed, _fortran], ids=lambda f: f.__name__)
def test_non_contiguous_arrays(env: Environment, make: Callable[[], npt.NDArray[Any]]) -> None:
    with pytest.raises(InvalidArrayError, match="non-C-contiguous"):
        env.from_numpy(make(), copy=False)
    np.testing.assert_array_equal(env.from_numpy(make()).numpy(), make())


def test_from_numpy_without_copy_needs_a_host_device(env: Environment, acca: Any) -> None:
    with pytest.raises(ValueError, match=r"copy=False .* only the host can; got device acca:0"):
        env.from_numpy(np.arange(3), "acca:0", copy=False)


def test_from_numpy_without_copy_needs_an_ndarray(env: Environment) -> None:
    with pytest.raises(InvalidArrayError, match=r"needs a numpy\.ndarray to share, got list"):
        env.from_numpy([1, 2, 3], copy=False)


@pytest.mark.parametrize(
    "data", [[1, 2, 3], 3.5, [[True], [False]], np.float16(2), b"xyz"], ids=repr
)
def test_from_numpy_accepts_array_likes(env: Environment, data: Any) -> None:
    np.testing.assert_array_equal(env.from_numpy(data).numpy(), np.asarray(data))


def test_from_numpy_to_an_accelerator_and_back(env: Environment, acca: Any) -> None:
    data = np.arange(12, dtype=np.complex64).reshape(3, 4)
    tensor = env.from_numpy(data, "acca:1")
    assert str(tensor.device) == "acca:1"
    np.testing.assert_array_equal(acca.read(tensor), data)
    np.testing.assert_array_equal(env.to_numpy(tensor[1:]), data[1:])


def test_from_numpy_rejects_unsupported_dtypes(env: Environment) -> None:
    with pytest.raises(UnsupportedDtypeError):
        env.from_numpy(np.array(["a", None], dtype=object))


def test_to_numpy_into_out(env: Environment, acca: Any) -> None:
    tensor = env.from_numpy(np.arange(4, dtype=np.uint16), "acca")
    out = np.zeros(4, np.uint16)
    assert env.to_numpy(tensor, out=out) is out
    np.testing.assert_array_equal(out, np.arange(4))
    assert tensor.numpy(out=np.zeros(4, np.uint16))[3] == 3


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (np.zeros(3, np.uint16), r"shape \(3,\) and dtype uint16; expected shape \(4,\)"),
        (np.zeros(4, np.int16), "expected shape .* and dtype uint16"),
        (np.zeros(8, np.uint16)[::2], "not C-contiguous"),
        (np.zeros(0, np.uint16), r"shape \(0,\)"),
    ],
    ids=["shape", "dtype", "strided", "empty"],
)
def test_to_numpy_validates_out(env: Environment, out: Any, message: str) -> None:
    tensor = env.from_numpy(np.arange(4, dtype=np.uint16))
    with pytest.raises(InvalidArrayError, match=message):
        env.to_numpy(tensor, out=out)


def test_to_numpy_rejects_a_read_only_out(env: Environment) -> None:
    out = np.zeros(2)
    out.flags.writeable = False
    with pytest.raises(InvalidArrayError, match="out is read-only; expected a writable"):
        env.to_numpy(env.zeros(2, np.float64), out=out)


def test_to_numpy_rejects_foreign_tensors(env: Environment) -> None:
    with Environment(backends=["cpu"]) as other:
        foreign = other.from_numpy(np.arange(2))
        with pytest.raises(ForeignTensorError, match="belongs to another environment"):
            env.to_numpy(foreign)
        with pytest.raises(ForeignTensorError):
            env.fill(foreign, 1)
    with pytest.raises(TypeError, match=r"must be a tensorferry.Tensor, got ndarray"):
        env.to_numpy(np.arange(2))  # type: ignore[arg-type]


# empty, zeros and fill ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "acca:0", "acca:1"])
def test_zeros(env: Environment, acca: Any, device: str) -> None:
    tensor = env.zeros((2, 3), np.float32, device)
    assert (str(tensor.device), tensor.shape, tensor.dtype) == (
        "cpu" if device == "cpu" else device,
        (2, 3),
        np.float32,
    )
    np.testing.assert_array_equal(tensor.numpy(), np.zeros((2, 3)))


@pytest.mark.parametrize("device", ["cpu", "acca:0"])
def test_fill_a_view(env: Environment, acca: Any, device: str) -> None:
    tensor = env.zeros((3, 2), np.int64, device)
    env.fill(tensor[1], -5)
    env.fill(tensor[2:], 2**40)
    np.testing.assert_array_equal(tensor.numpy(), [[0, 0], [-5, -5], [2**40, 2**40]])


def test_fill_structured_dtype(env: Environment, acca: Any) -> None:
    dtype = np.dtype([("id", "<u2"), ("weight", "<f4")])
    tensor = env.empty(3, dtype, "acca")
    env.fill(tensor, (7, 0.5))
    np.testing.assert_array_equal(tensor.numpy(), np.array([(7, 0.5)] * 3, dtype))


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (np.int32, "seven", "cannot convert 'seven' to int32"),
        (np.int8, 300, "cannot convert 300 to int8"),
        (np.uint8, -1, "cannot convert -1 to uint8"),
        (np.float32, [1.0, 2.0], r"fill takes a scalar value, got a list"),
        (np.float32, np.zeros(2), r"fill takes a scalar value, got an array of shape \(2,\)"),
        (np.int8, 1000, r"cannot convert 1000 to int8: it is out of range; expected an"),
        (np.int8, np.int64(1000), r"to int8: it is out of range; expected an integer from -128"),
        (np.uint8, np.float64(300.0), r"to uint8: it is out of range; expected an integer"),
        (np.uint8, 2.5, r"it is not a whole number"),
        (np.int64, float("nan"), r"it is not a whole number"),
        (np.int16, "5", r"cannot convert '5' to int16: it is a str, not a number"),
        (np.float32, "5", r"cannot convert '5' to float32: it is a str"),
        (np.float16, 1e6, r"to float16: it overflows to infinity"),
        (np.float32, 10**400, r"to float32: it overflows to infinity"),
        (np.float64, 1j, r"it is a complex; expected a real number"),
        (np.bool_, 2, r"expected True, False, 0 or 1"),
        (np.complex64, "1", r"expected a complex number"),
        ("S3", b"abcd", r"it holds 4 bytes; expected at most 3"),
        ("S3", "abc", r"it is a str; expected bytes"),
        ("U2", "abc", r"it holds 3 characters; expected at most 2"),
        ("V4", b"abc", r"expected bytes of exactly 4"),
        (
            "M8[D]",
            np.datetime64("2020-01-01T12:00"),
            r"does not convert to datetime64\[D\] exactly",
        ),
        ("m8[s]", 2**70, r"cannot convert"),
        ([("a", "i1"), ("b", "f2")], (1, 1e6), r"field 'b': it overflows to infinity"),
        ([("a", "i1"), ("b", "f2")], (1,), r"expected a tuple of 2 values"),
    ],
    ids=[
        "text",
        "overflow",
        "negative-unsigned",
        "sequence",
        "array",
        "int8-1000",
        "int8-np.int64-1000",
        "uint8-np.float64-300",
        "uint8-fraction",
        "int64-nan",
        "int16-str",
        "float32-str",
        "float16-1e6",
        "float32-huge-int",
        "float64-complex",
        "bool-2",
        "complex-str",
        "S3-too-long",
        "S3-str",
        "U2-too-long",
        "V4-short",
        "datetime-lossy",
        "timedelta-huge",
        "struct-field",
        "struct-arity",
    ],
)
def test_fill_rejects_values_that_do_not_fit(
    env: Environment, dtype: Any, value: object, message: str
) -> None:
    tensor = env.zeros(2, dtype)
    with pytest.raises(ValueError, match=message):
        env.fill(tensor, value)
    assert tensor.host_array().tobytes() == bytes(tensor.nbytes)


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (np.int8, -128, -128),
        (np.uint64, 2**64 - 1, 2**64 - 1),
        (np.uint8, 3.0, 3),
        (np.int32, np.uint64(7), 7),
        (np.int16, True, 1),
        (np.bool_, 1, True),
        (np.bool_, np.bool_(False), False),
        (np.float16, 65504.0, 65504.0),
        (np.float16, float("inf"), float("inf")),
        (np.float32, 0.1, np.float32(0.1)),
        (np.float32, 2**100, np.float32(2**100)),
        (np.complex64, 1 + 2j, 1 + 2j),
        (np.longdouble, np.longdouble(1) / 3, np.longdouble(1) / 3),
        ("S3", b"ab", b"ab"),
        ("U3", "xyz", "xyz"),
        ("M8[s]", "2020-01-01T00:00:01", np.datetime64("2020-01-01T00:00:01")),
        ("m8[ms]", np.timedelta64(2, "s"), np.timedelta64(2000, "ms")),
        ("m8[ms]", 5, np.timedelta64(5, "ms")),
    ],
    ids=str,
)
def test_fill_accepts_values_that_fit(
    env: Environment, dtype: Any, value: object, expected: object
) -> None:
    tensor = env.zeros(2, dtype)
    env.fill(tensor, value)
    assert tensor.host_array().tolist() == np.array([expected] * 2, dtype).tolist()


def test_fill_nan_keeps_its_payload(env: Environment) -> None:
    value = np.array(0x7FC01234, np.uint32).view(np.float32)[()]
    tensor = env.zeros(3, np.float32)
    env.fill(tensor, value)
    assert tensor.host_array().view(np.uint32).tolist() == [0x7FC01234] * 3


@pytest.mark.parametrize("itemsize", [129, 200, 4096])
def test_fill_elements_larger_than_128_bytes(env: Environment, acca: Any, itemsize: int) -> None:
    element = bytes(range(256)) * (itemsize // 256) + bytes(range(itemsize % 256))
    for device in ("cpu", "acca:0"):
        tensor = env.zeros(5, f"V{itemsize}", device)
        env.fill(tensor[1:4], element)
        assert tensor.numpy().tobytes() == bytes(itemsize) + element * 3 + bytes(itemsize)
        wide = env.zeros(2, f"S{itemsize}", device)
        env.fill(wide, element[:-1] + b"!")
        assert wide.numpy().tobytes() == (element[:-1] + b"!") * 2


def test_zeros_of_every_kind_are_zero_bytes(env: Environment) -> None:
    for dtype in ["?", "i8", "f2", "c16", "S5", "U3", "V7", "M8[D]", [("a", "u1"), ("b", "f8")]]:
        assert env.zeros(3, dtype).host_array().tobytes() == bytes(3 * np.dtype(dtype).itemsize)


def test_empty_on_an_unknown_device(env: Environment) -> None:
    with pytest.raises(UnknownDeviceError, match="no device 'cpu:3'"):
        env.empty(3, np.int8, "cpu:3")


def test_empty_rejects_bad_shapes(env: Environment) -> None:
    with pytest.raises(ValueError, match="negative"):
        env.empty((2, -1), np.int8)
    with pytest.raises(TypeError, match="sequence of integers"):
        env.empty(("2",), np.int8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more elements than numpy can index"):
        env.empty((2**40, 2**40), np.int8)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((2**62,), np.uint8), ((2**61,), np.float64), ((2**40, 2**20), "V64")]
)
def test_allocations_that_do_not_fit_raise_out_of_device_memory(
    env: Environment, shape: tuple[int, ...], dtype: Any
) -> None:
    """One rule on every backend: an allocation that does not fit raises
    OutOfDeviceMemoryError, a MemoryError, naming the size."""
    with pytest.raises(OutOfDeviceMemoryError, match="bytes") as caught:
        env.empty(shape, dtype)
    assert isinstance(caught.value, MemoryError)
    with pytest.raises(OutOfDeviceMemoryError):
        HostStorage.allocate(2**62)


def test_a_backends_plain_memory_error_becomes_out_of_device_memory(
    env: Environment, make_accelerator: MakeAccelerator
) -> None:
    backend = make_accelerator("acca")

    def refuse(device: Device, nbytes: int) -> Any:
        raise MemoryError("driver says no")

    backend.allocate = refuse
    env.register_backend("acca", backend)
    with pytest.raises(
        OutOfDeviceMemoryError, match=r"acca:0 cannot hold 64 bytes.*driver says no"
    ):
        env.empty(16, np.float32, "acca")


def test_environment_copies_across_devices(env: Environment, acca: Any) -> None:
    sources = [env.from_numpy(np.arange(3) + i) for i in range(3)]
    targets = [
        env.empty(3, np.int64, "acca:0"),
        env.empty(3, np.int64),
        env.empty(3, np.int64, "acca:1"),
    ]
    env.copy_tensors(sources, targets)
    for i, target in enumerate(targets):
        np.testing.assert_array_equal(target.numpy(), np.arange(3) + i)
    back = env.empty(3, np.int64)
    env.copy_tensors_async([targets[2]], [back]).wait()
    np.testing.assert_array_equal(back.numpy(), np.arange(3) + 2)


@pytest.mark.parametrize(
    ("shape", "dtype", "aligned"),
    [((3, 5), np.float32, False), ((1 << 20,), np.float32, True), ((1023, 1031), np.int64, True)],
)
def test_numpy_returns_new_arrays_large_ones_on_a_huge_page_boundary(
    env: Environment, acca: Any, shape: tuple[int, ...], dtype: type, aligned: bool
) -> None:
    """``numpy()`` without ``out`` returns a new writable C-contiguous array of the
    tensor's shape and dtype holding its data; from 4 MiB it starts on a 2 MiB
    boundary (copy threads then fault whole huge pages, see ``_host_array``)."""
    data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    tensor = env.from_numpy(data, "acca:1")
    np.testing.assert_array_equal(acca.read(tensor), data)
    result = tensor.numpy()
    assert result.shape == shape
    assert result.dtype == dtype
    assert result.flags.c_contiguous
    assert result.flags.writeable
    np.testing.assert_array_equal(result, data)
    assert not np.shares_memory(result, tensor.numpy())
    if aligned:
        assert result.ctypes.data % (2 << 20) == 0
