"""The backend contract itself: devices, storage, what transfers claim, closing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import assert_bytes, random_array
from tensorferry.conformance.plugin import DevicePair


def test_backend_names_its_devices(
    tensorferry_env: tf.Environment, tensorferry_backend: str
) -> None:
    """A backend's devices carry its name, are distinct, and parse back from their
    string form (``"name:index"``, ``"name:index:host"`` for host-accessible
    memory); the bare name means the first device. Devices of the default memory
    come first, numbered 0, 1, ...; each host-accessible device has the index of
    a default device (the same hardware) and appears at most once per index."""
    env, name = tensorferry_env, tensorferry_backend
    backend = env.backend(name)
    assert isinstance(backend, tf.Backend)
    assert backend.name == name
    devices = list(backend.devices())
    assert devices, f"backend {name!r} lists no devices"
    assert len(set(devices)) == len(devices), f"devices are not distinct: {devices}"
    default = [d for d in devices if d.memory is tf.MemoryKind.DEFAULT]
    host = [d for d in devices if d.memory is tf.MemoryKind.HOST_ACCESSIBLE]
    assert devices == default + host, (
        f"devices of the default memory must come first, got {[str(d) for d in devices]}"
    )
    assert [d.index for d in default] == list(range(len(default))), (
        f"device i of the list must be {name}:i, got {[str(d) for d in devices]}"
    )
    assert len({d.index for d in host}) == len(host), f"host-accessible indices repeat: {host}"
    assert {d.index for d in host} <= {d.index for d in default}, (
        f"a host-accessible device's index must be a default device's, got {host}"
    )
    for device in devices:
        assert isinstance(device, tf.Device)
        assert device.backend == name
        if device.memory is tf.MemoryKind.HOST_ACCESSIBLE:
            assert str(device) == f"{name}:{device.index}:host"
            assert env.device(f"{name}:{device.index}", memory=device.memory) == device
        elif not device.is_host:
            assert str(device) == f"{name}:{device.index}"
        assert env.device(str(device)) == device
        assert env.device(device) == device
    assert env.device(name) == devices[0]
    assert all(d in env.devices() for d in devices)


def test_transfers_claim_only_their_own_devices(
    tensorferry_env: tf.Environment, tensorferry_backend: str
) -> None:
    """Each transfer claims only pairs whose non-host sides are its backend's
    devices (never a device of another backend that looks the same), and every
    device is reachable from and to the host."""
    env, name = tensorferry_env, tensorferry_backend
    backend = env.backend(name)
    own = list(backend.devices())
    impostors = [
        tf.Device(f"impostor-{name}", d.index, d.type, d.memory, d.vendor_id, d.device_id)
        for d in own
    ]
    everything = list(dict.fromkeys([tf.HOST, *env.devices(), *impostors]))
    transfers = list(backend.data_transfers())
    assert transfers, f"backend {name!r} provides no data transfer"
    for transfer in transfers:
        assert isinstance(transfer, tf.IDataTransfer)
        for src in everything:
            for dst in everything:
                if transfer.can_copy(src, dst):
                    assert all(d.is_host or d in own for d in (src, dst)), (
                        f"{type(transfer).__name__} of backend {name!r} claims {src} -> {dst}"
                    )
    for device in own:
        for src, dst in ((tf.HOST, device), (device, tf.HOST)):
            assert any(t.can_copy(src, dst) for t in transfers), (
                f"no transfer of backend {name!r} copies {src} -> {dst}"
            )


@pytest.mark.parametrize("nbytes", [0, 13])
def test_allocate(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, nbytes: int
) -> None:
    """``allocate`` gives live, writable storage of exactly the size asked for."""
    backend = tensorferry_env.backend(tensorferry_device.backend)
    storage = backend.allocate(tensorferry_device, nbytes)
    assert isinstance(storage, tf.Storage)
    assert storage.device == tensorferry_device
    assert storage.nbytes == nbytes
    assert storage.writable
    assert not storage.closed


def test_transfer_refuses_copies_after_close(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_direct_pair: DevicePair
) -> None:
    """A closed transfer raises ClosedError (a RuntimeError) instead of copying, even
    between live tensors; closing is idempotent, and closing the environment (which
    closes the transfer again) keeps it refusing."""
    pair = tensorferry_direct_pair
    env = tensorferry_new_env()
    src = env.from_numpy(random_array((8,), np.uint8, seed=300), pair.src)
    dst_data = random_array((8,), np.uint8, seed=301)
    dst = env.from_numpy(dst_data, pair.dst)
    transfer = env.data_transfer_manager.get_data_transfer(pair.src, pair.dst)
    assert transfer is not None
    transfer.close()
    with pytest.raises(tf.ClosedError) as caught:
        transfer.copy_tensors([(src, dst)])
    assert isinstance(caught.value, RuntimeError)
    if pair.dst.is_host:
        assert_bytes(dst.host_array(), dst_data, "host destination after the refused copy")
    transfer.close()
    env.close()
    with pytest.raises(tf.ClosedError):
        transfer.copy_tensors([(src, dst)])
    if pair.dst.is_host:
        assert_bytes(dst.host_array(), dst_data, "host destination after the refused copy")


def test_unregister_backend_releases_its_tensors(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """unregister_backend closes the backend: its tensors raise ClosedError, and the
    host keeps working."""
    name = tensorferry_backend
    if name == "cpu":
        pytest.skip("the host backend 'cpu' owns host memory, which is never released")
    env = tensorferry_new_env()
    tensor = env.from_numpy(np.arange(6, dtype=np.int32), name)
    env.unregister_backend(name)
    assert tensor.storage.closed, "storage still reports closed=False after its backend closed"
    with pytest.raises(tf.ClosedError):
        tensor.numpy()
    assert name not in [d.backend for d in env.devices()]
    assert_bytes(env.from_numpy(np.arange(3)).numpy(), np.arange(3), "host copy afterwards")


def test_interpreter_exit_with_live_tensors_is_clean(
    tensorferry_backend: str, tmp_path: Path
) -> None:
    """A process that exits with an open environment and live tensors on every
    device of the backend exits cleanly (no crash, no 'Exception ignored')."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        import tensorferry as tf

        env = tf.Environment(backends=[{tensorferry_backend!r}])
        tensors = []
        for device in env.backend({tensorferry_backend!r}).devices():
            tensor = env.from_numpy(np.arange(10, dtype=np.float32), device)
            half = env.empty((5,), np.float32, device)
            env.copy_tensor(tensor[5:], half)
            assert (half.numpy() == np.arange(5, 10)).all()
            tensors += [tensor, half]
        print("done", len(tensors))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"exit status {result.returncode}; stderr:\n{result.stderr}"
    assert result.stdout.startswith("done"), result.stdout
    for marker in ("Traceback", "Exception ignored", "panicked"):
        assert marker not in result.stderr, f"stderr at exit:\n{result.stderr}"


def test_synchronize(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_device: tf.Device
) -> None:
    """``Environment.synchronize`` returns after copies into the device (by spec and
    by device), the copies hold their data, host memory has nothing to wait for,
    and a closed environment raises ClosedError. A backend with the optional
    :class:`tensorferry.Synchronizer` capability refuses a device it does not own
    with ``LookupError``."""
    env = tensorferry_new_env()
    device = env.device(str(tensorferry_device))
    data = random_array((1 << 20,), np.uint8, seed=310)
    tensor = env.from_numpy(data, device)
    twin = env.empty(data.shape, data.dtype, device)
    env.copy_tensor(tensor, twin)
    env.synchronize(device)
    env.synchronize(str(device))
    env.synchronize(tf.HOST)
    assert_bytes(twin.numpy(), data, f"a device copy on {device} after synchronize")
    backend = env.backend(device.backend)
    if isinstance(backend, tf.Synchronizer):
        with pytest.raises(LookupError):
            backend.synchronize(tf.HOST)
    env.close()
    with pytest.raises(tf.ClosedError):
        env.synchronize(device)
