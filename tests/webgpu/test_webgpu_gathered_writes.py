"""A few small uploads into neighbouring slab slots (a decode step's inputs in one
``copy_tensors``) are written by one ``write_buffer``: the pieces gathered on the
host with zeros in the slots' padding, so no tensor's bytes but theirs change."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _batch


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record ``(offset, bytes)`` of each ``write_buffer`` the batch module makes."""
    real = _batch.write_buffer
    seen: list[tuple[int, int]] = []

    def spy(queue: Any, buffer: Any, offset: int, data: Any) -> None:
        seen.append((offset, data.nbytes))
        real(queue, buffer, offset, data)

    monkeypatch.setattr(_batch, "write_buffer", spy)
    return seen


def _values(env: tf.Environment, *numbers: int) -> list[tf.Tensor]:
    return [env.from_numpy(np.array([[n]], np.int64)) for n in numbers]


def test_uploads_into_neighbouring_slots_are_one_write(
    fresh_env: tf.Environment, webgpu_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    slots = [env.empty((1, 1), np.int64, device) for _ in range(5)]
    for slot, value in zip(slots, _values(env, 1, 2, 3, 4, 5), strict=True):
        env.copy_tensor(value, slot)
    places = [tw.buffer_of(t) for t in slots]
    assert all(p[0] is places[0][0] for p in places), "one slab holds them"
    offsets = [p[1] for p in places]
    assert offsets == [offsets[0] + 16 * i for i in range(5)], "neighbouring 16-byte slots"
    seen = _writes(monkeypatch)

    env.copy_tensors(_values(env, 20, 30, 40), slots[1:4])
    assert seen == [(offsets[1], 40)], "three slots and two paddings, one write"
    assert [int(t.numpy()[0, 0]) for t in slots] == [1, 20, 30, 40, 5]

    seen.clear()
    env.copy_tensors(_values(env, 41, 31, 21), slots[3:0:-1])  # descending: no run
    env.copy_tensors(_values(env, 22, 42), [slots[1], slots[3]])  # a slot between
    assert seen == [(offsets[i], 8) for i in (3, 2, 1, 1, 3)]
    assert [int(t.numpy()[0, 0]) for t in slots] == [1, 22, 31, 42, 5]


def test_a_view_short_of_its_slot_end_is_written_alone(
    fresh_env: tf.Environment, webgpu_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gathering would write the bytes after a view that stops short of its
    storage's end: those are the tensor's own, so the view is written alone."""
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    pair = env.from_numpy(np.array([7, 8], np.int64), device)
    after = env.from_numpy(np.array([9, 9], np.int64), device)
    assert tw.buffer_of(after)[1] == tw.buffer_of(pair)[1] + 16
    seen = _writes(monkeypatch)
    env.copy_tensors(
        [env.from_numpy(np.array([70], np.int64)), env.from_numpy(np.array([90, 91], np.int64))],
        [pair[0:1], after],
    )
    assert len(seen) == 2
    assert pair.numpy().tolist() == [70, 8]
    assert after.numpy().tolist() == [90, 91]


def test_a_gathered_write_stays_within_gather_max(
    fresh_env: tf.Environment, webgpu_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fresh_env
    device = env.device(f"webgpu:{webgpu_index}")
    size = _batch.GATHER_MAX // 2
    slots = [env.empty(size, np.uint8, device) for _ in range(3)]
    offsets = [tw.buffer_of(t)[1] for t in slots]
    assert offsets == [offsets[0] + size * i for i in range(3)]
    data = [np.full(size, i + 1, np.uint8) for i in range(3)]
    seen = _writes(monkeypatch)
    env.copy_tensors([env.from_numpy(d) for d in data], slots)
    assert seen == [(offsets[0], 2 * size), (offsets[2], size)]
    for slot, expected in zip(slots, data, strict=True):
        np.testing.assert_array_equal(slot.numpy(), expected)
