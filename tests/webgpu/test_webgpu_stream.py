"""The upload stream: a batch's uploads, once they outgrow a staging chunk, flow as one
byte stream through chunks that the copy threads fill.

Contexts here stage every byte (no direct mapping) through 64 KiB chunks, three of
them, so a batch of a few hundred KiB streams on lavapipe in milliseconds. A numpy
model runs the same pairs as a loop; the batch must leave the same bytes. Scenarios
that inject errors run in a child interpreter, so that a copy into unmapped memory
would fail the test instead of aborting the test run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw

CHUNK = 64 << 10
CHUNKS = 3
SIZE = 400 << 10  # bytes of each device tensor and host array of a program

Bytes = npt.NDArray[np.uint8]


class _Rig:
    """A context that streams, a spy on its copy jobs, and a numpy model of a batch."""

    def __init__(self, env: tf.Environment, device: tf.Device, record: Any) -> None:
        self.env = env
        self.device = device
        self.record = record
        self.context = tw.backend_of(env).context(device)
        self.jobs: list[list[list[tuple[Bytes, Bytes]]]] = []
        threads = self.context.threads
        real = threads.start_parts

        def start_parts(parts: list[list[tuple[Bytes, Bytes]]]) -> Any:
            self.jobs.append([list(part) for part in parts])
            return real(parts)

        threads.start_parts = start_parts


@pytest.fixture
def rig(
    make_env: Callable[..., tf.Environment],
    staged_options: Callable[..., Any],
    webgpu_index: int,
    staging_spy: Callable[[Any], Any],
) -> _Rig:
    env = make_env(staged_options(staging_chunk=CHUNK, staging_chunks=CHUNKS))
    device = env.device(f"webgpu:{webgpu_index}")
    return _Rig(env, device, staging_spy(tw.backend_of(env).context(device)))


def _differ(actual: Bytes, expected: Bytes, what: str) -> str | None:
    if np.array_equal(actual, expected):
        return None
    wrong = np.flatnonzero(actual != expected)
    return f"{what}: {wrong.size} bytes differ, first at {wrong[:8].tolist()}"


# Piece sizes: tiny and ragged, mid-size, a chunk exactly, and larger than a chunk.
SIZES = [1, 3, 4, 7, 100, 4096, 5000, 20_000, CHUNK - 4, CHUNK, CHUNK + 4, 150_001, 200_000]


def _program(seed: int, uploads_only: bool) -> list[tuple[str, int, int, str, int, int, int]]:
    """Random pairs ``(src kind, src index, src offset, dst kind, dst index, dst offset,
    nbytes)`` over 4 device tensors ("d") and 4 host arrays ("h")."""
    rng = np.random.default_rng(seed)
    program = []
    for _ in range(60):
        n = int(rng.choice(SIZES))
        roll = 0.0 if uploads_only else rng.random()
        if roll < 0.7:
            kinds = ("h", "d")
        elif roll < 0.85:
            kinds = ("d", "h")
        else:
            kinds = ("d", "d")
        src, dst = int(rng.integers(4)), int(rng.integers(4))
        if kinds == ("d", "d") and src == dst:
            dst = (dst + 1) % 4
        program.append(
            (
                kinds[0],
                src,
                int(rng.integers(SIZE - n + 1)),
                kinds[1],
                dst,
                int(rng.integers(SIZE - n + 1)),
                n,
            )
        )
    return program


@pytest.mark.parametrize(
    ("seed", "uploads_only"), [(0, True), (1, True), (2, False), (3, False), (4, False)]
)
def test_batch_lands_as_a_loop_would(rig: _Rig, seed: int, uploads_only: bool) -> None:
    """Tiny, ragged, mid-size and larger-than-a-chunk uploads (with downloads and
    device copies between them, reading and writing what earlier pairs touched)
    leave exactly the bytes of a loop over the pairs; chunks hold pieces of several
    tensors; staging stays within its limit."""
    env, rng = rig.env, np.random.default_rng(100 + seed)
    host = [rng.integers(0, 256, SIZE, dtype=np.uint8) for _ in range(4)]
    initial = [rng.integers(0, 256, SIZE, dtype=np.uint8) for _ in range(4)]
    dev = [env.from_numpy(a, rig.device) for a in initial]
    host_model = [a.copy() for a in host]
    dev_model = [a.copy() for a in initial]
    views = {"h": [env.from_numpy(a, copy=False) for a in host], "d": dev}
    models = {"h": host_model, "d": dev_model}
    sources, targets = [], []
    for src_kind, src, src_at, dst_kind, dst, dst_at, n in _program(seed, uploads_only):
        sources.append(views[src_kind][src][src_at : src_at + n])
        targets.append(views[dst_kind][dst][dst_at : dst_at + n])
        data = models[src_kind][src][src_at : src_at + n].copy()
        models[dst_kind][dst][dst_at : dst_at + n] = data
    rig.jobs.clear()
    env.copy_tensors(sources, targets)
    problems = [
        _differ(tensor.numpy(), model, f"device tensor {i}")
        for i, (tensor, model) in enumerate(zip(dev, dev_model, strict=True))
    ] + [
        _differ(array, model, f"host array {i}")
        for i, (array, model) in enumerate(zip(host, host_model, strict=True))
    ]
    assert not [p for p in problems if p], problems
    assert rig.jobs, "the batch never streamed"
    assert any(sum(len(part) for part in job) > 1 for job in rig.jobs), (
        "no streamed chunk held pieces of more than one tensor"
    )
    stats = rig.context.upload_staging.stats()
    assert stats.buffers <= CHUNKS
    assert stats.idle == stats.buffers, stats
    assert len(rig.record.created["upload"]) <= CHUNKS


def test_upload_waits_for_the_download_that_writes_its_source(rig: _Rig) -> None:
    """In one streaming batch: a download into a host array, then streamed uploads
    from that array, read what the download wrote; a streamed upload from an array
    that a later download overwrites reads the array's old bytes; a download and a
    device copy after streamed uploads see them."""
    env, rng = rig.env, np.random.default_rng(7)
    n = 3 * CHUNK + 12
    a, b, c, d = (
        env.from_numpy(rng.integers(0, 256, n, dtype=np.uint8), rig.device) for _ in range(4)
    )
    a_bytes = a.numpy()
    landing = np.zeros(n, np.uint8)
    old = rng.integers(0, 256, n, dtype=np.uint8)
    reused = old.copy()
    payload = rng.integers(0, 256, n, dtype=np.uint8)
    seen = np.zeros(n, np.uint8)
    h = env.from_numpy
    sources = [
        h(payload, copy=False),  # streamed (larger than a chunk) into c
        a,  # download a into landing
        h(landing, copy=False)[4:],  # upload from what the download writes into b
        h(reused, copy=False),  # upload old bytes into d ...
        c,  # ... then overwrite reused with c (the payload): the upload read the old
        c,  # device copy of c (streamed above) into a
    ]
    targets = [
        c,
        h(landing, copy=False),
        b[: n - 4],
        d,
        h(reused, copy=False),
        a,
    ]
    rig.jobs.clear()
    env.copy_tensors(sources, targets)
    env.copy_tensor(a, h(seen, copy=False))
    assert rig.jobs, "the batch never streamed"
    assert np.array_equal(landing, a_bytes), "the download did not land"
    assert np.array_equal(b.numpy()[: n - 4], a_bytes[4:]), "the upload read its source early"
    assert np.array_equal(d.numpy(), old), "the upload read bytes a later download wrote"
    assert np.array_equal(reused, payload), "the download after the stream missed it"
    assert np.array_equal(seen, payload), "the device copy ran before the streamed upload"


def test_later_uploads_to_one_range_win(rig: _Rig) -> None:
    """A streamed upload, then ragged and tiny uploads into its range, then another
    streamed upload over part of them: each byte holds what the last pair wrote."""
    env, rng = rig.env, np.random.default_rng(8)
    n = 4 * CHUNK
    tensor = env.from_numpy(np.zeros(n, np.uint8), rig.device)
    model = np.zeros(n, np.uint8)
    sources, targets = [], []
    for start, size in [(0, n), (5, 3), (9, 1), (101, 70_001), (2, 3 * CHUNK + 1), (3, 2)]:
        data = rng.integers(0, 256, size, dtype=np.uint8)
        sources.append(env.from_numpy(data, copy=False))
        targets.append(tensor[start : start + size])
        model[start : start + size] = data
    env.copy_tensors(sources, targets)
    problem = _differ(tensor.numpy(), model, "tensor")
    assert problem is None, problem


ERRORS_IN_THE_STREAM = """
import json, sys, time
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._native import mapped_address

index, fault = int(sys.argv[1]), sys.argv[2]
chunk = 64 << 10
env = tf.Environment(backends=[])
env.register_backend(
    "webgpu",
    tw.WebGPUBackend(tw.ContextOptions(staging_chunk=chunk, staging_chunks=3, map_storage=False)),
)
device = env.device(f"webgpu:{index}")
context = tw.backend_of(env).context(device)
rng = np.random.default_rng(3)
sizes = [5000, 3 * chunk + 8, 30000, 2 * chunk, 12, 7, 4 * chunk, 40000] * 3
sources = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
tensors = [env.empty(n, np.uint8, device) for n in sizes]

class Planted(RuntimeError):
    pass

calls = {"jobs": 0, "acquires": 0, "discarded under a running copy": 0}
threads, staging = context.threads, context.upload_staging
real_start, real_acquire, real_discard = threads.start_parts, staging.acquire, staging.discard
started = []  # (job, lowest and highest address it writes)

class Slow:  # a copy still running when the fault comes
    def __array__(self, *args, **kwargs):
        time.sleep(0.3)
        return np.zeros(4, np.uint8)

class Poison:
    def __array__(self, *args, **kwargs):
        raise Planted("planted: a host copy failed")

def start_parts(parts):
    calls["jobs"] += 1
    parts = [list(part) for part in parts]
    dst = parts[-1][-1][0]
    if calls["jobs"] == 2:
        parts[-1].append((dst[:4], Slow()))
    if fault == "copy" and calls["jobs"] == 4:
        parts[-1].append((dst[:4], Poison()))
    job = real_start(parts)
    addresses = [pair[0].__array_interface__["data"][0] for part in parts for pair in part]
    started.append((job, min(addresses), max(addresses)))
    return job

def acquire():
    calls["acquires"] += 1
    if fault == "acquire" and calls["acquires"] == 5:
        raise tf.OutOfDeviceMemoryError("planted: no staging")
    return real_acquire()

def discard(buffer):
    if buffer.map_state == "mapped":
        low = mapped_address(buffer, 0, chunk)
        if any(lo < low + chunk and low <= hi and not job.done for job, lo, hi in started):
            calls["discarded under a running copy"] += 1
    real_discard(buffer)

threads.start_parts, staging.acquire, staging.discard = start_parts, acquire, discard
try:
    env.copy_tensors([env.from_numpy(s, copy=False) for s in sources], tensors)
    outcome = "landed"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
threads.start_parts, staging.acquire, staging.discard = real_start, real_acquire, real_discard
stats = staging.stats()
env.copy_tensors([env.from_numpy(s, copy=False) for s in sources], tensors)
result = {
    "outcome": outcome,
    "jobs": calls["jobs"],
    "discarded under a running copy": calls["discarded under a running copy"],
    "handed out": stats.buffers - stats.idle,
    "buffers": stats.buffers,
    "later batch lands": all(np.array_equal(t.numpy(), s) for t, s in zip(tensors, sources)),
}
env.close()
print(json.dumps(result))
"""


@pytest.mark.parametrize("fault", ["copy", "acquire"])
def test_an_error_mid_stream_leaves_the_process_healthy(
    run_child: Callable[..., Any], webgpu_index: int, fault: str
) -> None:
    """A host copy that fails inside a streamed chunk, or staging that cannot be had
    while chunks are in flight: the batch raises that error, no staging chunk stays
    handed out, staging stays within its limit, the next batch lands, and the
    interpreter exits cleanly (no copy wrote into a buffer after it went)."""
    child = run_child(ERRORS_IN_THE_STREAM, str(webgpu_index), fault)
    assert "panicked" not in child.stderr, child.describe()
    result = child.report()
    assert result["outcome"].startswith(
        "Planted" if fault == "copy" else "OutOfDeviceMemoryError"
    ), result
    assert "planted" in result["outcome"], result
    assert result["jobs"] >= 3, result  # chunks were in flight when it failed
    assert result["discarded under a running copy"] == 0, result
    assert result["handed out"] == 0, result
    assert result["buffers"] <= 3, result
    assert result["later batch lands"], result


LOST_UNDER_THE_STREAM = """
import json, sys, time
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw

index = int(sys.argv[1])
results = []
for attempt in range(4):
    env = tf.Environment(backends=[])
    env.register_backend(
        "webgpu",
        tw.WebGPUBackend(
            tw.ContextOptions(staging_chunk=64 << 10, staging_chunks=3, map_storage=False)
        ),
    )
    device = env.device(f"webgpu:{index}")
    context = tw.backend_of(env).context(device)
    sizes = [3000, 200_000, 70_000, 12, 500_000] * 8
    sources = [np.full(n, attempt + 1, np.uint8) for n in sizes]
    tensors = [env.empty(n, np.uint8, device) for n in sizes]
    handle = env.copy_tensors_async([env.from_numpy(s, copy=False) for s in sources], tensors)
    time.sleep(0.002 * attempt)
    context.gpu.destroy()
    try:
        handle.wait(60)
        result = "landed"
    except Exception as exc:
        result = type(exc).__name__
    stats = context.upload_staging.stats()
    fresh = env.from_numpy(np.arange(100, dtype=np.int32), device)
    results.append({
        "result": result,
        "handed out": stats.buffers - stats.idle,
        "fresh tensor works": fresh.numpy().tolist() == list(range(100)),
    })
    env.close()
print(json.dumps(results))
"""


def test_device_lost_under_a_stream(run_child: Callable[..., Any], webgpu_index: int) -> None:
    """Destroying the device while a streamed batch runs gives a landed batch or
    DeviceLostError, never an abort or a hang; no staging chunk stays handed out."""
    child = run_child(LOST_UNDER_THE_STREAM, str(webgpu_index))
    assert "panicked" not in child.stderr, child.describe()
    for result in child.report():
        assert result["result"] in {"landed", "DeviceLostError"}, result
        assert result["handed out"] == 0, result
        assert result["fresh tensor works"], result


TIGHT_STAGING = """
import json, sys
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw

index, chunks = int(sys.argv[1]), int(sys.argv[2])
chunk = 64 << 10
env = tf.Environment(backends=[])
env.register_backend(
    "webgpu",
    tw.WebGPUBackend(
        tw.ContextOptions(staging_chunk=chunk, staging_chunks=chunks, map_storage=False)
    ),
)
device = env.device(f"webgpu:{index}")
rng = np.random.default_rng(5)
# Small uploads open a packed chunk; a mid-size one that does not fit starts the
# stream while that chunk is still attached to the queue.
sizes = [4000] * 12 + [30_000, 3 * chunk, 20_000, 100, 2 * chunk + 4] * 4
sources = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
tensors = [env.empty(n, np.uint8, device) for n in sizes]
env.copy_tensors([env.from_numpy(s, copy=False) for s in sources], tensors)
stats = tw.backend_of(env).context(device).upload_staging.stats()
print(json.dumps({
    "landed": all(np.array_equal(t.numpy(), s) for t, s in zip(tensors, sources)),
    "buffers": stats.buffers,
}))
env.close()
"""


@pytest.mark.parametrize("chunks", [2, 3])
def test_stream_beside_a_packed_chunk_within_tight_staging(
    run_child: Callable[..., Any], webgpu_index: int, chunks: int
) -> None:
    """With as few staging chunks as allowed, a stream that starts while the batch's
    packed chunk still waits for its submit neither waits for ever (the child would
    time out) nor exceeds the limit, and lands."""
    result = run_child(TIGHT_STAGING, str(webgpu_index), str(chunks)).report()
    assert result["landed"], result
    assert result["buffers"] <= chunks, result
