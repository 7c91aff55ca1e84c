"""Views: odd byte offsets, rows, reshapes, and overlapping views of one storage.

Every test reads back the *whole* destination storage, so a backend that
rounds a copy up to its alignment and clobbers a neighbouring byte fails.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import assert_bytes, assert_tensor_bytes, random_array
from tensorferry.conformance.plugin import DevicePair

BYTE_VIEWS = [
    # (source start, destination start, length) in bytes
    (3, 5, 7),
    (1, 2, 1),
    (0, 3, 5),
    (5, 0, 3),
    (2, 6, 13),
    (4, 8, 16),
    (7, 1, 22),
    (0, 29, 7),
    (25, 0, 7),
    (0, 0, 32),
]


@pytest.mark.parametrize(
    ("src_start", "dst_start", "length"),
    BYTE_VIEWS,
    ids=[f"src{s}-dst{d}-len{n}" for s, d, n in BYTE_VIEWS],
)
def test_byte_view_copy_changes_only_the_view(
    tensorferry_env: tf.Environment,
    tensorferry_pair: DevicePair,
    src_start: int,
    dst_start: int,
    length: int,
) -> None:
    """``t.view(np.uint8)[a:b]`` views at odd offsets copy exactly their bytes."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array((8,), np.float32, seed=10)  # 32 bytes
    dst_data = random_array((18,), np.int16, seed=11)  # 36 bytes
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    env.copy_tensor(
        src.view(np.uint8)[src_start : src_start + length],
        dst.view(np.uint8)[dst_start : dst_start + length],
    )
    expected = dst_data.copy()
    expected.view(np.uint8)[dst_start : dst_start + length] = src_data.view(np.uint8)[
        src_start : src_start + length
    ]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")
    assert_tensor_bytes(src, src_data, f"source storage on {pair.src}")


@pytest.mark.parametrize(
    ("dtype", "rows", "src_rows", "dst_rows"),
    [
        (np.uint8, (7, 3), slice(2, 5), slice(1, 4)),
        (np.uint16, (6, 3), slice(1, 4), slice(3, 6)),
        (np.float64, (5, 3), 4, 0),
    ],
    ids=["uint8-3-byte-rows", "uint16-6-byte-rows", "float64-single-row"],
)
def test_row_view_copy_changes_only_the_rows(
    tensorferry_env: tf.Environment,
    tensorferry_pair: DevicePair,
    dtype: type[np.generic],
    rows: tuple[int, int],
    src_rows: slice | int,
    dst_rows: slice | int,
) -> None:
    """Views along the first axis (``t[i:j]`` and ``t[i]``) copy their rows only."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array(rows, dtype, seed=12)
    dst_data = random_array(rows, dtype, seed=13)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    env.copy_tensor(src[src_rows], dst[dst_rows])
    expected = dst_data.copy()
    expected[dst_rows] = src_data[src_rows]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")


def test_reshaped_views(tensorferry_env: tf.Environment, tensorferry_pair: DevicePair) -> None:
    """Reshapes share storage: rows of a reshaped view land at the right bytes."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array((2, 3, 4), np.float32, seed=14)
    dst_data = random_array((30,), np.float32, seed=15)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    source_view = src.reshape(4, 6)[1:3]  # 48 bytes at byte 24
    destination_view = dst[5:17].reshape(2, -1)  # 48 bytes at byte 20
    assert source_view.shape == destination_view.shape == (2, 6)
    env.copy_tensor(source_view, destination_view)
    expected = dst_data.copy()
    expected[5:17] = src_data.reshape(-1)[6:18]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")
    assert_tensor_bytes(destination_view, src_data.reshape(4, 6)[1:3], "destination view")


def test_dtype_views(tensorferry_env: tf.Environment, tensorferry_pair: DevicePair) -> None:
    """``Tensor.view(dtype)`` reinterprets bytes on both sides of a copy."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array((4,), np.float64, seed=16)
    dst_data = random_array((3, 4), np.int32, seed=17)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    env.copy_tensor(src.view(np.uint16)[3:11], dst[1].view(np.uint16))
    expected = dst_data.copy()
    expected[1].view(np.uint16)[:] = src_data.view(np.uint16)[3:11]
    assert_tensor_bytes(dst, expected, f"destination storage on {pair.dst}")


OVERLAPS = {
    # name: [(source start, destination start, length), ...] in one batch, one storage
    "forward": [(0, 5, 16)],
    "backward": [(10, 4, 16)],
    "onto-itself": [(3, 3, 9)],
    "odd-neighbours": [(1, 2, 1), (2, 3, 1), (3, 4, 1)],
    "chain": [(0, 4, 8), (4, 8, 8), (8, 1, 8)],
    "swap-via-later-pairs": [(0, 32, 4), (4, 0, 4), (32, 4, 4)],
}


@pytest.mark.parametrize("copies", OVERLAPS.values(), ids=OVERLAPS.keys())
def test_overlapping_views_in_one_storage(
    tensorferry_env: tf.Environment,
    tensorferry_device: tf.Device,
    copies: list[tuple[int, int, int]],
) -> None:
    """Overlapping source and destination views of one storage, in one batch, give
    what copying the pairs one after another (each like ``memmove``) gives."""
    env = tensorferry_env
    data = random_array((40,), np.uint8, seed=18)
    base = env.from_numpy(data, tensorferry_device)
    env.copy_tensors(
        [base[s : s + n] for s, _, n in copies], [base[d : d + n] for _, d, n in copies]
    )
    expected = data.copy()
    for s, d, n in copies:
        expected[d : d + n] = expected[s : s + n].copy()
    assert_tensor_bytes(base, expected, f"storage on {tensorferry_device}")


def test_views_of_one_storage_on_both_sides_of_a_pair(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """Several views of the same source storage into views of the same destination
    storage, in one batch, each land at their own offset."""
    env, pair = tensorferry_env, tensorferry_pair
    src_data = random_array((24,), np.uint8, seed=19)
    dst_data = random_array((24,), np.uint8, seed=20)
    src = env.from_numpy(src_data, pair.src)
    dst = env.from_numpy(dst_data, pair.dst)
    spans = [(0, 21, 3), (5, 1, 5), (13, 9, 7), (21, 17, 3)]
    env.copy_tensors([src[s : s + n] for s, _, n in spans], [dst[d : d + n] for _, d, n in spans])
    expected = dst_data.copy()
    for s, d, n in spans:
        expected[d : d + n] = src_data[s : s + n]
    assert_bytes(dst.numpy(), expected, f"destination storage on {pair.dst}")
