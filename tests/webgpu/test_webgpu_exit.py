"""Interpreter exit with WebGPU objects still alive is clean: exit code 0 and an
empty stderr (no traceback, no panic, no wgpu complaint), whatever is left open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

PROLOGUE = """
import sys, threading
import numpy as np
import wgpu
import tensorferry as tf
import tensorferry_webgpu as tw
"""

SCENARIOS = {
    "live tensors, environment never closed": """
env = tf.Environment()
devices = [d for d in env.devices() if d.backend == "webgpu"]
tensors = [env.from_numpy(np.arange(100_000, dtype=np.float32), d) for d in devices]
views = [t[10:20].view(np.uint8)[3:] for t in tensors]
empties = [env.empty((0,), np.float32, d) for d in devices]
host = env.from_numpy(np.ones(10))
""",
    "live acquired contexts": """
env = tf.Environment()
backend = tw.backend_of(env)
contexts = [backend.acquire_context(d) for d in env.devices() if d.backend == "webgpu"]
extra = [backend.acquire_context(d) for d in env.devices() if d.backend == "webgpu"]
tensor = env.from_numpy(np.arange(10), "webgpu")
""",
    "pending copy_tensors_async": """
env = tf.Environment()
devices = [d for d in env.devices() if d.backend == "webgpu"]
n = 32 << 20
sources = [env.from_numpy(np.full(n, i, np.uint8), d) for i, d in enumerate(devices)]
outs = [np.empty(n, np.uint8) for _ in devices]
handles = [
    env.copy_tensors_async([s, env.from_numpy(o, copy=False)], [env.from_numpy(o, copy=False), s])
    for s, o in zip(sources, outs)
]
print("pending:", [h.done() for h in handles])
""",
    "closed twice, tensors kept": """
env = tf.Environment()
tensor = env.from_numpy(np.arange(1000.0), "webgpu")
context = tw.backend_of(env).context(tensor.device)
env.close()
env.close()
with tf.Environment() as other:
    kept = other.from_numpy(np.arange(5), "webgpu:0")
other.close()
""",
    "environment reachable only from tensors": """
def make():
    env = tf.Environment()
    return [env.from_numpy(np.arange(1000, dtype=np.int64), d)
            for d in env.devices() if d.backend == "webgpu"]
tensors = make()
""",
    "adopted device and wrapped buffer": """
env = tf.Environment()
gpu = tw.adapters()[0].request_device_sync()
device = tw.adopt_device(env, gpu)
usage = wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.STORAGE
buffer = gpu.create_buffer(size=1024, usage=usage)
wrapped = tw.wrap_buffer(env, device, buffer, (256,), np.float32)
env.copy_tensor(env.from_numpy(np.ones(256, np.float32)), wrapped)
pooled = env.from_numpy(np.arange(256, dtype=np.float32), device)
""",
    "custom options and cached buffers": """
env = tf.Environment(backends=[])
env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(
    cache_mode=tw.CacheMode.LAZY_RELEASE, staging_chunk=64 << 10, staging_chunks=2)))
for d in [d for d in env.devices() if d.backend == "webgpu"]:
    t = env.from_numpy(np.arange(1 << 20, dtype=np.uint8), d)
    del t
kept = env.from_numpy(np.arange(3 << 20, dtype=np.uint8), "webgpu:0")
kept[1:].numpy()
""",
    "backend loaded, no context yet": """
env = tf.Environment()
devices = env.devices()
""",
    "thread still copying at exit": """
env = tf.Environment()
tensor = env.from_numpy(np.arange(1 << 16, dtype=np.float32), "webgpu")
def work():
    for _ in range(50):
        tensor.numpy()
        env.copy_tensor(env.from_numpy(np.ones(1 << 16, np.float32)), tensor)
threading.Thread(target=work).start()
""",
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_exit_is_clean(run_child: Callable[..., Any], scenario: str) -> None:
    result = run_child(PROLOGUE + SCENARIOS[scenario] + '\nprint("done")\n')
    assert result.returncode == 0, result.describe()
    assert result.stderr == "", result.describe()
    assert result.stdout.strip().endswith("done"), result.describe()
