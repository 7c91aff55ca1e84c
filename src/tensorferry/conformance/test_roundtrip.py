"""Whole tensors crossing every device pair: every dtype, every awkward shape, big ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import (
    NUMERIC_DTYPES,
    Array,
    assert_bytes,
    assert_tensor_bytes,
    random_array,
    read,
    unlike,
)
from tensorferry.conformance.plugin import DevicePair

MIB = 1 << 20

OTHER_FIXED_SIZE_DTYPES = {
    "datetime64[ns]": np.dtype("datetime64[ns]"),
    "timedelta64[s]": np.dtype("timedelta64[s]"),
    "bytes5": np.dtype("S5"),
    "void3": np.dtype("V3"),
    "big-endian-int32": np.dtype(">i4"),
    "struct-i2-f8": np.dtype([("a", "<i2"), ("b", "<f8")]),
}


def copy_across(env: tf.Environment, pair: DevicePair, data: Array) -> None:
    """Upload ``data`` to the pair's source, copy it to the destination, check both."""
    src = env.from_numpy(data, pair.src)
    dst = env.from_numpy(unlike(data), pair.dst)
    assert (src.device, dst.device) == (pair.src, pair.dst)
    env.copy_tensor(src, dst)
    assert_tensor_bytes(dst, data, f"destination on {pair.dst}")
    assert_tensor_bytes(src, data, f"source on {pair.src} after the copy")


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_numeric_dtype_round_trip(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair, dtype: str
) -> None:
    """Every numeric dtype and bool crosses byte-exact (NaN payloads included)."""
    copy_across(tensorferry_env, tensorferry_pair, random_array((3, 5), dtype, seed=1))


@pytest.mark.parametrize(
    "dtype", OTHER_FIXED_SIZE_DTYPES.values(), ids=OTHER_FIXED_SIZE_DTYPES.keys()
)
def test_other_fixed_size_dtype_round_trip(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair, dtype: np.dtype[Any]
) -> None:
    """Datetimes, sized bytes, voids, big-endian and packed structured dtypes cross too."""
    copy_across(tensorferry_env, tensorferry_pair, random_array((7,), dtype, seed=2))


@pytest.mark.parametrize(
    "shape",
    [(), (0,), (0, 3), (3, 0, 2), (1,), (1, 1, 1), (2, 3, 4)],
    ids=["0d", "empty", "empty-0x3", "empty-3x0x2", "one", "one-1x1x1", "2x3x4"],
)
def test_shape_round_trip(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair, shape: tuple[int, ...]
) -> None:
    """0-d, empty and single-element tensors keep their shape and bytes."""
    copy_across(tensorferry_env, tensorferry_pair, random_array(shape, np.float32, seed=3))


@pytest.mark.parametrize("nbytes", [1, 3, 5, 7])
def test_odd_byte_count_round_trip(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair, nbytes: int
) -> None:
    """Tensors whose byte size is not a multiple of 2, 4 or 8 cross whole."""
    copy_across(tensorferry_env, tensorferry_pair, random_array((nbytes,), np.uint8, seed=nbytes))


def test_large_tensor_round_trip(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """A tensor of more than 8 MiB crosses whole (backends chunk or stage it)."""
    copy_across(tensorferry_env, tensorferry_pair, random_array((2 * MIB + 1,), np.float32, 4))


def test_large_view_at_odd_offsets(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """8 MiB + 5 bytes from offset 1 into offset 3: only the view's bytes change."""
    env, pair = tensorferry_env, tensorferry_pair
    size = 8 * MIB + 5
    src_data = random_array((size + 8,), np.uint8, seed=5)
    dst_data = random_array((size + 8,), np.uint8, seed=6)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    env.copy_tensor(src[1 : 1 + size], dst[3 : 3 + size])
    expected = dst_data.copy()
    expected[3 : 3 + size] = src_data[1 : 1 + size]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_non_contiguous_array_is_copied(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, layout: str
) -> None:
    """from_numpy(copy=True) accepts any layout and stores C-order data."""
    base = random_array((4, 6), np.int32, seed=7)
    array = base[:, ::2] if layout == "strided" else base.T
    assert not array.flags.c_contiguous
    tensor = tensorferry_env.from_numpy(array, tensorferry_device)
    assert tensor.shape == array.shape
    assert_bytes(read(tensor), np.ascontiguousarray(array), f"{layout} array on the device")


def test_empty_tensor_describes_itself(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """env.empty gives a tensor on the device with the shape, dtype and size asked for."""
    tensor = tensorferry_env.empty((4, 3), np.float64, tensorferry_device)
    assert tensor.device == tensorferry_device
    assert (tensor.shape, tensor.dtype, tensor.nbytes) == ((4, 3), np.dtype(np.float64), 96)
    assert tensor.storage.nbytes >= 96
    assert tensor.writable
    assert read(tensor).shape == (4, 3)
