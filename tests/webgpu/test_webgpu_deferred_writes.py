"""Lone small uploads cost no submit: their ``write_buffer`` data stays staged until
the next submit, and everything that could observe the buffer sees it first."""

from __future__ import annotations

import numpy as np

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._batch import FEW_OPS
from tensorferry_webgpu._context import DEFERRED_WRITES


def _staged(env: tf.Environment, device: tf.Device) -> int:
    return tw.backend_of(env).context(device).unsubmitted_writes


def test_a_lone_upload_stays_staged_until_something_reads(
    fresh_env: tf.Environment, webgpu_index: int
) -> None:
    """The upload returns with its bytes staged; a download, a device copy and
    ``synchronize`` each see the data (and the later two flush the staging)."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    tensor = env.from_numpy(np.zeros(1024, np.int32), device)
    twin = env.empty((1024,), np.int32, device)
    data = np.arange(1024, dtype=np.int32)
    before = _staged(env, device)
    env.copy_tensor(env.from_numpy(data), tensor)
    assert _staged(env, device) == before + data.nbytes, "a lone small upload must not submit"
    env.copy_tensor(tensor, twin)
    assert _staged(env, device) == 0, "a submit carries every staged write"
    np.testing.assert_array_equal(twin.numpy(), data)
    env.copy_tensor(env.from_numpy(data[::-1].copy()), tensor)
    np.testing.assert_array_equal(tensor.numpy(), data[::-1])
    env.copy_tensor(env.from_numpy(data), tensor)
    env.synchronize(device)
    assert _staged(env, device) == 0


def test_a_directly_mapped_read_sees_staged_writes(
    fresh_env: tf.Environment, webgpu_index: int
) -> None:
    """On unified memory a large download maps the tensor's own buffer; a small
    upload into part of it, left staged, must be in what the map shows."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    base = np.zeros(4 << 20, np.uint8)
    tensor = env.from_numpy(base, device)
    part = np.full(4096, 7, np.uint8)
    env.copy_tensor(env.from_numpy(part), tensor[8192 : 8192 + 4096])
    expected = base.copy()
    expected[8192 : 8192 + 4096] = 7
    np.testing.assert_array_equal(tensor.numpy(), expected)


def test_staged_writes_stay_bounded(fresh_env: tf.Environment, webgpu_index: int) -> None:
    """Staged bytes never reach DEFERRED_WRITES: past it an upload submits."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    tensor = env.empty((64 << 10,), np.uint8, device)
    source = env.from_numpy(np.ones(64 << 10, np.uint8))
    most = 0
    for _ in range(2 * DEFERRED_WRITES // (64 << 10)):
        env.copy_tensor(source, tensor)
        most = max(most, _staged(env, device))
    assert 0 < most < DEFERRED_WRITES


def test_host_accessible_memory_sees_a_staged_upload_copied_into_it(
    fresh_env: tf.Environment,
) -> None:
    """A staged small upload, copied on into host-accessible memory, is what a
    mapped scope of that memory shows."""
    env = fresh_env
    hosts = [d for d in env.devices() if d.memory is tf.MemoryKind.HOST_ACCESSIBLE]
    assert hosts, "lavapipe offers host-accessible memory (webgpu:0:host)"
    device = env.device(f"webgpu:{hosts[0].index}")
    pinned = env.from_numpy(np.zeros(4096, np.uint8), hosts[0])
    source = env.from_numpy(np.arange(4096, dtype=np.uint32).astype(np.uint8), device)
    env.copy_tensor(env.from_numpy(np.full(4096, 9, np.uint8)), source)
    env.copy_tensor(source, pinned)
    with pinned.mapped() as array:
        np.testing.assert_array_equal(array, np.full(4096, 9, np.uint8))
        del array


def test_a_few_small_uploads_are_written_not_packed(
    fresh_env: tf.Environment, webgpu_index: int
) -> None:
    """A batch of a decode step's three tiny inputs goes by write_buffer (one, as
    they fill neighbouring slab slots: 40 bytes with two slots' padding; no staging
    chunk, no submit); a larger batch is packed into staging and submitted."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    inputs = [env.empty((1, 1), np.int64, device) for _ in range(FEW_OPS + 1)]
    values = [env.from_numpy(np.array([[i + 10]], np.int64)) for i in range(FEW_OPS + 1)]
    env.synchronize(device)
    env.copy_tensors(values[:3], inputs[:3])
    assert _staged(env, device) == 2 * 16 + 8
    env.copy_tensors(values, inputs)
    assert _staged(env, device) == 0, "a packed batch submits its staging chunk"
    assert [int(t.numpy()[0, 0]) for t in inputs] == [i + 10 for i in range(FEW_OPS + 1)]
