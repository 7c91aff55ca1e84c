"""Misuse must end in a Python exception that names the problem, never in an abort,
and must leave every destination as it was.

wgpu-native aborts the process on some misuse (work on a mapped buffer, for one),
so the checks that guard against that run in a child interpreter: if a guard is
missing, the child dies and the test fails with its exit code and output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw

MAPPABLE = "mappable-primary-buffers"

# A child's prologue: sys.argv[1] is the index of the WebGPU device under test.
PROLOGUE = """
import json, sys
import numpy as np
import wgpu
import tensorferry as tf
import tensorferry_webgpu as tw

U = wgpu.BufferUsage
env = tf.Environment()
index = int(sys.argv[1])
builtin = env.device(f"webgpu:{index}")
adapter = next(
    a for a in tw.adapters() if a.summary == builtin.property("adapter")
)


def attempt(action):
    try:
        action()
    except Exception as exc:
        return {"type": type(exc).__name__, "value_error": isinstance(exc, ValueError),
                "tensorferry": isinstance(exc, tf.TensorferryError), "message": str(exc)}
    return None
"""


def _adapter(env: tf.Environment, index: int) -> Any:
    summary = env.device(f"webgpu:{index}").property("adapter")
    return next(a for a in tw.adapters() if a.summary == summary)


# mapped wrapped buffers -------------------------------------------------------

MAPPED_CHILD = (
    PROLOGUE
    + """
how = sys.argv[2]
features = [] if how == "mapped_at_creation" else ["mappable-primary-buffers"]
gpu = adapter.request_device_sync(required_features=features)
device = tw.adopt_device(env, gpu)
usage = U.COPY_SRC | U.COPY_DST | U.STORAGE
pattern = np.arange(64, dtype=np.uint8)
if how == "mapped_at_creation":
    buffer = gpu.create_buffer(size=64, usage=usage, mapped_at_creation=True)
    buffer.write_mapped(pattern)
else:
    buffer = gpu.create_buffer(size=64, usage=usage | U.MAP_READ)
    gpu.queue.write_buffer(buffer, 0, pattern)
wrapped = tw.wrap_buffer(env, device, buffer, (64,), np.uint8)
pooled = env.from_numpy(np.full(64, 0xEE, np.uint8), device)
first_pair_target = env.from_numpy(np.full(64, 0xEE, np.uint8), device)
promise = None
if how == "map_sync":
    buffer.map_sync(wgpu.MapMode.READ)
elif how == "pending":
    promise = buffer.map_async(wgpu.MapMode.READ)
state = buffer.map_state
out = np.full(64, 0xEE, np.uint8)
host_out = np.full(64, 0xEE, np.uint8)
errors = {
    "download": attempt(lambda: wrapped.numpy(out)),
    "upload": attempt(lambda: env.copy_tensor(env.from_numpy(np.zeros(64, np.uint8)), wrapped)),
    "fill": attempt(lambda: env.fill(wrapped, 3)),
    "device copy from it": attempt(lambda: env.copy_tensor(wrapped[:8], pooled[:8])),
    "device copy into it": attempt(lambda: env.copy_tensor(pooled[:8], wrapped[8:16])),
    "late in a batch": attempt(lambda: env.copy_tensors(
        [env.from_numpy(np.ones(64, np.uint8)), wrapped],
        [first_pair_target, env.from_numpy(host_out, copy=False)],
    )),
    "async": attempt(
        lambda: env.copy_tensors_async([wrapped], [env.from_numpy(out, copy=False)]).wait(30)
    ),
}
untouched = {
    "out": bool((out == 0xEE).all()),
    "host_out": bool((host_out == 0xEE).all()),
    "pooled": bool((pooled.numpy() == 0xEE).all()),
    "first pair of the failed batch": bool((first_pair_target.numpy() == 0xEE).all()),
}
if promise is not None:
    promise.sync_wait()
buffer.unmap()
untouched["wrapped buffer"] = bytes(gpu.queue.read_buffer(buffer)) == pattern.tobytes()
after_unmap = wrapped.numpy().tolist() == pattern.tolist()
print(json.dumps({"state": state, "errors": errors, "untouched": untouched,
                  "after_unmap": after_unmap}))
"""
)


@pytest.mark.parametrize("how", ["map_sync", "pending", "mapped_at_creation"])
def test_mapped_wrapped_buffer_is_refused(
    run_child: Callable[..., Any], env: tf.Environment, webgpu_index: int, how: str
) -> None:
    """Copies to or from a wrapped buffer the caller has mapped (or is mapping)
    raise ValueError naming the state; nothing is written anywhere."""
    if how != "mapped_at_creation" and MAPPABLE not in _adapter(env, webgpu_index).features:
        pytest.skip(f"map_sync on a COPY_SRC|COPY_DST buffer needs the {MAPPABLE} feature")
    report = run_child(MAPPED_CHILD, str(webgpu_index), how).report()
    state = report["state"]
    assert state == ("pending" if how == "pending" else "mapped")
    for action, error in report["errors"].items():
        assert error is not None, f"{action}: no error on a {state} buffer"
        assert error["value_error"], f"{action}: expected ValueError, got {error}"
        assert state in error["message"], f"{action}: the message does not name {state!r}"
    assert report["untouched"] == dict.fromkeys(report["untouched"], True)
    assert report["after_unmap"], "after unmap the wrapped buffer must work again"


POOLED_MAPPED_CHILD = (
    PROLOGUE
    + """
data = (np.arange(65 << 10) % 251).astype(np.uint8)  # over slab_max: a buffer of its own
tensor = env.from_numpy(data, builtin)
buffer, offset = tw.buffer_of(tensor)
report = {"usage": int(buffer.usage)}
if not buffer.usage & (U.MAP_READ | U.MAP_WRITE):
    print(json.dumps(report))
    sys.exit(0)
# long batches, the mapped tensor at pair 500 and again at 501 (as source and as target)
others = [env.from_numpy(np.full(64, 0xEE, np.uint8), builtin) for _ in range(1000)]
sources = [env.from_numpy(np.full(64, 7, np.uint8), builtin) for _ in range(1000)]
host_rows = env.from_numpy(np.full((1000, 64), 0xEE, np.uint8), copy=False)
rows = [host_rows[i] for i in range(1000)]
def long_batch(srcs, dsts, *at):
    srcs, dsts = list(srcs), list(dsts)
    for i in at:  # its first 64 bytes, the size of the batch's other tensors
        if i % 2:
            srcs[i] = tensor[:64]
        else:
            dsts[i] = tensor[:64]
    return lambda: env.copy_tensors(srcs, dsts)
buffer.map_sync(wgpu.MapMode.READ)
report["state"] = buffer.map_state
out = np.full(data.size, 0xEE, np.uint8)
report["errors"] = {
    "download": attempt(lambda: tensor.numpy(out)),
    "upload": attempt(lambda: env.copy_tensor(env.from_numpy(np.zeros_like(data)), tensor)),
    "fill": attempt(lambda: env.fill(tensor, 1)),
    "device copy": attempt(lambda: env.copy_tensor(tensor[:8], tensor[8:16])),
    "long upload batch": attempt(long_batch(rows, others, 500)),
    "long download batch": attempt(long_batch(sources, rows, 501)),
    "long device copy batch into it": attempt(long_batch(sources, others, 500)),
    "long device copy batch from it": attempt(long_batch(sources, others, 501)),
}
report["out untouched"] = bool((out == 0xEE).all()) and bool((host_rows.numpy() == 0xEE).all())
buffer.unmap()
report["after unmap"] = tensor.numpy().tolist() == data.tolist()
report["others untouched"] = all(bool((t.numpy() == 0xEE).all()) for t in others)
print(json.dumps(report))
"""
)


def test_tensor_buffer_mapped_by_its_user_is_refused(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """Where tensor buffers are host-mappable (MAP_READ usage), a caller can map
    one through buffer_of(); copies with that tensor must then raise ValueError
    naming the state, as for wrapped buffers, instead of aborting, also from the
    middle of a 1000-pair batch, before any pair is copied."""
    report = run_child(POOLED_MAPPED_CHILD, str(webgpu_index)).report()
    if "state" not in report:
        pytest.skip(f"tensor buffers are not mappable here (usage {report['usage']:#x})")
    for action, error in report["errors"].items():
        assert error is not None, f"{action}: no error on a mapped tensor buffer"
        assert error["value_error"], f"{action}: expected ValueError, got {error}"
        assert report["state"] in error["message"], error["message"]
    assert report["out untouched"]
    assert report["others untouched"], "a batch that raised copied some of its pairs"
    assert report["after unmap"]


# wrapped buffers that the byte-exact paths cannot handle -------------------------

UNUSUAL_BUFFER_CHILD = (
    PROLOGUE
    + """
size, usage_name = int(sys.argv[2]), sys.argv[3]
usage = {"copy": U.COPY_SRC | U.COPY_DST, "storage": U.COPY_SRC | U.COPY_DST | U.STORAGE}
gpu = adapter.request_device_sync()
device = tw.adopt_device(env, gpu)
buffer = gpu.create_buffer(size=size, usage=usage[usage_name])
words = size // 4 * 4
model = np.zeros(size, np.uint8)
model[:words] = np.arange(words) + 100
gpu.queue.write_buffer(buffer, 0, model[:words])
refused = attempt(lambda: tw.wrap_buffer(env, device, buffer, (size,), np.uint8))
report = {"refused": refused}
if refused is None:
    wrapped = tw.wrap_buffer(env, device, buffer, (size,), np.uint8)
    tail = wrapped[size - 3 :]
    pooled = env.from_numpy(np.zeros(16, np.uint8), device)
    pooled_model = np.zeros(16, np.uint8)
    nines, three = np.full(16, 9, np.uint8), np.array([1, 2, 3], np.uint8)
    problems = {}

    def batch():
        env.copy_tensors([env.from_numpy(nines), env.from_numpy(three)], [pooled, tail])
        pooled_model[:] = nines
        model[size - 3 :] = three

    def fill():
        env.fill(wrapped[1:4], 7)
        model[1:4] = 7

    def device_copy():
        env.copy_tensor(pooled[:3], tail)
        model[size - 3 :] = pooled_model[:3]

    def compare():
        if wrapped.numpy().tolist() != model.tolist():
            return "the wrapped buffer's bytes differ from the model"
        if pooled.numpy().tolist() != pooled_model.tolist():
            return f"the pooled tensor holds {pooled.numpy().tolist()}"
        return None

    steps = [
        ("a batch: pooled upload, then an upload of the last 3 bytes", batch),
        ("download and compare", compare),
        ("fill of 3 bytes", fill),
        ("device copy of 3 bytes", device_copy),
        ("download and compare at the end", compare),
    ]
    for name, action in steps:
        outcome = []
        error = attempt(lambda: outcome.append(action()))
        problem = error or (outcome and outcome[0])
        if problem:
            problems[name] = problem
    report["steps"] = problems
print(json.dumps(report))
"""
)


@pytest.mark.parametrize(
    ("size", "usage"),
    [(64, "copy"), (10, "storage")],
    ids=["without-STORAGE-usage", "size-not-a-multiple-of-4"],
)
def test_wrapped_buffer_is_refused_or_fully_usable(
    run_child: Callable[..., Any], webgpu_index: int, size: int, usage: str
) -> None:
    """A buffer wrap_buffer accepts supports every copy, at any offset and size
    (the byte-exact edges need STORAGE usage and whole 4-byte words); otherwise
    wrap_buffer must refuse it with a ValueError saying why."""
    report = run_child(UNUSUAL_BUFFER_CHILD, str(webgpu_index), str(size), usage).report()
    refused = report["refused"]
    if refused is not None:
        assert refused["value_error"], refused
        return
    assert not report["steps"], (
        f"wrap_buffer accepted a {size}-byte {usage!r} buffer, then: {report['steps']}"
    )


# too large ----------------------------------------------------------------------


def test_allocation_beyond_the_max_buffer_size(env: tf.Environment, device: tf.Device) -> None:
    largest = int(device.property("max_buffer_size"))
    stats = tw.backend_of(env).pool_stats(device)
    for nbytes in (largest + 1, 4 * largest + 3):
        with pytest.raises(tf.OutOfDeviceMemoryError) as caught:
            env.empty((nbytes,), np.uint8, device)
        assert isinstance(caught.value, MemoryError)
        message = str(caught.value)
        assert str(nbytes) in message, message
        assert str(largest) in message, message
        assert str(device) in message, message
    with pytest.raises(MemoryError):
        env.zeros((largest // 8 + 1, 2), np.float32, device)
    assert tw.backend_of(env).pool_stats(device).misses == stats.misses


LARGEST_CHILD = (
    PROLOGUE
    + """
largest = int(builtin.property("max_buffer_size"))
results = {}
for nbytes in (largest // 4 * 4, largest * 15 // 16):
    def allocate(nbytes=nbytes):
        tensor = env.empty((nbytes,), np.uint8, builtin)
        del tensor
    results[str(nbytes)] = attempt(allocate)
print(json.dumps({"largest": largest, "results": results}))
"""
)


def test_largest_allocations_that_fit(
    run_child: Callable[..., Any], env: tf.Environment, webgpu_index: int
) -> None:
    """An allocation no larger than the device's max buffer size is not refused
    for its size, also in the default BUCKET cache mode, whose size classes can
    round past that limit."""
    device = env.device(f"webgpu:{webgpu_index}")
    if device.property("backend_type") in {"OpenGL", "OpenGLES"}:
        pytest.skip("the GL backend commits a 2 GiB buffer in host memory at once: too slow")
    report = run_child(LARGEST_CHILD, str(webgpu_index)).report()
    refused = {n: e["message"] for n, e in report["results"].items() if e is not None}
    assert not refused, f"allocations within max_buffer_size {report['largest']} failed: {refused}"


# after close ----------------------------------------------------------------------


def test_tensors_after_env_close(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> None:
    env = make_env()
    device = env.device(f"webgpu:{webgpu_index}")
    data = np.arange(32, dtype=np.uint8)
    tensor = env.from_numpy(data, device)
    other = env.from_numpy(data[::-1].copy(), device)
    host = env.from_numpy(np.full(32, 0xEE, np.uint8))
    out = np.full(32, 0xEE, np.uint8)
    env.close()
    attempts: dict[str, Callable[[], object]] = {
        "download": lambda: tensor.numpy(out),
        "upload": lambda: env.copy_tensor(host, tensor),
        "device copy": lambda: env.copy_tensor(other, tensor),
        "download into a host tensor": lambda: env.copy_tensor(tensor, host),
        "fill": lambda: env.fill(tensor, 1),
        "async": lambda: env.copy_tensors_async([tensor], [host]),
        "empty": lambda: env.empty((4,), np.float32, device),
        "from_numpy": lambda: env.from_numpy(data, device),
    }
    for action, run in attempts.items():
        with pytest.raises(tf.ClosedError, match="closed"):
            run()
        assert (out == 0xEE).all(), action
        assert (host.host_array() == 0xEE).all(), action
    env.close()  # a second close is fine
