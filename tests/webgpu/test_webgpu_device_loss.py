"""Device loss: after the wgpu device behind a context is destroyed, its tensors
raise DeviceLostError (a RuntimeError) and leave destinations alone, new tensors
on the device get a fresh context, and other devices are unaffected.

Each scenario runs in a child interpreter: work submitted to a lost device may
abort the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorferry as tf

PROLOGUE = """
import gc, json, sys
import numpy as np
import wgpu
import tensorferry as tf
import tensorferry_webgpu as tw

env = tf.Environment()
backend = tw.backend_of(env)
index = int(sys.argv[1])
device = env.device(f"webgpu:{index}")
others = [d for d in env.devices() if d.backend == "webgpu" and d.index != device.index]


def attempt(action):
    try:
        action()
    except Exception as exc:
        return {"type": type(exc).__name__, "lost": isinstance(exc, tf.DeviceLostError),
                "runtime_error": isinstance(exc, RuntimeError), "message": str(exc)}
    return None
"""

LOST_CHILD = (
    PROLOGUE
    + """
data = np.arange(4096, dtype=np.float32)
old = env.from_numpy(data, device)
old_small = env.from_numpy(np.arange(16, dtype=np.float32), device)
bystanders = [env.from_numpy(data * 2, d) for d in others]
context = backend.context(device)
created = backend.contexts_created
context.gpu.destroy()

out = np.full(4096, -1, np.float32)
errors = {"download": attempt(lambda: old.numpy(out))}
report = {"out untouched": bool((out == -1).all())}
zeros, ones = env.from_numpy(np.zeros(4096, np.float32)), env.from_numpy(np.ones(16, np.float32))
errors["upload"] = attempt(lambda: env.copy_tensor(zeros, old))
errors["small upload"] = attempt(lambda: env.copy_tensor(ones, old_small))
errors["device copy"] = attempt(lambda: env.copy_tensor(old[:100], old[200:300]))
errors["fill"] = attempt(lambda: env.fill(old, 1.0))
errors["synchronize"] = attempt(lambda: env.synchronize(device))
landing = env.from_numpy(out, copy=False)
errors["async"] = attempt(lambda: env.copy_tensors_async([old], [landing]).wait(60))
report["out untouched after all"] = bool((out == -1).all())
report["context lost"] = bool(context.lost)

fresh_data = np.linspace(0, 1, 1000, dtype=np.float32)
fresh = env.from_numpy(fresh_data, device)
report["fresh tensor round trip"] = fresh.numpy().tolist() == fresh_data.tolist()
report["synchronize after recovery"] = attempt(lambda: env.synchronize(device))
report["contexts created"] = [created, backend.contexts_created]
report["fresh context is new"] = backend.context(device) is not context
three = env.from_numpy(np.array([1, 2, 3], np.uint8))
report["fresh odd-offset copy"] = attempt(lambda: env.copy_tensor(three, fresh.view(np.uint8)[1:4]))
errors["old tensor after recovery"] = attempt(lambda: old.numpy())
report["bystanders"] = [t.numpy().tolist() == (data * 2).tolist() for t in bystanders]
del old, old_small
gc.collect()
env.close()
report["errors"] = errors
print(json.dumps(report))
"""
)


def test_destroyed_device(run_child: Callable[..., Any], webgpu_index: int) -> None:
    result = run_child(LOST_CHILD, str(webgpu_index))
    assert "panicked" not in result.stderr, result.describe()
    report = result.report()
    for action, error in report["errors"].items():
        assert error is not None, f"{action} with a tensor of the lost device did not raise"
        assert error["lost"], f"{action}: expected DeviceLostError, got {error}"
        assert error["runtime_error"]
    assert report["out untouched"], "a failed download wrote into its destination"
    assert report["out untouched after all"]
    assert report["context lost"]
    assert report["fresh tensor round trip"], "new tensors on the device must work"
    assert report["synchronize after recovery"] is None, report["synchronize after recovery"]
    before, after = report["contexts created"]
    assert after == before + 1, "the device gets exactly one fresh context"
    assert report["fresh context is new"]
    assert report["fresh odd-offset copy"] is None, report["fresh odd-offset copy"]
    assert all(report["bystanders"]), "other devices' tensors are unaffected"
    assert issubclass(tf.DeviceLostError, RuntimeError)


ADOPTED_LOST_CHILD = (
    PROLOGUE
    + """
adapter = next(
    a for a in tw.adapters() if a.summary == device.property("adapter")
)
gpu = adapter.request_device_sync()
adopted = tw.adopt_device(env, gpu)
old = env.from_numpy(np.arange(64, dtype=np.int32), adopted)
builtin = env.from_numpy(np.arange(64, dtype=np.int32), device)
gpu.destroy()
out = np.full(64, -1, np.int32)
errors = {
    "download": attempt(lambda: old.numpy(out)),
    "new tensor after the loss is known": attempt(lambda: env.empty((8,), np.int32, adopted)),
}
report = {
    "errors": errors,
    "out untouched": bool((out == -1).all()),
    "builtin device works": builtin.numpy().tolist() == list(range(64)),
}
env.close()
print(json.dumps(report))
"""
)


def test_destroyed_adopted_device(run_child: Callable[..., Any], webgpu_index: int) -> None:
    """tensorferry cannot recreate a caller's device: once it is lost, its old and
    new tensors raise DeviceLostError; the adapter's own device keeps working."""
    result = run_child(ADOPTED_LOST_CHILD, str(webgpu_index))
    assert "panicked" not in result.stderr, result.describe()
    report = result.report()
    for action, error in report["errors"].items():
        assert error is not None, f"{action}: no error on a lost adopted device"
        assert error["lost"], f"{action}: expected DeviceLostError, got {error}"
    assert report["out untouched"]
    assert report["builtin device works"]
