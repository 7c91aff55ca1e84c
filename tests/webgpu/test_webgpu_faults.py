"""Faults: a device destroyed under running copies, copies from threads that outlive
the main thread, a pooled buffer a caller tries to destroy, waits beside wgpu-py's
own poll thread, and the translation of wgpu errors.

Scenarios that could abort or hang the interpreter run in a child interpreter
(``run_child``, which fails the test after a timeout instead of hanging).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._errors import translate

PROLOGUE = """
import gc, json, sys, threading, time
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw
index = int(sys.argv[1])
"""

DESTROYED_UNDER_COPIES = (
    PROLOGUE
    + """
def outcome(action):
    try:
        action()
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)
    return "landed"

results = []
for attempt in range(8):
    env = tf.Environment()
    backend = tw.backend_of(env)
    device = env.device(f"webgpu:{index}")
    n = 32 << 20
    data = np.full(n, attempt + 1, np.uint8)
    tensor = env.from_numpy(data, device)
    out = np.zeros(n, np.uint8)
    context = backend.context(device)
    if attempt < 6:
        if attempt % 2:
            handle = env.copy_tensors_async([tensor], [env.from_numpy(out, copy=False)])
        else:
            handle = env.copy_tensors_async([env.from_numpy(data, copy=False)], [tensor])
        context.gpu.destroy()
        result = outcome(lambda: handle.wait(60))
    else:  # another thread copies while this one destroys the device
        errors = []
        def copy_loop():
            for _ in range(20):
                try:
                    env.copy_tensor(tensor, env.from_numpy(out, copy=False))
                    env.copy_tensor(env.from_numpy(data, copy=False), tensor)
                except Exception as exc:
                    errors.append(type(exc).__name__ + ": " + str(exc))
                    return
        worker = threading.Thread(target=copy_loop)
        worker.start()
        time.sleep(0.05 * (attempt - 5))
        context.gpu.destroy()
        worker.join(60)
        result = "hung" if worker.is_alive() else (errors[0] if errors else "landed")
    later = outcome(lambda: tensor.numpy())
    fresh = env.from_numpy(np.arange(1000, dtype=np.float32), device)
    staging = [context.upload_staging.stats(), context.download_staging.stats()]
    results.append({
        "result": result,
        "later use of the old tensor": later,
        "context lost": context.lost,
        "fresh tensor works": fresh.numpy().tolist() == list(range(1000)),
        "staging buffers still handed out": [s.buffers - s.idle for s in staging],
    })
    del tensor, fresh
    env.close()
print(json.dumps(results))
"""
)


def test_destroyed_device_under_running_copies(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """Destroying the wgpu device right after a 32 MiB async copy (or while another
    thread copies) gives DeviceLostError or a landed copy: never a hang, a raw wgpu
    error or a PollThread error; the context is marked lost, staging is not left
    handed out, new tensors work, and close and exit complete."""
    child = run_child(DESTROYED_UNDER_COPIES, str(webgpu_index))
    assert "panicked" not in child.stderr, child.describe()
    assert "PollThread" not in child.stderr, child.describe()
    for attempt, result in enumerate(child.report()):
        assert result["result"] == "landed" or result["result"].startswith("DeviceLostError"), (
            attempt,
            result,
        )
        assert result["later use of the old tensor"].startswith("DeviceLostError"), result
        assert result["context lost"], result
        assert result["fresh tensor works"], result
        assert result["staging buffers still handed out"] == [0, 0], result


OUTLIVING_THREAD = (
    PROLOGUE
    + """
results = {}
# The devices are opened while the main thread runs: wgpu starts a thread per device,
# which Python 3.12 refuses once shutdown has begun (test_first_use_at_shutdown).
envs = {}
for name, options in (("default", None), ("staged", tw.ContextOptions(map_storage=False))):
    env = tf.Environment(backends=[]) if options else tf.Environment()
    if options:
        env.register_backend("webgpu", tw.WebGPUBackend(options))
    device = env.device(f"webgpu:{index}")
    env.empty(4, np.uint8, device)
    envs[name] = (env, device)

def late_copies():
    threading.main_thread().join()  # run after the main thread has ended
    for name, (env, device) in envs.items():
        data = np.random.default_rng(1).integers(0, 255, 24 << 20, dtype=np.uint8)
        tensor = env.from_numpy(data, device)
        back = tensor.numpy()
        out = np.zeros_like(data)
        handle = env.copy_tensors_async([tensor], [env.from_numpy(out, copy=False)])
        handle.wait(60)
        results[name] = {
            "sync round trip": bool((back == data).all()),
            "async landed": bool((out == data).all()),
            "done": handle.done(),
        }
        env.close()
    print(json.dumps(results), flush=True)

threading.Thread(target=late_copies).start()
"""
)


FIRST_USE_AT_SHUTDOWN = (
    PROLOGUE
    + """
def late_first_use():
    threading.main_thread().join()
    env = tf.Environment()
    try:
        tensor = env.from_numpy(np.arange(5, dtype=np.int32), f"webgpu:{index}")
        outcome = {"copied": tensor.numpy().tolist() == list(range(5))}
    except tf.ClosedError as exc:
        outcome = {"closed": "shut" in str(exc) and "before the main thread ends" in str(exc)}
    env.close()
    print(json.dumps(outcome), flush=True)

threading.Thread(target=late_first_use).start()
"""
)


def test_first_use_at_shutdown(run_child: Callable[..., Any], webgpu_index: int) -> None:
    """A device first used after the main thread ended either works or, where Python
    refuses the thread wgpu starts for a device (3.12), raises ClosedError saying so."""
    outcome = run_child(FIRST_USE_AT_SHUTDOWN, str(webgpu_index)).report()
    assert outcome in ({"copied": True}, {"closed": True}), outcome


def test_copies_from_a_thread_that_outlives_the_main_thread(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """Copies that need several host-copy threads, and async copies, complete from a
    non-daemon thread that runs after the main thread has ended."""
    child = run_child(OUTLIVING_THREAD, str(webgpu_index))
    assert "cannot schedule new futures" not in child.stderr, child.describe()
    for name, result in child.report().items():
        assert result == {"sync round trip": True, "async landed": True, "done": True}, name


POOLED_DESTROY = (
    PROLOGUE
    + """
env = tf.Environment()
tensor = env.from_numpy(np.arange(64, dtype=np.int32), f"webgpu:{index}")
buffer, _ = tw.buffer_of(tensor)
try:
    buffer.destroy()
    refused = None
except RuntimeError as exc:
    refused = str(exc)
print(json.dumps({"refused": refused, "still works": tensor.numpy().tolist() == list(range(64))}))
"""
)


def test_pooled_buffer_from_buffer_of_refuses_destroy(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """Destroying a pooled tensor's buffer would abort the process at the next copy:
    destroy() raises RuntimeError saying why, and the tensor keeps working."""
    report = run_child(POOLED_DESTROY, str(webgpu_index)).report()
    assert report["refused"] is not None, report
    assert "buffer_of" in report["refused"], report
    assert report["still works"]


def test_waits_beside_wgpu_pys_own_poll_thread(env: tf.Environment, device: tf.Device) -> None:
    """tensorferry's blocking-poll waits and wgpu-py's poll thread serve one device at
    once: map callbacks may run on either thread, and every copy still lands."""
    gpu = tw.backend_of(env).context(device).gpu
    usage = wgpu.BufferUsage
    readback = gpu.create_buffer(size=4096, usage=usage.MAP_READ | usage.COPY_DST)
    source = gpu.create_buffer_with_data(data=np.arange(1024, dtype=np.int32), usage=usage.COPY_SRC)
    stop = threading.Event()
    wgpu_maps: list[bool] = []

    def map_with_wgpu_py() -> None:
        while not stop.is_set():
            encoder = gpu.create_command_encoder()
            encoder.copy_buffer_to_buffer(source, 0, readback, 0, 4096)
            gpu.queue.submit([encoder.finish()])
            readback.map_sync(wgpu.MapMode.READ)
            wgpu_maps.append(
                bytes(readback.read_mapped())[:8] == bytes(np.arange(2, dtype=np.int32))
            )
            readback.unmap()

    thread = threading.Thread(target=map_with_wgpu_py)
    thread.start()
    try:
        for round_ in range(100):
            data = np.full(1000 + round_, round_, np.int16)
            assert env.from_numpy(data, device).numpy().tolist() == data.tolist()
    finally:
        stop.set()
        thread.join()
    assert wgpu_maps, "wgpu-py's own maps ran beside tensorferry's"
    assert all(wgpu_maps)


def test_wgpu_errors_translate_to_documented_errors(env: tf.Environment, device: tf.Device) -> None:
    """One translation: a lost device, a failed allocation (whatever wgpu's wording)
    and any other wgpu failure each become a documented tensorferry error; errors
    that are not wgpu's pass through unchanged."""
    env_gpu = tw.backend_of(env).context(device).gpu
    lost = translate(wgpu.GPUValidationError("Parent device is lost"), device, env_gpu)
    assert isinstance(lost, tf.DeviceLostError)
    allocation = translate(
        wgpu.GPUValidationError("Buffer size 5 is invalid"), device, env_gpu, allocating=True
    )
    assert isinstance(allocation, tf.OutOfDeviceMemoryError)
    assert isinstance(allocation, MemoryError)
    other = translate(wgpu.GPUValidationError("Copy would overrun"), device, env_gpu)
    assert isinstance(other, tw.WebGPUError)
    assert isinstance(other, RuntimeError)
    assert "Copy would overrun" in str(other)
    for passthrough in (ValueError("bad input"), MemoryError(), tf.ClosedError("closed")):
        assert translate(passthrough, device, env_gpu) is passthrough


@pytest.mark.parametrize("dtype", ["V200", "S129", "V1000", "U40"])
def test_fill_with_elements_longer_than_128_bytes(
    env: tf.Environment, device: tf.Device, dtype: str
) -> None:
    """Every fixed-size element fills on the device, also one longer than the patch
    kernel's inline slot, on a view at an odd offset, leaving its neighbours alone."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(dt.itemsize)
    raw = rng.integers(0, 255, 9 * dt.itemsize + 3, dtype=np.uint8)
    value = np.frombuffer(rng.integers(1, 255, dt.itemsize, dtype=np.uint8).tobytes(), dt)[0]
    if dt.kind == "U":
        value = np.str_("x" * 40)
    tensor = env.from_numpy(raw, device)
    view = tensor[3:].view(dt)
    env.fill(view[2:7], value)
    expected = raw.copy()
    expected[3:].view(dt)[2:7] = value
    np.testing.assert_array_equal(tensor.numpy(), expected)
