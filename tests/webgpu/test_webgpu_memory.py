"""Staging memory stays bounded: a large upload or download raises the process's
peak memory by no more than the staging chunks, whatever the tensor's size.

Each case runs in a child interpreter, whose peak resident memory (ru_maxrss)
is its own. The source array and the device tensor are allocated and touched
before the baseline, so what the copy adds is staging alone. (On lavapipe and
llvmpipe the device's memory is host memory of the same process: touching it
first keeps it out of the difference.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

SIZE = 256 << 20
CHUNK = 8 << 20
CHUNKS = 3

CHILD = """
import json, resource, sys
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw

index, direction, size, chunk, chunks = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
env = tf.Environment(backends=[])
env.register_backend("webgpu", tw.WebGPUBackend(
    tw.ContextOptions(staging_chunk=chunk, staging_chunks=chunks, small_upload=0)))
device = env.device(f"webgpu:{index}")
host = np.full(size, 7, np.uint8)
tensor = env.empty((size,), np.uint8, device)
env.fill(tensor, 1)              # the device memory is committed before the baseline
tensor[:4].numpy()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if direction == "upload":
    env.copy_tensor(env.from_numpy(host, copy=False), tensor)
else:
    host[:] = 0
    tensor.numpy(out=host)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# Checked after the measurement: comparing makes arrays as large as the tensor.
expected = 7 if direction == "upload" else 1  # what the copy wrote
step = 1 << 20
def part(i):
    return tensor[i : i + step].numpy() if direction == "upload" else host[i : i + step]
ok = all(bool((part(i) == expected).all()) for i in range(0, size, step))
env.close()
print(json.dumps({"ok": ok, "grew_kib": after - before}))
"""


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_staging_memory_is_bounded(
    run_child: Callable[..., Any], webgpu_index: int, direction: str
) -> None:
    """A 256 MiB copy through 3 staging chunks of 8 MiB raises peak memory by far
    less than the tensor: at most the chunks plus 16 MiB of slack."""
    report = run_child(CHILD, str(webgpu_index), direction, str(SIZE), str(CHUNK), str(CHUNKS))
    result = report.report()
    assert result["ok"], "the copy delivered wrong data"
    bound_kib = (CHUNKS * CHUNK + (16 << 20)) >> 10
    assert result["grew_kib"] <= bound_kib, (
        f"peak memory grew by {result['grew_kib']} KiB during a {SIZE >> 20} MiB {direction}; "
        f"expected at most {bound_kib} KiB ({CHUNKS} staging chunks of {CHUNK >> 20} MiB + slack)"
    )
