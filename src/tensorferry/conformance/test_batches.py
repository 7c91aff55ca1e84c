"""Batches: many tensors in one call, order dependencies, mixed device pairs, async."""

from __future__ import annotations

import numpy as np

import tensorferry as tf
from tensorferry.conformance._support import (
    Array,
    assert_bytes,
    assert_tensor_bytes,
    random_array,
    read,
    require_async,
    unlike,
)
from tensorferry.conformance.plugin import DevicePair

COUNT = 1000


def test_thousand_small_tensors_in_one_batch(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """1000 separately allocated tensors of 0 to 12 bytes (and a few dtypes) cross in
    one ``copy_tensors`` call; uploads and downloads are batches too."""
    env, pair = tensorferry_env, tensorferry_pair
    dtypes = [np.uint8, np.int16, np.float32]
    shapes = [((i % 13) // np.dtype(dtypes[i % 3]).itemsize,) for i in range(COUNT)]
    host = [random_array(s, dtypes[i % 3], seed=i) for i, s in enumerate(shapes)]
    srcs = [env.empty(a.shape, a.dtype, pair.src) for a in host]
    dsts = [env.empty(a.shape, a.dtype, pair.dst) for a in host]
    flipped = [unlike(a) for a in host]
    env.copy_tensors([env.from_numpy(a, copy=False) for a in host + flipped], [*srcs, *dsts])
    env.copy_tensors(srcs, dsts)
    back = [env.empty(a.shape, a.dtype) for a in host]
    env.copy_tensors(dsts, back)
    for i, (tensor, expected) in enumerate(zip(back, host, strict=True)):
        assert_bytes(tensor.host_array(), expected, f"tensor {i} of {COUNT} on {pair.dst}")


def test_thousand_views_in_one_batch(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """1000 views of 1 to 5 bytes at odd offsets of one storage, in one batch: every
    view lands, and the bytes between the views stay as they were."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array((COUNT * 8,), np.uint8, seed=30)
    dst_data = random_array((COUNT * 8,), np.uint8, seed=31)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    spans = [(i * 8 + i % 3, i * 8 + (i + 1) % 3, 1 + i % 5) for i in range(COUNT)]
    env.copy_tensors([src[s : s + n] for s, _, n in spans], [dst[d : d + n] for _, d, n in spans])
    expected = dst_data.copy()
    for s, d, n in spans:
        expected[d : d + n] = src_data[s : s + n]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")


def _hazard_batch(
    env: tf.Environment, pair: DevicePair
) -> tuple[list[tf.Tensor], list[tf.Tensor], dict[str, tuple[tf.Tensor, Array]]]:
    """A batch whose pairs depend on each other through both devices.

    Returns the sources, the destinations and, by name, each tensor to check with
    the bytes it must hold once the batch has run as a loop would run it.
    """
    a, b, c, d = (random_array((16,), np.uint8, seed=40 + i) for i in range(4))
    s = env.from_numpy(random_array((16,), np.uint8, seed=44), pair.src)
    t = env.from_numpy(random_array((16,), np.uint8, seed=45), pair.dst)
    h1, h2, h3 = (env.zeros((16,), np.uint8) for _ in range(3))
    steps = [
        (env.from_numpy(a), s),  # s = a
        (s, t),  # t = a: reads what the batch just wrote
        (t, h1),  # h1 = a
        (env.from_numpy(b), s),  # s = b: overwrites what pair 1 read
        (s, t),  # t = b
        (t, h2),  # h2 = b
        (env.from_numpy(c), t),  # t = c: a later write to t wins
        (env.from_numpy(d[:4]), t[2:6]),  # t = c[:2] d[:4] c[6:]
        (t, h3),  # h3 sees both writes
    ]
    after_partial = c.copy()
    after_partial[2:6] = d[:4]
    checks = {"h1": (h1, a), "h2": (h2, b), "h3": (h3, after_partial), "s": (s, b)}
    checks["t"] = (t, after_partial)
    return [p[0] for p in steps], [p[1] for p in steps], checks


def test_batch_with_order_dependencies(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """Within one call, a pair sees every earlier pair's writes, an earlier pair is
    not disturbed by later writes to what it read, and the last write wins."""
    srcs, dsts, checks = _hazard_batch(tensorferry_env, tensorferry_pair)
    tensorferry_env.copy_tensors(srcs, dsts)
    for name, (tensor, expected) in checks.items():
        assert_tensor_bytes(tensor, expected, f"{name} after the batch")


def test_async_batch_equals_sync(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """``copy_tensors_async`` then ``wait()`` gives what ``copy_tensors`` gives."""
    srcs, dsts, checks = _hazard_batch(tensorferry_env, tensorferry_pair)
    handle = tensorferry_env.copy_tensors_async(srcs, dsts)
    assert isinstance(handle, tf.TransferHandle)
    handle.wait()
    assert handle.done()
    handle.wait(timeout=0)  # waiting again returns at once
    for name, (tensor, expected) in checks.items():
        assert_tensor_bytes(tensor, expected, f"{name} after the async batch")


def test_async_large_tensor(tensorferry_env: tf.Environment, tensorferry_pair: DevicePair) -> None:
    """An async copy of a large tensor has landed when ``wait()`` returns."""
    env, pair = tensorferry_env, tensorferry_pair
    data = random_array((1 << 20,), np.float32, seed=46)
    src = env.from_numpy(data, pair.src)
    dst = env.zeros(data.shape, data.dtype, pair.dst)
    env.copy_tensors_async([src], [dst]).wait(timeout=120)
    assert_tensor_bytes(dst, data, f"destination on {pair.dst}")


def test_native_async_transfer(
    tensorferry_env: tf.Environment, tensorferry_direct_pair: DevicePair
) -> None:
    """A transfer with the AsyncDataTransfer capability keeps batch order, and its
    handle reports completion."""
    env, pair = tensorferry_env, tensorferry_direct_pair
    transfer = require_async(env, pair)
    a, b = (random_array((3, 5), np.int16, seed=47 + i) for i in range(2))
    src_a, src_b = env.from_numpy(a, pair.src), env.from_numpy(b, pair.src)
    dst = env.zeros((3, 5), np.int16, pair.dst)
    single = env.zeros((5,), np.int16, pair.dst)
    handle = transfer.copy_tensors_async([(src_a, dst), (src_b[1:], dst[1:]), (src_a[2], single)])
    assert isinstance(handle, tf.TransferHandle)
    handle.wait(timeout=60)
    assert handle.done()
    expected = b.copy()
    expected[0] = a[0]
    assert_tensor_bytes(dst, expected, f"destination on {pair.dst}")
    assert_tensor_bytes(single, a[2], f"single row on {pair.dst}")


def test_direct_transfer_batch(
    tensorferry_env: tf.Environment, tensorferry_direct_pair: DevicePair
) -> None:
    """The transfer itself (not only the manager) copies a batch in order, and an
    empty batch is a no-op."""
    env, pair = tensorferry_env, tensorferry_direct_pair
    transfer = env.data_transfer_manager.get_data_transfer(pair.src, pair.dst)
    assert transfer is not None
    a, b = (random_array((9,), np.uint8, seed=49 + i) for i in range(2))
    src_a, src_b = env.from_numpy(a, pair.src), env.from_numpy(b, pair.src)
    dst_data = random_array((9,), np.uint8, seed=51)
    dst = env.from_numpy(dst_data, pair.dst)
    transfer.copy_tensors([])
    assert_tensor_bytes(dst, dst_data, "destination after an empty batch")
    transfer.copy_tensors([(src_a[1:8], dst[1:8]), (src_b[3:5], dst[2:4])])
    expected = dst_data.copy()
    expected[1:8] = a[1:8]
    expected[2:4] = b[3:5]
    assert_tensor_bytes(dst, expected, f"destination on {pair.dst}")


def _all_devices(env: tf.Environment) -> list[tf.Device]:
    return list(dict.fromkeys([tf.HOST, *env.devices()]))


def test_chain_through_every_device_in_one_batch(tensorferry_env: tf.Environment) -> None:
    """host -> every device -> back, forth and back again, as one batch: each hop
    reads what the previous hop wrote, whatever transfer (or route) each uses."""
    env = tensorferry_env
    devices = _all_devices(env)
    hops = devices + devices[::-1] + devices
    data = random_array((5, 3), np.float32, seed=52)
    tensors = [env.zeros(data.shape, data.dtype, d) for d in hops]
    result = env.zeros(data.shape, data.dtype)
    env.copy_tensors([env.from_numpy(data), *tensors], [*tensors, result])
    assert_bytes(result.host_array(), data, f"after the chain {' -> '.join(map(str, hops))}")
    for device, tensor in zip(hops, tensors, strict=True):
        assert_tensor_bytes(tensor, data, f"hop on {device}")


def test_every_pair_in_one_batch(tensorferry_env: tf.Environment) -> None:
    """One batch with a copy for every device pair (direct and routed) and a
    read-back of each destination: the manager groups the batch per transfer and
    still keeps each read after its write."""
    env = tensorferry_env
    devices = _all_devices(env)
    pairs = [(s, d) for s in devices for d in devices]
    data = [random_array((i % 7 + 1,), np.uint16, seed=60 + i) for i in range(len(pairs))]
    srcs = [env.from_numpy(a, s) for a, (s, _) in zip(data, pairs, strict=True)]
    dsts = [env.zeros(a.shape, a.dtype, d) for a, (_, d) in zip(data, pairs, strict=True)]
    backs = [env.zeros(a.shape, a.dtype) for a in data]
    env.copy_tensors([*srcs, *dsts], [*dsts, *backs])
    for (s, d), back, expected in zip(pairs, backs, data, strict=True):
        assert_bytes(read(back), expected, f"{s}->{d} read back in the same batch")
