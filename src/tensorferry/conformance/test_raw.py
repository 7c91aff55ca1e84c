"""Device-side bytes checked without the transfer under test (optional RawAccess).

A round trip through one transfer cannot see a bug that is symmetric in both
directions (an upload and a download that both scramble bytes the same way).
These tests read and write device storage through the backend's
:class:`tensorferry.RawAccess` instead, as zarr's store tests bypass the store.
"""

from __future__ import annotations

import numpy as np

import tensorferry as tf
from tensorferry.conformance._support import (
    assert_bytes,
    bytes_of,
    random_array,
    raw_bytes,
    raw_fill,
    read,
    require_async,
    require_raw,
)
from tensorferry.conformance.plugin import DevicePair


def test_upload_lands_byte_exact(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """An upload (whole tensor, and into a view at an odd byte offset) writes exactly
    the source bytes into device memory, and nothing around the view."""
    env, device = tensorferry_env, tensorferry_device
    require_raw(env, device)
    data = random_array((37,), np.float32, seed=500)
    tensor = env.from_numpy(data, device)
    assert_bytes(raw_bytes(env, tensor), bytes_of(data), f"device memory on {device}")
    before = raw_bytes(env, tensor)
    part = random_array((11,), np.uint8, seed=501)
    env.copy_tensor(env.from_numpy(part), tensor.view(np.uint8)[5:16])
    expected = before.copy()
    expected[5:16] = part
    assert_bytes(raw_bytes(env, tensor), expected, f"device memory on {device} after a view")


def test_download_reads_device_bytes(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """A download returns the bytes device memory holds (written without a transfer),
    for the whole tensor and for a view at an odd offset."""
    env, device = tensorferry_env, tensorferry_device
    require_raw(env, device)
    tensor = env.empty((29,), np.int16, device)
    content = random_array((58,), np.uint8, seed=502)
    raw_fill(env, tensor, content)
    assert_bytes(read(tensor), content, f"download from {device}")
    assert_bytes(read(tensor.view(np.uint8)[3:40]), content[3:40], f"view download on {device}")


def test_direct_copy_checked_on_both_sides(
    tensorferry_env: tf.Environment, tensorferry_direct_pair: DevicePair
) -> None:
    """A direct copy between any two devices, with source and destination bytes
    set and checked without any transfer."""
    env, pair = tensorferry_env, tensorferry_direct_pair
    for device in (pair.src, pair.dst):
        require_raw(env, device)
    src = env.empty((64,), np.uint8, pair.src)
    dst = env.empty((64,), np.uint8, pair.dst)
    src_data = random_array((64,), np.uint8, seed=503)
    dst_data = random_array((64,), np.uint8, seed=504)
    raw_fill(env, src, src_data)
    raw_fill(env, dst, dst_data)
    env.copy_tensors([src[1:30], src[40:41]], [dst[7:36], dst[63:64]])
    expected = dst_data.copy()
    expected[7:36] = src_data[1:30]
    expected[63:64] = src_data[40:41]
    assert_bytes(raw_bytes(env, dst), expected, f"destination memory on {pair.dst}")
    assert_bytes(raw_bytes(env, src), src_data, f"source memory on {pair.src}")


def test_fill_lands_byte_exact(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """``env.fill`` and ``env.zeros`` write exactly the element bytes in device memory."""
    env, device = tensorferry_env, tensorferry_device
    require_raw(env, device)
    data = random_array((12,), np.uint32, seed=505)
    tensor = env.from_numpy(data, device)
    env.fill(tensor[2:9], 0x01020304)
    expected = data.copy()
    expected[2:9] = 0x01020304
    assert_bytes(raw_bytes(env, tensor), bytes_of(expected), f"device memory on {device}")
    zeros = env.zeros((5, 3), np.float64, device)
    assert_bytes(raw_bytes(env, zeros), np.zeros(120, np.uint8), f"zeros on {device}")


def test_async_copy_lands_byte_exact(
    tensorferry_env: tf.Environment, tensorferry_direct_pair: DevicePair
) -> None:
    """A native async batch has written device memory once its handle is done."""
    env, pair = tensorferry_env, tensorferry_direct_pair
    transfer = require_async(env, pair)
    require_raw(env, pair.dst)
    data = random_array((1 << 16,), np.uint8, seed=506)
    src = env.from_numpy(data, pair.src)
    dst = env.zeros(data.shape, data.dtype, pair.dst)
    transfer.copy_tensors_async([(src, dst)]).wait(timeout=120)
    assert_bytes(raw_bytes(env, dst), data, f"destination memory on {pair.dst}")
