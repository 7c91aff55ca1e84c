"""Neighbouring copies of a batch coalesce into one ``copy_buffer_to_buffer``.

A copy that continues the previous one in both its source and its destination
buffer extends it (``Queue.copy``). These tests check that batches whose
pieces are neighbours land byte-exact in every direction, including ragged
sizes, gaps, repeated destinations and order reversals, and that neighbouring
pieces really are recorded as fewer commands.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry as tf
import tensorferry_webgpu._queue as queue_module
from tensorferry_webgpu._batch import FEW_OPS

Bytes = npt.NDArray[np.uint8]
ROWS = 64


def _same(actual: Bytes, expected: Bytes, what: str) -> None:
    if not np.array_equal(actual, expected):
        wrong = np.flatnonzero(actual != expected)
        raise AssertionError(
            f"{what}: {wrong.size} of {expected.size} bytes differ, first at {wrong[:8].tolist()}"
        )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Every list of copies the queues record (``encode_copies`` into an encoder, or
    ``submit_copies`` on their own); the real calls run."""
    calls: list[list[Any]] = []
    encode, submit = queue_module.encode_copies, queue_module.submit_copies

    def encode_spy(encoder: Any, copies: list[Any]) -> None:
        calls.append([tuple(c) for c in copies])
        encode(encoder, copies)

    def submit_spy(gpu: Any, queue: Any, copies: list[Any]) -> None:
        calls.append([tuple(c) for c in copies])
        submit(gpu, queue, copies)

    monkeypatch.setattr(queue_module, "encode_copies", encode_spy)
    monkeypatch.setattr(queue_module, "submit_copies", submit_spy)
    return calls


def _slices(tensor: tf.Tensor, width: int) -> list[tf.Tensor]:
    return [tensor[i * width : (i + 1) * width] for i in range(ROWS)]


@pytest.mark.parametrize("width", [1024, 1000, 13], ids=["aligned", "staging-gaps", "ragged"])
def test_uploads_into_neighbouring_ranges(
    env: tf.Environment, device: tf.Device, width: int
) -> None:
    """Rows of one host array into neighbouring ranges of one device tensor, in
    order, then two out of order and one range written twice (the later wins)."""
    rng = np.random.default_rng(width)
    host = rng.integers(0, 256, (ROWS, width), dtype=np.uint8)
    target = env.empty((ROWS * width,), np.uint8, device)
    srcs = [env.from_numpy(host, copy=False)[i] for i in range(ROWS)]
    dsts = _slices(target, width)
    order = [*range(ROWS - 2), ROWS - 1, ROWS - 2]
    env.copy_tensors([srcs[i] for i in order] + [srcs[0]], [dsts[i] for i in order] + [dsts[3]])
    expected = host.copy()
    expected[3] = host[0]
    _same(target.numpy(), expected.reshape(-1), "device tensor")


@pytest.mark.parametrize("width", [1024, 1000, 13], ids=["aligned", "staging-gaps", "ragged"])
def test_downloads_from_neighbouring_ranges(
    env: tf.Environment, device: tf.Device, width: int
) -> None:
    """Neighbouring ranges of one device tensor into rows of one host array."""
    rng = np.random.default_rng(width + 1)
    data = rng.integers(0, 256, ROWS * width, dtype=np.uint8)
    source = env.from_numpy(data, device)
    host = np.zeros((ROWS, width), np.uint8)
    dsts = [env.from_numpy(host, copy=False)[i] for i in range(ROWS)]
    env.copy_tensors(_slices(source, width), dsts)
    _same(host.reshape(-1), data, "host rows")


@pytest.mark.parametrize("width", [1024, 1000, 13], ids=["aligned", "gaps", "ragged"])
def test_device_copies_between_neighbouring_ranges(
    env: tf.Environment, device: tf.Device, width: int
) -> None:
    """Neighbouring ranges of one tensor into neighbouring ranges of another, and
    shifted by one row within one tensor (overlapping source and destination)."""
    rng = np.random.default_rng(width + 2)
    data = rng.integers(0, 256, ROWS * width, dtype=np.uint8)
    source = env.from_numpy(data, device)
    target = env.empty((ROWS * width,), np.uint8, device)
    env.copy_tensors(_slices(source, width), _slices(target, width))
    _same(target.numpy(), data, "copy into another tensor")
    rows = _slices(source, width)
    env.copy_tensors(rows[:-1], rows[1:])
    # A batch keeps the semantics of a loop: each row copies the one above it
    # as it is by then, so the first row ends up everywhere.
    _same(source.numpy(), np.tile(data[:width], ROWS), "copy within one tensor, row by row")


def test_neighbouring_pieces_become_one_command(
    env: tf.Environment, device: tf.Device, recorded: list[list[Any]]
) -> None:
    """Aligned rows into neighbouring ranges: one staged copy per direction, and
    one copy command for neighbouring ranges of one tensor into another's."""
    width = 2048  # 128 KiB tensors: beyond slabs, one buffer each
    host = np.arange(ROWS * width, dtype=np.uint32).astype(np.uint8).reshape(ROWS, width)
    target = env.empty((ROWS * width,), np.uint8, device)
    env.copy_tensors(
        [env.from_numpy(host, copy=False)[i] for i in range(ROWS)], _slices(target, width)
    )
    assert [len(call) for call in recorded] == [1]
    assert recorded[0][0][4] == ROWS * width
    recorded.clear()
    back = np.zeros_like(host)
    env.copy_tensors(
        _slices(target, width), [env.from_numpy(back, copy=False)[i] for i in range(ROWS)]
    )
    assert [len(call) for call in recorded] == [1]
    _same(back, host, "round trip")
    recorded.clear()
    other = env.empty((ROWS * width,), np.uint8, device)
    env.copy_tensors(_slices(target, width), _slices(other, width))
    assert [len(call) for call in recorded] == [1]
    assert recorded[0][0][4] == ROWS * width
    _same(other.numpy(), host.reshape(-1), "device copy")


def test_copies_that_do_not_continue_stay_apart(
    env: tf.Environment, device: tf.Device, recorded: list[list[Any]]
) -> None:
    """Rows uploaded in reverse order are not neighbours in staging order: one
    command each, and every byte lands where it belongs (more rows than a batch
    of a few ops, which write_buffer each)."""
    width = 256
    count = FEW_OPS + 4
    rng = np.random.default_rng(5)
    host = rng.integers(0, 256, (count, width), dtype=np.uint8)
    target = env.empty((count * width,), np.uint8, device)
    rows = [env.from_numpy(host, copy=False)[i] for i in range(count)]
    slices = [target[i * width : (i + 1) * width] for i in range(count)]
    env.copy_tensors(rows[::-1], slices[::-1])
    assert sum(len(call) for call in recorded) == count
    _same(target.numpy(), host.reshape(-1), "reversed rows")


@pytest.mark.parametrize("width", [1024, 1000], ids=["aligned", "staging-gaps"])
def test_uploads_read_rows_that_merged_downloads_of_the_batch_wrote(
    env: tf.Environment, device: tf.Device, width: int
) -> None:
    """Rows downloaded into one host array (staged, and copied out, as one run) and,
    later in the same batch, uploaded from a middle row, from a range across two
    rows and from a run of rows: the uploads send the downloaded bytes, not the old."""
    rng = np.random.default_rng(width + 3)
    data = rng.integers(0, 256, (ROWS, width), dtype=np.uint8)
    sources = [env.from_numpy(row, device) for row in data]
    host = np.full((ROWS, width), 0x5A, np.uint8)
    flat = env.from_numpy(host.reshape(-1), copy=False)
    rows = [flat[i * width : (i + 1) * width] for i in range(ROWS)]
    middle = env.empty((width,), np.uint8, device)
    across = env.empty((width,), np.uint8, device)
    run = [env.empty((width,), np.uint8, device) for _ in range(8)]
    env.copy_tensors(
        [*sources, rows[ROWS // 2], flat[width // 2 : width // 2 + width], *rows[8:16]],
        [*rows, middle, across, *run],
    )
    _same(host, data, "downloaded rows")
    _same(middle.numpy(), data[ROWS // 2], "upload of a downloaded row")
    _same(across.numpy(), data.reshape(-1)[width // 2 : width // 2 + width], "across two rows")
    for i, tensor in enumerate(run):
        _same(tensor.numpy(), data[8 + i], f"row {8 + i} of a run of uploads")
