"""Slabs: small device tensors share slab buffers back to back, so a batch of
neighbours costs a few copy commands; slots are reused, empty slabs go back,
and every path honours a tensor's offset in its slab.

Copy commands are counted by a spy on the two calls that hand copies to
wgpu-native (``encode_copies`` and ``submit_copies``, as the queue calls them);
the real calls still run on a real device.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _queue
from tensorferry_webgpu._slabs import CACHED_SLAB_BYTES, SLAB_BYTES, slot_stride

wgpu = pytest.importorskip("wgpu")

N = 1000
KIB = 1024


@pytest.fixture
def slab_env(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> Callable[..., tuple[tf.Environment, tf.Device]]:
    """``slab_env(**options)``: a fresh environment with those ContextOptions, and
    the device under test."""

    def make(**options: Any) -> tuple[tf.Environment, tf.Device]:
        env = make_env(tw.ContextOptions(**options))
        return env, env.device(f"webgpu:{webgpu_index}")

    return make


@pytest.fixture
def copy_commands(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list: the copy commands handed to wgpu-native since the test began."""
    count = [0]
    real_encode, real_submit = _queue.encode_copies, _queue.submit_copies

    def encode(encoder: Any, copies: list[Any]) -> None:
        count[0] += len(copies)
        real_encode(encoder, copies)

    def submit(gpu: Any, queue: Any, copies: list[Any]) -> None:
        count[0] += len(copies)
        real_submit(gpu, queue, copies)

    monkeypatch.setattr(_queue, "encode_copies", encode)
    monkeypatch.setattr(_queue, "submit_copies", submit)
    return count


def slabs_of(env: tf.Environment, device: tf.Device) -> Any:
    slabs = tw.backend_of(env).context(device).slabs
    assert slabs is not None
    return slabs


def empties(env: tf.Environment, device: tf.Device, count: int, nbytes: int) -> list[tf.Tensor]:
    return [env.empty((nbytes,), np.uint8, device) for _ in range(count)]


def rows(env: tf.Environment, array: np.ndarray) -> list[tf.Tensor]:
    host = env.from_numpy(array, copy=False)
    return [host[i] for i in range(array.shape[0])]


def test_neighbours_sit_back_to_back_in_one_buffer(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    for nbytes, stride in [(KIB, KIB), (100, 112), (3, 16), (64 * KIB, 64 * KIB)]:
        assert slot_stride(nbytes) == stride
        tensors = empties(env, device, 4, nbytes)
        places = [tw.buffer_of(t) for t in tensors]
        buffer, first = places[0]
        assert all(b is buffer for b, _ in places), f"{nbytes}: not one slab"
        assert [o - first for _, o in places] == [k * stride for k in range(4)], nbytes
        assert first % 16 == 0
        usage = buffer.usage
        assert not usage & (wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.MAP_WRITE)
        with pytest.raises(RuntimeError, match="buffer_of"):
            buffer.destroy()
    big = env.empty((64 * KIB + 1,), np.uint8, device)
    assert tw.buffer_of(big)[1] == 0, "over slab_max: a buffer of its own"


def test_freed_run_is_reallocated_as_a_contiguous_run(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    tensors = empties(env, device, 10, KIB)
    offsets = [tw.buffer_of(t)[1] for t in tensors]
    del tensors[3:7]
    gc.collect()
    again = empties(env, device, 4, KIB)
    assert [tw.buffer_of(t)[1] for t in again] == offsets[3:7], "lowest free slots first"
    assert tw.buffer_of(env.empty((KIB,), np.uint8, device))[1] == offsets[-1] + KIB


@pytest.mark.parametrize("kind", ["upload", "download", "device-copy"])
@pytest.mark.parametrize("slab_max", [64 * KIB, 0], ids=["slabs", "no-slabs"])
def test_a_batch_of_small_neighbours_is_a_few_copy_commands(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
    copy_commands: list[int],
    kind: str,
    slab_max: int,
) -> None:
    env, device = slab_env(slab_max=slab_max)
    data = np.random.default_rng(7).integers(0, 256, (N, KIB), dtype=np.uint8)
    a, b = empties(env, device, N, KIB), empties(env, device, N, KIB)
    env.copy_tensors(rows(env, data), a)
    out = np.zeros_like(data)
    fresh = data[::-1].copy()
    before = copy_commands[0]
    if kind == "upload":
        env.copy_tensors(rows(env, fresh), a)
        expected = fresh
    elif kind == "download":
        env.copy_tensors(a, rows(env, out))
        expected = data
    else:
        env.copy_tensors(a, b)
        expected = data
    commands = copy_commands[0] - before
    if kind != "download":
        env.copy_tensors(b if kind == "device-copy" else a, rows(env, out))
    assert out.tobytes() == expected.tobytes(), "not byte exact"
    if slab_max:
        assert commands <= 16, f"{commands} copy commands for {N} neighbours"
    else:
        assert commands >= N, "one buffer per tensor: one command per tensor"


def test_copies_within_one_slab_keep_the_order_of_a_loop(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
    copy_commands: list[int],
) -> None:
    """Copies between tensors of one slab bounce through scratch memory; a copy that
    reads what an earlier one wrote still sees it, and neighbours still merge."""
    env, device = slab_env()
    data = np.arange(6 * 64, dtype=np.uint32).reshape(6, 64)
    t = [env.from_numpy(row, device) for row in data]
    assert len({id(tw.buffer_of(x)[0]) for x in t}) == 1
    expected = data.copy()
    pairs = [(0, 1), (1, 2), (3, 4), (4, 3), (5, 5)]
    for s, d in pairs:
        expected[d] = expected[s]
    env.copy_tensors([t[s] for s, _ in pairs], [t[d] for _, d in pairs])
    np.testing.assert_array_equal(np.stack([x.numpy() for x in t]), expected)
    many = [env.from_numpy(np.full(256, k, np.uint32), device) for k in range(200)]
    targets = empties(env, device, 200, KIB)
    before = copy_commands[0]
    env.copy_tensors(many, [x.view(np.uint32) for x in targets])
    assert copy_commands[0] - before <= 8
    assert all((x.view(np.uint32).numpy() == k).all() for k, x in enumerate(targets))


@pytest.mark.parametrize("seed", range(4))
def test_random_copies_within_one_slab_match_a_loop(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]], seed: int
) -> None:
    """Batches of copies between random ranges of tensors in one slab (aligned and
    ragged, overlapping, chained) leave what copying one after another would."""
    env, device = slab_env()
    rng = np.random.default_rng(seed)
    count, size = 12, 256
    data = rng.integers(0, 256, (count, size), dtype=np.uint8)
    tensors = [env.from_numpy(row, device) for row in data]
    assert len({id(tw.buffer_of(t)[0]) for t in tensors}) == 1
    expected = data.copy()
    sources, targets = [], []
    for _ in range(60):
        n = int(rng.choice([4, 8, 64, 256, 3, 17]))
        align = 4 if rng.random() < 0.8 else 1
        s, d = (int(k) for k in rng.integers(0, count, 2))
        at_s = int(rng.integers(0, (size - n) // align + 1)) * align
        at_d = int(rng.integers(0, (size - n) // align + 1)) * align
        expected[d, at_d : at_d + n] = expected[s, at_s : at_s + n].copy()
        sources.append(tensors[s][at_s : at_s + n])
        targets.append(tensors[d][at_d : at_d + n])
    env.copy_tensors(sources, targets)
    np.testing.assert_array_equal(np.stack([t.numpy() for t in tensors]), expected)


def test_ragged_views_fill_and_raw_access_keep_the_neighbours(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    backend = tw.backend_of(env)
    tensors = [env.from_numpy(np.full(21, 0xA0 + k, np.uint8), device) for k in range(5)]
    assert len({id(tw.buffer_of(x)[0]) for x in tensors}) == 1
    mid, other = tensors[2], tensors[3]
    expected = [np.full(21, 0xA0 + k, np.uint8) for k in range(5)]
    env.copy_tensor(env.from_numpy(np.array([1, 2, 3], np.uint8)), mid[1:4])
    expected[2][1:4] = [1, 2, 3]
    env.fill(mid[5:18], 9)
    expected[2][5:18] = 9
    env.copy_tensor(mid[1:20], other[2:21])
    expected[3][2:21] = expected[2][1:20]
    env.copy_tensor(other[2:7], other[0:5])  # overlapping, within one tensor
    expected[3][0:5] = expected[3][2:7].copy()
    backend.write_raw(tensors[4].storage, 19, b"\x07\x08")
    expected[4][19:] = [7, 8]
    for k, tensor in enumerate(tensors):
        assert backend.read_raw(tensor.storage, 0, 21) == expected[k].tobytes(), k
        np.testing.assert_array_equal(tensor.numpy(), expected[k])
        np.testing.assert_array_equal(np.asarray(tensor[3:20]), expected[k][3:20])
    # The bytes between a tensor's end and its slot's end stay untouched (zero) too.
    buffer, base = tw.buffer_of(tensors[4])
    words = bytes(backend.context(device).queue.read_buffer(buffer, base + 20, 12))
    assert words == b"\x08" + bytes(11)


def test_slots_are_reused_and_empty_slabs_go_back(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    backend, slabs = tw.backend_of(env), slabs_of(env, device)
    for size in (KIB, 48, 4000):
        for _ in range(20):
            tensors = empties(env, device, 300, size)
            stats = slabs.stats()
            assert stats.slots == 300
            live = 300 * slot_stride(size)
            assert stats.slab_bytes <= 2 * live + SLAB_BYTES, stats
            assert backend.bytes_in_use(device) == 300 * size
            del tensors
            gc.collect()
            stats = slabs.stats()
            assert (stats.slabs, stats.slab_bytes, stats.slots) == (0, 0, 0), stats
            assert stats.cached_bytes <= CACHED_SLAB_BYTES
            assert backend.bytes_in_use(device) == 0


def test_disabled_cache_destroys_empty_slabs(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = slab_env(cache_mode=tw.CacheMode.DISABLED)
    tensor = env.empty((KIB,), np.uint8, device)
    buffer = tw.buffer_of(tensor)[0]
    del tensor
    gc.collect()
    assert any(b is buffer for b in destroyed_buffers)
    assert slabs_of(env, device).stats().cached_bytes == 0


def test_slots_freed_from_other_threads(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    backend, slabs = tw.backend_of(env), slabs_of(env, device)
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(30):
                mine = empties(env, device, int(rng.integers(1, 40)), int(rng.integers(1, 3000)))
                places = {(id(b), o) for b, o in map(tw.buffer_of, mine)}
                assert len(places) == len(mine), "two live tensors in one slot"

                del mine
        except BaseException as exc:
            errors.append(exc)

    handed = empties(env, device, 200, KIB)
    box = [handed]
    del handed
    dropper = threading.Thread(target=lambda: (box.clear(), gc.collect()))
    workers = [threading.Thread(target=churn, args=(k,)) for k in range(3)]
    for thread in [dropper, *workers]:
        thread.start()
    for thread in [dropper, *workers]:
        thread.join(60)
    assert not errors, errors
    gc.collect()
    stats = slabs.stats()
    assert (stats.slabs, stats.slots) == (0, 0), stats
    assert backend.bytes_in_use(device) == 0


def test_slab_max_zero_gives_every_tensor_its_buffer(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env(slab_max=0)
    tensors = empties(env, device, 3, KIB)
    assert [tw.buffer_of(t)[1] for t in tensors] == [0, 0, 0]
    assert len({id(tw.buffer_of(t)[0]) for t in tensors}) == 3
    assert tw.backend_of(env).context(device).slabs is None


def test_host_accessible_memory_is_never_in_a_slab(
    slab_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = slab_env()
    host_devices = [
        d
        for d in env.devices()
        if d.memory is tf.MemoryKind.HOST_ACCESSIBLE and d.index == device.index
    ]
    if not host_devices:
        pytest.skip(f"{device} has no host-accessible memory")
    tensors = empties(env, host_devices[0], 2, KIB)
    assert [tw.buffer_of(t)[1] for t in tensors] == [0, 0]
    assert tw.buffer_of(tensors[0])[0] is not tw.buffer_of(tensors[1])[0]


@pytest.mark.parametrize("slab_max", [-1, SLAB_BYTES // 4 + 1])
def test_slab_max_is_validated(slab_max: int) -> None:
    with pytest.raises(ValueError, match="slab_max"):
        tw.ContextOptions(slab_max=slab_max)


CLOSE_CHILD = """
import gc, json, sys
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw

index = int(sys.argv[1])
report = {}
env = tf.Environment()
device = env.device(f"webgpu:{index}")
kept = [env.from_numpy(np.arange(256, dtype=np.uint8), device) for _ in range(8)]
env.close()
try:
    kept[0].numpy()
    report["after close"] = None
except tf.ClosedError:
    report["after close"] = "ClosedError"
del kept
gc.collect()
env = tf.Environment()
device = env.device(f"webgpu:{index}")
lost = [env.from_numpy(np.arange(256, dtype=np.uint8), device) for _ in range(8)]
tw.backend_of(env).context(device).gpu.destroy()
del lost
gc.collect()
fresh = env.from_numpy(np.arange(256, dtype=np.uint8), device)
report["fresh after loss"] = fresh.numpy().tolist() == list(range(256))
del fresh
env.close()
print(json.dumps(report))
"""


def test_slabs_go_with_their_context(run_child: Callable[..., Any], webgpu_index: int) -> None:
    """Tensors that outlive their context's close or its device free their slots
    without touching a destroyed buffer (in a child: that would abort)."""
    report = run_child(CLOSE_CHILD, str(webgpu_index)).report()
    assert report == {"after close": "ClosedError", "fresh after loss": True}
