"""Lifetime: allocation limits, closing (twice, under async batches, under copies),
storage released when its tensors die, and interpreter exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import (
    assert_bytes,
    assert_tensor_bytes,
    random_array,
    read,
    require_memory_usage,
    wait_until_done,
)
from tensorferry.conformance.plugin import DevicePair

HUGE = 1 << 62
"""Bytes no device holds."""


def _limit(device: tf.Device) -> int | None:
    value = device.property("max_buffer_size", "")
    if isinstance(value, int):
        return value
    return int(value) if value.isdigit() else None


def test_allocate_contract(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_device: tf.Device
) -> None:
    """``allocate`` refuses, each with its documented error and before allocating:
    a size beyond the device (a ``MemoryError``, also through ``env.empty`` as
    OutOfDeviceMemoryError), a negative size (ValueError), a device of another
    backend (UnknownDeviceError), and any size after close (ClosedError)."""
    env, device = tensorferry_new_env(), tensorferry_device
    backend = env.backend(device.backend)
    sizes = [HUGE] + ([limit + 1] if (limit := _limit(device)) is not None else [])
    for nbytes in sizes:
        with pytest.raises(MemoryError) as caught:
            backend.allocate(device, nbytes)
        assert "byte" in str(caught.value) or str(nbytes) in str(caught.value), caught.value
        with pytest.raises(tf.OutOfDeviceMemoryError):
            env.empty((nbytes,), np.uint8, device)
    with pytest.raises(ValueError, match=r"-1|negative|>= 0"):
        backend.allocate(device, -1)
    stranger = tf.Device(f"not-{device.backend}", 0, tf.DeviceType.GPU, vendor_id=0xFFFF)
    with pytest.raises(LookupError):
        backend.allocate(stranger, 8)
    data = random_array((16,), np.uint8, seed=600)
    assert_tensor_bytes(env.from_numpy(data, device), data, f"a tensor on {device} afterwards")
    if device.is_host:
        return  # host memory is never closed
    env.close()
    with pytest.raises(tf.ClosedError):
        backend.allocate(device, 8)


def test_backend_close_is_idempotent(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """A backend's close() may run again (the environment's close, then the
    caller's): later calls return quietly."""
    env = tensorferry_new_env()
    backend = env.backend(tensorferry_backend)
    env.from_numpy(np.arange(4), backend.devices()[0])
    env.close()
    backend.close()
    backend.close()
    for transfer in backend.data_transfers():
        transfer.close()


def test_storage_is_released_when_its_tensors_die(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """Once the last tensor over a storage is garbage collected, the storage object
    is too: a backend must not keep it alive (it would leak device memory)."""
    env, device = tensorferry_env, tensorferry_device
    tensor = env.from_numpy(random_array((1000,), np.uint8, seed=601), device)
    view = tensor[10:20]
    storage = weakref.ref(tensor.storage)
    del tensor
    gc.collect()
    assert storage() is not None, "storage died while a view of it was alive"
    assert_bytes(read(view), random_array((1000,), np.uint8, seed=601)[10:20], "the view")
    del view
    gc.collect()
    assert storage() is None, (
        f"storage on {device} is still alive after every tensor over it died; "
        f"referrers: {[type(r).__name__ for r in gc.get_referrers(storage())]}"
    )


def test_memory_in_use_drops_when_tensors_die(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """With the MemoryUsage capability: allocations count while their tensors live
    and stop counting once they are garbage collected."""
    env, device = tensorferry_env, tensorferry_device
    usage = require_memory_usage(env, device)
    gc.collect()
    before = usage.bytes_in_use(device)
    tensors = [env.empty((1 << 18,), np.uint8, device) for _ in range(4)]
    during = usage.bytes_in_use(device)
    assert during >= before + 4 * (1 << 18), (
        f"bytes_in_use went from {before} to {during} for 4 live tensors of 256 KiB"
    )
    del tensors
    gc.collect()
    after = usage.bytes_in_use(device)
    assert after <= before, f"bytes_in_use is {after} after the tensors died, {before} before"


def test_async_done_means_landed(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """``done()`` is never true before the data can be read: poll it (without
    calling ``wait``) and read at once; through the transfer's own handle too."""
    env, pair = tensorferry_env, tensorferry_pair
    data = random_array((1 << 20,), np.uint8, seed=602)
    src = env.from_numpy(data, pair.src)
    dst = env.zeros(data.shape, data.dtype, pair.dst)
    wait_until_done(env.copy_tensors_async([src], [dst]))
    assert_tensor_bytes(dst, data, f"destination on {pair.dst} once done() was true")
    transfer = env.data_transfer_manager.get_data_transfer(pair.src, pair.dst)
    if transfer is None or not isinstance(transfer, tf.AsyncDataTransfer):
        return
    again = env.zeros(data.shape, data.dtype, pair.dst)
    wait_until_done(transfer.copy_tensors_async([(src, again)]))
    assert_tensor_bytes(again, data, f"destination on {pair.dst} once the backend said done")


def _pairs_of(env: tf.Environment, backend: str) -> list[DevicePair]:
    devices = list(dict.fromkeys([tf.HOST, *env.backend(backend).devices()]))
    return [DevicePair(s, d) for s in devices for d in devices if backend in (s.backend, d.backend)]


@pytest.mark.tensorferry_isolated
def test_transfer_close_waits_for_async_batches(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """A transfer's close() returns only once the async batches it started have
    landed, on every pair it copies: their handles are done, waiting raises nothing."""
    env = tensorferry_new_env()
    manager = env.data_transfer_manager
    started: list[tuple[tf.TransferHandle, tf.Tensor, np.ndarray]] = []
    transfers: list[tf.IDataTransfer] = []
    for number, pair in enumerate(_pairs_of(env, tensorferry_backend)):
        transfer = manager.get_data_transfer(pair.src, pair.dst)
        if not isinstance(transfer, tf.AsyncDataTransfer):
            continue
        data = random_array((1 << 20,), np.uint8, seed=603 + number)
        src = env.from_numpy(data, pair.src)
        dst = env.zeros(data.shape, data.dtype, pair.dst)
        started.append((transfer.copy_tensors_async([(src, dst)]), dst, data))
        transfers += [transfer] if all(t is not transfer for t in transfers) else []
    if not started:
        pytest.skip(
            f"backend {tensorferry_backend!r} does not implement the optional capability "
            "tensorferry.AsyncDataTransfer"
        )
    for transfer in transfers:
        manager.unregister_data_transfer(transfer)
        transfer.close()
    _assert_landed(started)


def _assert_landed(started: list[tuple[Any, tf.Tensor, Any]]) -> None:
    """Every started async batch is done, and host destinations hold their data."""
    assert all(h.done() for h, _, _ in started), "close() returned while async batches still ran"
    for number, (handle, dst, data) in enumerate(started):
        handle.wait(timeout=0)
        if dst.device.is_host:
            assert_bytes(dst.host_array(), data, f"host destination {number}")


@pytest.mark.tensorferry_isolated
def test_environment_close_waits_for_async_batches(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """``Environment.close()`` returns only once running async batches have landed,
    on every pair of the backend, routed ones included."""
    env = tensorferry_new_env()
    started = []
    for number, pair in enumerate(_pairs_of(env, tensorferry_backend)):
        data = random_array((1 << 20,), np.uint8, seed=607 + number)
        src = env.from_numpy(data, pair.src)
        dst = env.zeros(data.shape, data.dtype, pair.dst)
        started.append((env.copy_tensors_async([src], [dst]), dst, data))
    env.close()
    _assert_landed(started)


@pytest.mark.tensorferry_isolated
def test_closing_while_threads_copy(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """One thread closes the environment while four others copy every way: the
    copies either complete correctly or raise ClosedError; nothing else, no hang."""
    env = tensorferry_new_env()
    devices = [tf.HOST, *env.backend(tensorferry_backend).devices()]
    started = threading.Barrier(5)
    unexpected: list[BaseException] = []
    counts = [0] * 4

    def copy(k: int) -> None:
        rng = np.random.default_rng(k)
        data = random_array((4096,), np.uint8, seed=610 + k)
        try:
            src = env.from_numpy(data, devices[k % len(devices)])
            started.wait(timeout=60)
            while True:
                dst = env.empty(data.shape, data.dtype, devices[rng.integers(len(devices))])
                if counts[k] % 3 == 2:
                    env.copy_tensors_async([src], [dst]).wait(timeout=60)
                else:
                    env.copy_tensor(src, dst)
                assert_bytes(read(dst), data, f"thread {k}")
                counts[k] += 1
        except tf.ClosedError:
            return
        except BaseException as exc:
            unexpected.append(exc)

    threads = [threading.Thread(target=copy, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)
    while sum(counts) < 40 and all(t.is_alive() for t in threads):
        threading.Event().wait(0.001)
    env.close()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a copying thread hung after close()"
    assert unexpected == [], f"errors other than ClosedError: {unexpected!r}"
    with tf.Environment(backends=[tensorferry_backend]) as fresh:
        data = random_array((8,), np.uint8, seed=615)
        assert_tensor_bytes(fresh.from_numpy(data, devices[-1]), data, "a new environment")


EXIT_SCENARIOS = {
    "live-tensors": """
        tensors = []
        for device in devices:
            tensor = env.from_numpy(np.arange(10, dtype=np.float32), device)
            half = env.empty((5,), np.float32, device)
            env.copy_tensor(tensor[5:], half)
            assert (half.numpy() == np.arange(5, 10)).all()
            tensors += [tensor, half]
        """,
    "pending-async": """
        handles = []
        for device in devices:
            src = env.from_numpy(np.ones(1 << 20, np.uint8), device)
            handles.append(env.copy_tensors_async([src], [env.empty(1 << 20, np.uint8, device)]))
            handles.append(env.copy_tensors_async([src], [env.empty(1 << 20, np.uint8)]))
        """,
    "thread-mid-copy": """
        import threading
        ready = threading.Event()
        def copy_forever():
            src = env.from_numpy(np.ones(1 << 18, np.uint8), devices[-1])
            dst = env.empty(1 << 18, np.uint8, devices[0])
            ready.set()
            while True:
                try:
                    env.copy_tensor(src, dst)
                    env.copy_tensor(dst, src)
                except tf.ClosedError:
                    return
        threading.Thread(target=copy_forever, daemon=True).start()
        ready.wait(60)
        """,
}


@pytest.mark.parametrize("scenario", EXIT_SCENARIOS.keys())
def test_interpreter_exit_is_clean(
    tensorferry_backend: str, tmp_path: Path, scenario: str, pytestconfig: pytest.Config
) -> None:
    """A process that exits with an open environment and, in turn, live tensors on
    every device, pending async copies, or a thread in the middle of copying exits
    with status 0 and nothing on stderr (``--tensorferry-exit-runs`` repeats it)."""
    name = tensorferry_backend
    script = "\n".join(
        [
            "import numpy as np",
            "import tensorferry as tf",
            f"env = tf.Environment(backends=[{name!r}])",
            f"devices = list(env.backend({name!r}).devices())",
            textwrap.dedent(EXIT_SCENARIOS[scenario]),
            "print('done')",
        ]
    )
    runs = pytestconfig.getoption("tensorferry_exit_runs")
    failures = []
    for run in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 or result.stderr or result.stdout.strip() != "done":
            failures.append(f"run {run}: status {result.returncode}, stderr:\n{result.stderr}")
    assert failures == [], f"{len(failures)} of {runs} runs were not clean:\n" + "\n".join(
        failures[:3]
    )
