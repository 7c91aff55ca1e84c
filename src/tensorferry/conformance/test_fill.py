"""Filling tensors on the device: ``env.zeros``, ``env.fill`` and the native Filler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import (
    assert_bytes,
    assert_tensor_bytes,
    random_array,
    read,
    require_filler,
)

ZERO_DTYPES = ["bool", "uint8", "int16", "float16", "float32", "complex128", "longdouble"]

FILL_VALUES = {
    "float32-1.5": (np.float32, 1.5),
    "float64-nan": (np.float64, float("nan")),
    "float16-neg-inf": (np.float16, float("-inf")),
    "int16--3": (np.int16, -3),
    "uint8-0xab": (np.uint8, 0xAB),
    "uint32-0xdeadbeef": (np.uint32, 0xDEADBEEF),
    "int64-big": (np.int64, 2**62 + 12345),
    "bool-true": (np.bool_, True),
    "complex64": (np.complex64, 1.25 - 2j),
}


def assert_all_equal(actual: np.ndarray[Any, Any], value: object, what: str) -> None:
    """Assert every element equals ``value`` converted to the array's dtype (NaN == NaN)."""
    expected = np.full(actual.shape, value, dtype=actual.dtype)
    assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind in "fc"), (
        f"{what}: expected every element to be {expected.reshape(-1)[:1]}, got {actual}"
    )


@pytest.mark.parametrize("dtype", ZERO_DTYPES)
def test_zeros(tensorferry_env: tf.Environment, tensorferry_device: tf.Device, dtype: str) -> None:
    """``env.zeros`` on the device gives zeros of the right shape and dtype."""
    tensor = tensorferry_env.zeros((5, 3), dtype, tensorferry_device)
    assert (tensor.device, tensor.shape, tensor.dtype) == (
        tensorferry_device,
        (5, 3),
        np.dtype(dtype),
    )
    assert_all_equal(read(tensor), 0, f"zeros on {tensorferry_device}")


@pytest.mark.parametrize(("dtype", "value"), FILL_VALUES.values(), ids=FILL_VALUES.keys())
def test_fill_whole_tensor(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, dtype: type, value: object
) -> None:
    """``env.fill`` sets every element, with the element's bytes in the right order."""
    env = tensorferry_env
    tensor = env.from_numpy(random_array((3, 7), dtype, seed=70), tensorferry_device)
    env.fill(tensor, value)
    result = read(tensor)
    assert_all_equal(result, value, f"fill on {tensorferry_device}")
    assert_bytes(result[0, 0], np.array(value, dtype=dtype), "one element's bytes")


@pytest.mark.parametrize("shape", [(), (0,), (4, 0)], ids=["0d", "empty", "empty-4x0"])
def test_fill_0d_and_empty(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, shape: tuple[int, ...]
) -> None:
    """0-d tensors fill their one element; empty tensors fill without error."""
    env = tensorferry_env
    tensor = env.from_numpy(random_array(shape, np.int32, seed=71), tensorferry_device)
    env.fill(tensor, 7)
    assert_all_equal(read(tensor), 7, f"fill on {tensorferry_device}")


def test_fill_views_changes_only_the_views(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """Filling views at odd byte offsets and rows leaves every other byte alone."""
    env = tensorferry_env
    data = random_array((8,), np.float32, seed=72)  # 32 bytes
    rows = random_array((6, 3), np.int16, seed=73)
    tensor = env.from_numpy(data, tensorferry_device)
    table = env.from_numpy(rows, tensorferry_device)
    env.fill(tensor.view(np.uint8)[3:10], 0xAB)
    env.fill(tensor.view(np.uint8)[17:18], 1)
    env.fill(tensor.view(np.uint8)[21:31], 0)
    env.fill(table[2:5], -2)
    env.fill(table[5], 9)
    expected = data.copy()
    expected.view(np.uint8)[3:10] = 0xAB
    expected.view(np.uint8)[17] = 1
    expected.view(np.uint8)[21:31] = 0
    expected_rows = rows.copy()
    expected_rows[2:5] = -2
    expected_rows[5] = 9
    assert_tensor_bytes(tensor, expected, f"storage on {tensorferry_device}")
    assert_tensor_bytes(table, expected_rows, f"rows on {tensorferry_device}")


def test_native_filler(tensorferry_env: tf.Environment, tensorferry_device: tf.Device) -> None:
    """A backend with the Filler capability repeats one element's bytes over a view
    (odd offsets, multi-byte elements, empty views) and touches nothing else."""
    env = tensorferry_env
    filler = require_filler(env, tensorferry_device)
    data = random_array((32,), np.uint8, seed=74)
    words = random_array((8,), np.int32, seed=75)
    tensor = env.from_numpy(data, tensorferry_device)
    table = env.from_numpy(words, tensorferry_device)
    filler.fill(tensor[3:10], b"\xab")
    filler.fill(tensor[20:20], b"\x01")
    word = np.array(0x01020304, dtype=np.int32)
    filler.fill(table[1:6], word.tobytes())
    filler.fill(table[7:8].view(np.uint8)[1:3], b"\x5a")
    expected = data.copy()
    expected[3:10] = 0xAB
    expected_words = words.copy()
    expected_words[1:6] = word
    expected_words[7:8].view(np.uint8)[1:3] = 0x5A
    assert_tensor_bytes(tensor, expected, f"storage on {tensorferry_device}")
    assert_tensor_bytes(table, expected_words, f"int32 storage on {tensorferry_device}")


def test_fill_rejects_values_that_do_not_convert(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """A value that is not a scalar of the dtype raises ValueError; nothing changes."""
    env = tensorferry_env
    data = random_array((4,), np.float32, seed=76)
    tensor = env.from_numpy(data, tensorferry_device)
    with pytest.raises(ValueError, match="cannot convert"):
        env.fill(tensor, "not a number")
    with pytest.raises(ValueError, match="scalar"):
        env.fill(tensor, [1.0, 2.0, 3.0, 4.0])
    assert_tensor_bytes(tensor, data, f"tensor on {tensorferry_device} after refused fills")


def test_fill_read_only_tensor(tensorferry_env: tf.Environment) -> None:
    """Filling a read-only host tensor raises InvalidArrayError (a ValueError) and
    leaves the array alone."""
    array = random_array((6,), np.int64, seed=77)
    array.flags.writeable = False
    before = array.copy()
    tensor = tensorferry_env.from_numpy(array, copy=False)
    with pytest.raises(tf.InvalidArrayError, match="read-only") as caught:
        tensorferry_env.fill(tensor, 1)
    assert isinstance(caught.value, ValueError)
    assert_bytes(array, before, "read-only array")
