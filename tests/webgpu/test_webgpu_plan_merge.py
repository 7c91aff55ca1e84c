"""The WebGPU plan merges device copies between neighbouring slab slots (source
and destination ranges both consecutive, two buffers) into one op, and gives
way wherever a pair breaks the run: results always equal a loop of copies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry_webgpu._ops import DeviceCopy

KIB = 1024


@pytest.fixture
def fresh(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> tuple[tf.Environment, tf.Device]:
    """A fresh environment (empty slabs: 64 tensors of 1 KiB fill the first slab
    of their stride, the next 64 the second) and the device under test."""
    env = make_env()
    return env, env.device(f"webgpu:{webgpu_index}")


def _ops(env: tf.Environment, device: tf.Device, srcs: list[Any], dsts: list[Any]) -> list[Any]:
    transfer = env.data_transfer_manager.get_data_transfer(device, device)
    assert transfer is not None
    runs = transfer._plan(list(zip(srcs, dsts, strict=True)))  # type: ignore[attr-defined]
    return [op for _, ops in runs for op in ops]


def _filled(env: tf.Environment, device: tf.Device, count: int, seed: int) -> list[tf.Tensor]:
    rows = np.random.default_rng(seed).integers(0, 256, (count, KIB), dtype=np.uint8)
    tensors = [env.empty((KIB,), np.uint8, device) for _ in range(count)]
    env.copy_tensors([env.from_numpy(r) for r in rows], tensors)
    return tensors


def test_neighbours_plan_as_few_ops(fresh: tuple[tf.Environment, tf.Device]) -> None:
    env, device = fresh
    srcs, dsts = _filled(env, device, 64, 1), _filled(env, device, 64, 2)
    ops = _ops(env, device, srcs, dsts)
    assert all(type(op) is DeviceCopy for op in ops)
    assert len(ops) == 1, ops  # 64 pairs, one slab to the next
    assert sum(op.nbytes for op in ops) == 64 * KIB
    env.copy_tensors(srcs, dsts)
    for s, d in zip(srcs, dsts, strict=True):
        np.testing.assert_array_equal(s.numpy(), d.numpy())


def test_mixed_batch_gives_way_and_matches_a_loop(fresh: tuple[tf.Environment, tf.Device]) -> None:
    env, device = fresh
    a, b = _filled(env, device, 64, 3), _filled(env, device, 64, 4)
    host = env.from_numpy(np.full(KIB, 7, np.uint8))
    empty_src, empty_dst = env.empty((0,), np.uint8, device), env.empty((0,), np.uint8, device)
    odd_src, odd_dst = a[5][:6], b[5][:6]  # 6 bytes: not whole words
    # runs broken by: an upload, a zero-byte pair, a gap, a ragged copy, a copy
    # within one slab, and a pair reading what an earlier pair wrote
    srcs = [*a[0:10], host, *a[10:15], empty_src, *a[15:20], *a[22:30], odd_src, a[30], a[31]]
    dsts = [*b[0:10], b[10], *b[11:16], empty_dst, *b[16:21], *b[23:31], odd_dst, a[39], b[31]]
    srcs += [b[3], *a[32:36]]
    dsts += [a[32], *b[32:36]]  # a[32] is written, then read by the next pair
    # the same offsets as the run before it, in the other buffers
    srcs += [*a[44:48], b[48]]
    dsts += [*b[44:48], a[48]]
    # a ragged piece right after a run; copies within one slab, chained
    srcs += [*a[50:53], a[53][:6], a[56], a[57]]
    dsts += [*b[50:53], b[53][:6], a[57], a[58]]
    want = {id(t): t.numpy() for t in a + b}
    want[id(host)] = host.numpy()
    roots = {id(odd_src): a[5], id(odd_dst): b[5], id(srcs[-3]): a[53], id(dsts[-3]): b[53]}
    for s, d in zip(srcs, dsts, strict=True):
        if s.nbytes:
            key, read = id(roots.get(id(d), d)), want[id(roots.get(id(s), s))]
            want[key] = np.concatenate([read[: s.nbytes], want[key][s.nbytes :]])
    ops = _ops(env, device, srcs, dsts)
    assert len(ops) <= 18, ops  # 50 pairs: merged where they may
    assert sorted(op.nbytes for op in ops if op.nbytes & 3) == [6, 6]  # ragged: alone
    env.copy_tensors(srcs, dsts)
    for t in a + b:
        np.testing.assert_array_equal(t.numpy(), want[id(t)])


def test_bad_pair_in_a_run_raises_before_anything_is_copied(
    env: tf.Environment, device: tf.Device
) -> None:
    srcs, dsts = _filled(env, device, 20, 5), _filled(env, device, 20, 6)
    before = [d.numpy() for d in dsts]
    wrong = env.empty((KIB // 4,), np.float32, device)
    with pytest.raises(tf.IncompatibleTensorsError, match="pair 10"):
        env.copy_tensors(srcs, [*dsts[:10], wrong, *dsts[11:]])
    for d, old in zip(dsts, before, strict=True):
        np.testing.assert_array_equal(d.numpy(), old)


def test_async_batch_keeps_merged_pieces_alive(env: tf.Environment, device: tf.Device) -> None:
    srcs, dsts = (
        _filled(env, device, 32, 7),
        [env.empty((KIB,), np.uint8, device) for _ in range(32)],
    )
    want = [s.numpy() for s in srcs]
    keep = dsts[0]
    handle = env.copy_tensors_async(srcs, dsts)
    del srcs, dsts  # only the batch holds them now
    handle.wait()
    np.testing.assert_array_equal(keep.numpy(), want[0])


def test_rows_and_slots_plan_as_few_ops(fresh: tuple[tf.Environment, tf.Device]) -> None:
    env, device = fresh
    rows = np.random.default_rng(8).integers(0, 256, (64, KIB), dtype=np.uint8)
    host = env.from_numpy(rows)
    slots = [env.empty((KIB,), np.uint8, device) for _ in range(64)]
    up = _ops(env, device, [host[i] for i in range(64)], slots)
    assert [type(op).__name__ for op in up] == ["Upload"], up
    assert up[0].nbytes == 64 * KIB
    env.copy_tensors([host[i] for i in range(64)], slots)
    back = env.from_numpy(np.zeros_like(rows))
    down = _ops(env, device, slots, [back[i] for i in range(64)])
    assert [type(op).__name__ for op in down] == ["Download"], down
    env.copy_tensors(slots, [back[i] for i in range(64)])
    np.testing.assert_array_equal(back.numpy(), rows)


def test_mixed_host_batch_gives_way_and_matches_a_loop(
    fresh: tuple[tf.Environment, tf.Device],
) -> None:
    env, device = fresh
    rng = np.random.default_rng(9)
    first, second = (rng.integers(0, 256, (16, KIB), dtype=np.uint8) for _ in range(2))
    h1, h2 = env.from_numpy(first.copy()), env.from_numpy(second.copy())
    slots = [env.empty((KIB,), np.uint8, device) for _ in range(16)]
    env.copy_tensors([h2[i] for i in range(16)], slots)
    want_slots = [row.copy() for row in second]
    want_h1 = first.copy()
    srcs: list[tf.Tensor] = []
    dsts: list[tf.Tensor] = []

    def up(row: int, slot: int, host: tf.Tensor, values: np.ndarray) -> None:
        srcs.append(host[row])
        dsts.append(slots[slot])
        want_slots[slot] = values[row].copy()

    def down(slot: int, row: int) -> None:
        srcs.append(slots[slot])
        dsts.append(h1[row])
        want_h1[row] = want_slots[slot]

    for row in range(4):
        up(row, row, h1, want_h1)  # one run
    up(5, 4, h1, want_h1)  # the next slot from a row further on
    up(6, 5, h2, second)  # the next slot from another array
    for slot, row in ((0, 8), (1, 9), (2, 10)):
        down(slot, row)  # a run of downloads
    down(6, 11)  # the next row from a slot further on
    srcs.append(slots[7])  # the next slot into the next row's place of another array
    dsts.append(h2[12])
    second[12] = want_slots[7]
    up(8, 7, h1, want_h1)  # reads a row a download of this batch writes
    up(9, 8, h1, want_h1)
    srcs.append(h1[10][:6])  # ragged: the next row's first 6 bytes into the next slot
    dsts.append(slots[9][:6])
    want_slots[9] = np.concatenate([want_h1[10][:6], want_slots[9][6:]])
    ops = _ops(env, device, srcs, dsts)
    assert len(ops) <= 10, ops
    assert sorted(op.nbytes for op in ops if op.nbytes & 3) == [6]
    env.copy_tensors(srcs, dsts)
    for slot, values in zip(slots, want_slots, strict=True):
        np.testing.assert_array_equal(slot.numpy(), values)
    np.testing.assert_array_equal(h1.numpy(), want_h1)
    np.testing.assert_array_equal(h2.numpy(), second)
