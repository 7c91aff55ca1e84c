"""A batch of one small download or upload, or of a few small uploads, skips the
batch machinery (``download_alone`` / ``upload_alone`` / ``uploads_alone`` in
``_batch.py``): same bytes, same staging discipline, same errors as the batch
path it stands in for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _batch


def _count(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Record what each call of ``_batch.<name>`` returned (True: it did the copy)."""
    real = getattr(_batch, name)
    seen: list[bool] = []

    def spy(*args: Any) -> bool:
        done: bool = real(*args)
        seen.append(done)
        return done

    monkeypatch.setattr(_batch, name, spy)
    return seen


@pytest.mark.parametrize(("start", "size"), [(0, 4096), (1, 5), (3, 1), (6, 13), (8, 4), (5, 0)])
def test_a_lone_download_is_byte_exact(
    fresh_env: tf.Environment,
    webgpu_index: int,
    monkeypatch: pytest.MonkeyPatch,
    start: int,
    size: int,
) -> None:
    """Any byte offset and size: the host view gets exactly the device bytes, and
    the host bytes around it keep theirs."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    data = (np.arange(8192) * 7 % 251).astype(np.uint8)
    tensor = env.from_numpy(data, device)
    host = np.full(8192, 0xEE, np.uint8)
    target = env.from_numpy(host, copy=False)
    seen = _count(monkeypatch, "download_alone")
    env.copy_tensor(tensor[start : start + size], target[start + 3 : start + 3 + size])
    expected = np.full(8192, 0xEE, np.uint8)
    expected[start + 3 : start + 3 + size] = data[start : start + size]
    np.testing.assert_array_equal(host, expected)
    assert seen == ([True] if size else []), "a small download takes the lone path"


def test_a_lone_download_gives_its_staging_chunk_back(
    fresh_env: tf.Environment,
    webgpu_index: int,
    staging_spy: Callable[[Any], Any],
) -> None:
    """One pooled chunk per download, reused: repeated downloads make no new ones."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    tensor = env.from_numpy(np.arange(1024, dtype=np.int32), device)
    out = np.empty(1024, np.int32)
    tensor.numpy(out=out)  # the pool makes its first chunk
    context = tw.backend_of(env).context(device)
    record = staging_spy(context)
    for _ in range(5):
        out[:] = 0
        tensor.numpy(out=out)
        np.testing.assert_array_equal(out, np.arange(1024, dtype=np.int32))
    assert len(record.handed_out["download"]) == 5
    assert len(set(map(id, record.handed_out["download"]))) == 1, "the chunk is reused"
    assert record.created["download"] == []


def test_larger_downloads_take_the_batch_path(
    make_env: Callable[..., tf.Environment],
    staged_options: Callable[..., Any],
    webgpu_index: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A range larger than a staging chunk streams through the batch, as before."""
    env = make_env(staged_options(staging_chunk=64 << 10))
    device = env.device(f"webgpu:{webgpu_index}")
    data = (np.arange(300 << 10) % 253).astype(np.uint8)
    tensor = env.from_numpy(data, device)
    seen = _count(monkeypatch, "download_alone")
    np.testing.assert_array_equal(tensor.numpy(), data)
    assert seen == [False]


@pytest.mark.parametrize(("start", "size", "alone"), [(0, 64, True), (4, 8, True), (1, 8, False)])
def test_a_lone_upload_is_byte_exact(
    fresh_env: tf.Environment,
    webgpu_index: int,
    monkeypatch: pytest.MonkeyPatch,
    start: int,
    size: int,
    alone: bool,
) -> None:
    """Whole words go by ``write_buffer`` alone; other ranges take the batch path
    (its byte-exact patches); the device bytes around the range keep theirs."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    tensor = env.from_numpy(np.full(256, 0xEE, np.uint8), device)
    data = (np.arange(size) + 1).astype(np.uint8)
    seen = _count(monkeypatch, "upload_alone")
    env.copy_tensor(env.from_numpy(data), tensor[start : start + size])
    expected = np.full(256, 0xEE, np.uint8)
    expected[start : start + size] = data
    np.testing.assert_array_equal(tensor.numpy(), expected)
    assert seen == [alone]


def _spy_plans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of pairs of each batch the webgpu transfer plans."""
    from tensorferry_webgpu import _transfer

    real = _transfer.WebGPUDataTransfer._plan
    planned: list[int] = []

    def spy(self: Any, pairs: Any) -> Any:
        planned.append(len(pairs))
        return real(self, pairs)

    monkeypatch.setattr(_transfer.WebGPUDataTransfer, "_plan", spy)
    return planned


def test_a_lone_pair_of_plain_memory_skips_the_batch_plan(
    fresh_env: tf.Environment, webgpu_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone upload or download of device memory is copied without the batch's
    planning, and lands the same bytes; a lone device copy, an empty pair and a
    batch of two are planned."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    data = (np.arange(4096) * 3 % 251).astype(np.uint8)
    tensor = env.empty(4096, np.uint8, device)
    other = env.empty(4096, np.uint8, device)
    env.copy_tensor(env.from_numpy(data), tensor)  # the context is made, and held
    planned = _spy_plans(monkeypatch)
    env.copy_tensor(env.from_numpy(data[::-1].copy()), tensor)
    out = np.empty(4096, np.uint8)
    tensor.numpy(out=out)
    np.testing.assert_array_equal(out, data[::-1])
    assert planned == [], "a lone upload and download of plain memory are not planned"
    env.copy_tensor(tensor, other)
    env.copy_tensor(tensor[:0], env.from_numpy(out[:0], copy=False))
    env.copy_tensors([tensor[:8], tensor[8:16]], [other[:8], other[8:16]])
    assert planned == [1, 1, 2]
    np.testing.assert_array_equal(other.numpy(), data[::-1])


def test_a_lone_pair_raises_what_the_batch_raises(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> None:
    """Given straight to the transfer, a lone pair of a closed transfer, of a closed
    context or of another backend instance's memory is refused as a batch would
    refuse it, and nothing is written."""
    env, stranger_env = make_env(), make_env()
    device = env.device(f"webgpu:{webgpu_index}")
    host = np.arange(16, dtype=np.uint8)
    tensor = env.from_numpy(host, device)
    stranger = stranger_env.from_numpy(host, stranger_env.device(f"webgpu:{webgpu_index}"))
    out = np.zeros(16, np.uint8)
    target = env.from_numpy(out, copy=False)
    backend = tw.backend_of(env)
    (transfer,) = backend.data_transfers()
    with pytest.raises(ValueError, match="another WebGPU backend instance"):
        transfer.copy_tensors([(stranger, target)])
    with pytest.raises(ValueError, match="another WebGPU backend instance"):
        transfer.copy_tensors([(target, stranger)])
    backend.context(device).close()
    with pytest.raises(tf.ClosedError):
        transfer.copy_tensors([(tensor, target)])
    with pytest.raises(tf.ClosedError):
        transfer.copy_tensors([(target, tensor)])
    transfer.close()
    with pytest.raises(tf.ClosedError):
        transfer.copy_tensors([(target, tensor)])
    assert not out.any(), "nothing was written"
    np.testing.assert_array_equal(stranger.numpy(), host)


def test_a_few_small_uploads_are_written_alone_in_order(
    fresh_env: tf.Environment, webgpu_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to FEW_OPS whole-word uploads in one batch go by write_buffer each, in the
    batch's order (a later pair into the same bytes wins); a batch holding a ragged
    upload or a download takes the batch path, with the same result."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    tensor = env.from_numpy(np.full(64, 0xEE, np.uint8), device)
    inputs = [env.empty((1, 1), np.int64, device) for _ in range(3)]
    values = [env.from_numpy(np.array([[i + 10]], np.int64)) for i in range(3)]
    seen = _count(monkeypatch, "uploads_alone")
    first, second = env.from_numpy(np.full(8, 1, np.uint8)), env.from_numpy(np.full(8, 2, np.uint8))
    env.copy_tensors([*values, first, second], [*inputs, tensor[8:16], tensor[8:16]])
    assert seen == [True]
    assert [int(t.numpy()[0, 0]) for t in inputs] == [10, 11, 12]
    expected = np.full(64, 0xEE, np.uint8)
    expected[8:16] = 2
    np.testing.assert_array_equal(tensor.numpy(), expected)
    ragged = env.from_numpy(np.full(3, 7, np.uint8))
    host = np.zeros(8, np.uint8)
    env.copy_tensors([values[0], ragged], [inputs[0], tensor[1:4]])
    env.copy_tensors([values[1], tensor[8:16]], [inputs[1], env.from_numpy(host, copy=False)])
    assert seen == [True, False, False]
    expected[1:4] = 7
    np.testing.assert_array_equal(tensor.numpy(), expected)
    np.testing.assert_array_equal(host, np.full(8, 2, np.uint8))
    assert [int(t.numpy()[0, 0]) for t in inputs] == [10, 11, 12]


LOST = """
import json, sys
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw
index = int(sys.argv[1])
with tf.Environment() as env:
    device = env.device(f"webgpu:{index}")
    tensor = env.from_numpy(np.arange(64, dtype=np.int32), device)
    out = np.empty(64, np.int32)
    tensor.numpy(out=out)
    tw.backend_of(env).context(device).gpu.destroy()
    try:
        tensor.numpy(out=out)
        result = "landed"
    except Exception as exc:
        result = type(exc).__name__
    fresh = env.from_numpy(np.arange(64, dtype=np.int32), device)
    print(json.dumps([result, fresh.numpy().tolist() == list(range(64))]))
"""


def test_a_lone_download_on_a_destroyed_device_raises(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """A destroyed wgpu device: DeviceLostError (not an abort, in a child
    interpreter to be safe), and a fresh context works afterwards."""
    assert run_child(LOST, str(webgpu_index)).report() == ["DeviceLostError", True]


class _PollSpy:
    """wgpu-native's checked calls, with ``wgpuDevicePoll`` recording its ``wait`` flag."""

    def __init__(self, libf: Any) -> None:
        self._libf = libf
        self.waits: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._libf, name)

    def wgpuDevicePoll(self, device: Any, wait: Any, index: Any) -> Any:
        self.waits.append(bool(wait))
        return self._libf.wgpuDevicePoll(device, wait, index)


def _spy_polls(monkeypatch: pytest.MonkeyPatch) -> _PollSpy:
    from tensorferry_webgpu import _native

    native = _native._native()
    spy = _PollSpy(native.libf)
    monkeypatch.setattr(native, "libf", spy)
    return spy


@pytest.mark.parametrize("spin", [0.0, 2.0], ids=["blocking", "spinning"])
def test_waits_poll_without_blocking_for_spin_wait_seconds(
    make_env: Callable[..., tf.Environment],
    webgpu_index: int,
    monkeypatch: pytest.MonkeyPatch,
    spin: float,
) -> None:
    """With ``spin_wait`` a lone download's map wait, a batch's and ``synchronize``
    poll without blocking until the work is done (2 s is ample for 4 KiB), and
    copy the same bytes; without it they block at once."""
    env = make_env(tw.ContextOptions(spin_wait=spin))
    device = env.device(f"webgpu:{webgpu_index}")
    data = (np.arange(4096) * 5 % 253).astype(np.uint8)
    tensor = env.from_numpy(np.zeros(4096, np.uint8), device)
    env.copy_tensor(env.from_numpy(data), tensor)
    polls = _spy_polls(monkeypatch)
    np.testing.assert_array_equal(tensor.numpy(), data)  # the lone download's wait
    lone = list(polls.waits)
    polls.waits.clear()
    halves = [np.empty(2048, np.uint8), np.empty(2048, np.uint8)]
    env.copy_tensors(
        [tensor[:2048], tensor[2048:]], [env.from_numpy(h, copy=False) for h in halves]
    )
    np.testing.assert_array_equal(np.concatenate(halves), data)  # the batch's map wait
    batch = list(polls.waits)
    polls.waits.clear()
    env.synchronize(device)
    for waits in (lone, batch, polls.waits):
        assert waits, "every wait polls"
        if spin:
            assert not any(waits), f"a spinning wait blocked: {waits}"
        else:
            assert waits[0], f"a wait without spin_wait polled without blocking first: {waits}"


def test_spin_wait_is_200_us_by_default_and_checked(
    fresh_env: tf.Environment, webgpu_index: int
) -> None:
    context = tw.backend_of(fresh_env).context(fresh_env.device(f"webgpu:{webgpu_index}"))
    assert context.spin_wait == tw.ContextOptions().spin_wait == 200e-6
    with pytest.raises(ValueError, match="spin_wait"):
        tw.ContextOptions(spin_wait=-1.0)


@pytest.mark.parametrize("source", ["device", "host"])
@pytest.mark.parametrize("spin", [0.0, 2.0], ids=["blocking", "spinning"])
def test_synchronize_returns_after_the_device_finished(
    make_env: Callable[..., tf.Environment], webgpu_index: int, spin: float, source: str
) -> None:
    """After a 64 MiB copy (from device memory, or an upload from host memory) and
    ``synchronize``, the copy is done: a map of its destination resolves on one
    non-blocking poll (a map waits for the copy)."""
    from tensorferry_webgpu import _native, _waits

    env = make_env(tw.ContextOptions(spin_wait=spin, kernel_copies=False))
    device = env.device(f"webgpu:{webgpu_index}")
    gpu = tw.backend_of(env).context(device).gpu
    if "mappable-primary-buffers" not in gpu.features:
        pytest.skip(f"{device} cannot make a mappable copy destination")
    usage = pytest.importorskip("wgpu").BufferUsage
    nbytes = 64 << 20
    buffer = gpu.create_buffer(
        size=nbytes, usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST | usage.MAP_READ
    )
    target = tw.wrap_buffer(env, device, buffer, (nbytes,), np.uint8)
    origin = (
        env.empty(nbytes, np.uint8, device)
        if source == "device"
        else env.from_numpy(np.empty(nbytes, np.uint8))
    )
    env.fill(origin, 7)
    env.synchronize(device)
    for _ in range(3):
        env.copy_tensor(origin, target)
        env.synchronize(device)
        request = _waits.request_map(buffer, _native.MAP_READ, 0, 8)
        _waits.poll_ready(gpu)
        mapped = request.status != 0
        request.wait(gpu, lost_after=10)
        assert bytes(_native.mapped_array(buffer, 0, 8)) == bytes([7] * 8)
        buffer.unmap()
        assert mapped, "synchronize returned while the copy was still running"
