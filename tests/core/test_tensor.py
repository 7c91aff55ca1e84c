"""Tensor: shaped, typed views of backend storage; dtypes; zero-size tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tensorferry import (
    HOST,
    Environment,
    HostStorage,
    InvalidArrayError,
    Tensor,
    UnsupportedDtypeError,
)


def _ownerless(array: npt.NDArray[Any]) -> Tensor:
    return Tensor(HostStorage.wrap(array), array.shape, array.dtype)


@pytest.fixture
def grid(env: Environment) -> Tensor:
    """A 4 x 6 float32 tensor holding 0..23."""
    return env.from_numpy(np.arange(24, dtype=np.float32).reshape(4, 6))


# construction --------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(4, 6),
        np.zeros((0, 3), np.int16),
        np.array(5, np.int64),
        np.zeros(3, np.dtype([("a", "u1"), ("b", "<f8")])),
    ],
    ids=["2d", "empty", "0d", "structured"],
)
@pytest.mark.parametrize("writable", [None, False, True])
def test_wrapped_arrays_match_a_checked_tensor(
    env: Environment, array: npt.NDArray[Any], writable: bool | None
) -> None:
    """The host tensors the environment wraps without re-checking (``Tensor._whole``,
    for from_numpy and to_numpy's ``out``) equal what ``Tensor(...)`` builds."""
    wrapped = env._wrap(array, writable=writable)
    checked = Tensor(HostStorage.wrap(array, writable=writable), array.shape, array.dtype, 0, env)
    for field in ("shape", "dtype", "offset", "owner", "nbytes", "writable", "device"):
        assert getattr(wrapped, field) == getattr(checked, field), field
    assert type(wrapped.shape) is tuple
    assert all(type(d) is int for d in wrapped.shape)
    np.testing.assert_array_equal(wrapped.host_array(), array)


def test_wrapping_refuses_what_tensors_cannot_hold(env: Environment) -> None:
    """The dtype check stays in front of the unchecked construction."""
    with pytest.raises(UnsupportedDtypeError):
        env.from_numpy(np.array([object()]), copy=False)
    with pytest.raises(InvalidArrayError):
        env.from_numpy(np.zeros((4, 4))[:, 1], copy=False)


def test_attributes(grid: Tensor) -> None:
    assert grid.device == HOST
    assert grid.shape == (4, 6)
    assert grid.dtype == np.float32
    assert (grid.size, grid.ndim, grid.nbytes, len(grid)) == (24, 2, 96, 4)
    assert grid.offset == 0
    assert grid.writable
    assert repr(grid) == "Tensor(device=cpu, shape=(4, 6), dtype=float32, offset=0)"


def test_shape_and_dtype_are_normalised() -> None:
    tensor = Tensor(HostStorage.allocate(24), [np.int64(2), 3], "<i4")
    assert tensor.shape == (2, 3)
    assert all(type(d) is int for d in tensor.shape)
    assert tensor.dtype == np.dtype(np.int32)
    assert Tensor(HostStorage.allocate(8), 2, "f4").shape == (2,)


@pytest.mark.parametrize(
    ("shape", "offset"), [((3,), 0), ((2,), 4), ((0,), 9), ((1,), -1)], ids=str
)
def test_view_must_fit_in_storage(shape: tuple[int, ...], offset: int) -> None:
    with pytest.raises(ValueError, match="does not fit in storage of 8 bytes"):
        Tensor(HostStorage.allocate(8), shape, np.float32, offset)


def test_views_up_to_the_end_of_storage_fit() -> None:
    assert Tensor(HostStorage.allocate(8), (1,), np.float32, 4).offset == 4
    assert Tensor(HostStorage.allocate(8), (0,), np.float32, 8).nbytes == 0


def test_negative_dimension_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        Tensor(HostStorage.allocate(8), (-1, 2), np.float32)


def test_non_integer_dimension_is_rejected() -> None:
    with pytest.raises(TypeError, match="sequence of integers"):
        Tensor(HostStorage.allocate(8), (2.0,), np.float32)


# views along the first axis -------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 3, -1, -4, np.int64(2)], ids=repr)
def test_integer_index_drops_the_first_axis(grid: Tensor, index: int) -> None:
    row = grid[index]
    assert row.shape == (6,)
    assert row.offset == (index % 4) * 6 * 4
    assert row.storage is grid.storage
    np.testing.assert_array_equal(row.numpy(), grid.numpy()[index])


@pytest.mark.parametrize("index", [4, -5, 100])
def test_integer_index_out_of_range(grid: Tensor, index: int) -> None:
    with pytest.raises(IndexError, match=f"index {index} is out of range .* length 4"):
        grid[index]


@pytest.mark.parametrize(
    "key",
    [slice(1, 3), slice(None), slice(-3, None), slice(None, -1), slice(2, 100), slice(3, 1)],
    ids=str,
)
def test_slice_keeps_the_first_axis(grid: Tensor, key: slice) -> None:
    expected = grid.numpy()[key]
    view = grid[key]
    assert view.shape == expected.shape
    assert view.storage is grid.storage
    np.testing.assert_array_equal(view.numpy(), expected)


def test_slice_byte_offset(grid: Tensor) -> None:
    assert grid[1:3].offset == 24
    assert grid[1:3][1].offset == grid[2].offset == 48
    assert grid[2][3:].offset == 48 + 12
    assert grid[4:].offset == 96
    assert grid[4:].nbytes == 0


@pytest.mark.parametrize("key", [slice(None, None, 2), slice(None, None, -1), slice(3, 0, -1)])
def test_slice_with_step_other_than_one_raises(grid: Tensor, key: slice) -> None:
    with pytest.raises(IndexError, match="only contiguous slices"):
        grid[key]


@pytest.mark.parametrize("key", [True, False, np.bool_(True)], ids=repr)
def test_bool_is_not_an_index(grid: Tensor, key: object) -> None:
    with pytest.raises(TypeError, match="a bool is not an index"):
        grid[key]  # type: ignore[index]


@pytest.mark.parametrize("shape", [True, (2, False), (np.bool_(True),)], ids=repr)
def test_bool_is_not_a_dimension(shape: Any) -> None:
    with pytest.raises(TypeError, match="a bool is not a dimension"):
        Tensor(HostStorage.allocate(8), shape, np.uint8)


@pytest.mark.parametrize(
    "shape", [(2**63,), (2**62, 2**62), (2**40, 2**40, 0), (0, 2**64)], ids=str
)
def test_shapes_numpy_cannot_describe_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="more elements than numpy can index"):
        Tensor(HostStorage.allocate(8), shape, np.uint8)


@pytest.mark.parametrize("key", [1.0, "1", (0, 1), Ellipsis, None], ids=repr)
def test_other_keys_raise_type_error(grid: Tensor, key: object) -> None:
    with pytest.raises(TypeError, match="int or a slice"):
        grid[key]  # type: ignore[index]


def test_zero_dimensional_tensor_cannot_be_indexed(env: Environment) -> None:
    scalar = env.from_numpy(np.float64(1.5))
    assert scalar.shape == ()
    with pytest.raises(IndexError, match="0-d"):
        scalar[0]
    with pytest.raises(TypeError, match="0-d"):
        len(scalar)


def test_views_write_through_to_the_parent(env: Environment, grid: Tensor) -> None:
    env.fill(grid[1:3], -1)
    env.copy_tensor(env.from_numpy(np.full(6, 7, np.float32)), grid[3])
    expected = np.arange(24, dtype=np.float32).reshape(4, 6)
    expected[1:3] = -1
    expected[3] = 7
    np.testing.assert_array_equal(grid.numpy(), expected)


# reshape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shape"),
    [
        ((6, 4), (6, 4)),
        (((6, 4),), (6, 4)),
        (([2, 3, 4],), (2, 3, 4)),
        ((24,), (24,)),
        ((-1,), (24,)),
        ((2, -1, 3), (2, 4, 3)),
        (((-1, 8),), (3, 8)),
        ((1, 24, 1), (1, 24, 1)),
    ],
    ids=str,
)
def test_reshape(grid: Tensor, args: tuple[Any, ...], shape: tuple[int, ...]) -> None:
    reshaped = grid.reshape(*args)
    assert reshaped.shape == shape
    assert reshaped.storage is grid.storage
    np.testing.assert_array_equal(reshaped.numpy(), grid.numpy().reshape(shape))


def test_reshape_of_a_view_keeps_its_offset(grid: Tensor) -> None:
    reshaped = grid[2:].reshape(3, 4)
    assert reshaped.offset == 48
    np.testing.assert_array_equal(reshaped.numpy(), np.arange(12, 24).reshape(3, 4))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 5), "expected a shape of 24 elements"),
        ((25,), "expected a shape of 24 elements"),
        ((-1, -1), "only one dimension may be -1"),
        ((-1, 5), "cannot reshape a tensor of 24 elements"),
        ((0, -1), "cannot reshape a tensor of 24 elements"),
        ((-2, -12), "negative"),
    ],
    ids=str,
)
def test_reshape_errors(grid: Tensor, args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grid.reshape(*args)


def test_reshape_zero_size(env: Environment) -> None:
    empty = env.empty((0, 3), np.int16)
    assert empty.reshape(-1).shape == (0,)
    assert empty.reshape(3, 0, 5).shape == (3, 0, 5)
    with pytest.raises(ValueError, match="cannot reshape"):
        empty.reshape(0, -1)


# view(dtype) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.int32, (4, 6)),
        (np.uint8, (4, 24)),
        (np.float16, (4, 12)),
        (np.int64, (4, 3)),
        ("V24", (4, 1)),
    ],
    ids=str,
)
def test_view_rescales_the_last_axis(grid: Tensor, dtype: Any, shape: tuple[int, ...]) -> None:
    viewed = grid.view(dtype)
    assert (viewed.dtype, viewed.shape) == (np.dtype(dtype), shape)
    assert viewed.storage is grid.storage
    np.testing.assert_array_equal(viewed.numpy(), grid.numpy().view(dtype))


def test_view_of_an_offset_view(grid: Tensor) -> None:
    viewed = grid[1:3].view(np.uint16)
    assert (viewed.shape, viewed.offset) == ((2, 12), 24)
    np.testing.assert_array_equal(viewed.numpy(), grid.numpy()[1:3].view(np.uint16))


@pytest.mark.parametrize("dtype", [np.complex128, "V16", "S5"], ids=str)
def test_view_last_axis_must_divide(grid: Tensor, dtype: Any) -> None:
    with pytest.raises(ValueError, match="last axis holds 24 bytes, not a multiple of"):
        grid.view(dtype)


def test_view_of_zero_dimensional_tensor(env: Environment) -> None:
    scalar = env.from_numpy(np.float32(1.0))
    assert int(scalar.view(np.uint32).numpy()) == 0x3F800000
    with pytest.raises(ValueError, match="0-d tensor of float32 can only be viewed"):
        scalar.view(np.float64)


def test_view_rejects_unsupported_dtype(grid: Tensor) -> None:
    with pytest.raises(UnsupportedDtypeError):
        grid.view(object)


# host_array and numpy() -------------------------------------------------------


def test_host_array_shares_memory(env: Environment, grid: Tensor) -> None:
    row = grid[2].host_array()
    assert isinstance(grid.storage, HostStorage)
    assert np.shares_memory(row, grid.storage.array)
    row[:] = 99
    np.testing.assert_array_equal(grid.numpy()[2], np.full(6, 99))
    env.fill(grid[2], 5)
    np.testing.assert_array_equal(row, np.full(6, 5))


def test_host_array_of_read_only_storage_is_read_only(env: Environment) -> None:
    data = np.arange(4)
    data.flags.writeable = False
    tensor = env.from_numpy(data, copy=False)
    assert not tensor.host_array().flags.writeable


def test_host_array_of_storage_marked_read_only_is_read_only() -> None:
    writable = np.arange(4)
    tensor = Tensor(HostStorage.wrap(writable, writable=False), (4,), writable.dtype)
    assert not tensor.writable
    assert not tensor.host_array().flags.writeable
    assert not tensor[1:].host_array().flags.writeable


def test_host_array_needs_host_memory(make_accelerator: Callable[..., Any]) -> None:
    tensor = make_accelerator("acc").tensor(np.arange(3))
    with pytest.raises(TypeError, match=r"host_array\(\) needs a tensor in host memory.*acc:0"):
        tensor.host_array()


def test_numpy_returns_a_copy(grid: Tensor) -> None:
    copy = grid.numpy()
    copy[:] = -1
    assert grid.numpy()[0, 1] == 1


@pytest.fixture(params=["owned", "ownerless"])
def row_tensor(request: pytest.FixtureRequest, env: Environment) -> Tensor:
    """A float32 tensor of 0..5, made by an environment or built directly."""
    data = np.arange(6, dtype=np.float32)
    return env.from_numpy(data) if request.param == "owned" else _ownerless(data)


def test_numpy_into_out(row_tensor: Tensor) -> None:
    out = np.zeros(6, np.float32)
    assert row_tensor.numpy(out=out) is out
    np.testing.assert_array_equal(out, np.arange(6))


def _read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (np.zeros(5, np.float32), r"shape \(5,\) .* expected shape \(6,\)"),
        (np.zeros((1, 6), np.float32), r"shape \(1, 6\) .* expected shape \(6,\)"),
        (np.zeros(6, np.float64), "dtype float64; expected .* dtype float32"),
        (_read_only(np.zeros(6, np.float32)), "read-only"),
        (np.zeros(12, np.float32)[::2], "not C-contiguous"),
        ([0.0] * 6, "must be a numpy.ndarray, got list"),
    ],
    ids=["short", "broadcastable", "dtype", "read-only", "strided", "list"],
)
def test_numpy_out_is_validated(row_tensor: Tensor, out: Any, message: str) -> None:
    with pytest.raises(InvalidArrayError, match=message):
        row_tensor.numpy(out=out)


def test_numpy_of_ownerless_device_tensor_raises(make_accelerator: Callable[..., Any]) -> None:
    tensor = make_accelerator("acc").tensor(np.arange(3))
    with pytest.raises(RuntimeError, match="no owning environment"):
        tensor.numpy()


# dtypes -----------------------------------------------------------------------

FIXED_SIZE_DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.clongdouble,
    ">i4",
    ">f8",
    "datetime64[ns]",
    "datetime64",
    "timedelta64[s]",
    "S5",
    "U3",
    "V6",
    [("a", "<i4"), ("b", "<f8")],
    np.dtype([("a", "u1"), ("b", "<f4")], align=True),
    [("xy", "<f4", (2,)), ("tag", "S3")],
]


def _sample(dtype: np.dtype[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    raw = np.random.default_rng(7).integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize)
    return raw.astype(np.uint8).view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", FIXED_SIZE_DTYPES, ids=str)
def test_every_fixed_size_dtype_round_trips(env: Environment, dtype: Any) -> None:
    data = _sample(np.dtype(dtype), (3, 4))
    tensor = env.from_numpy(data)
    assert tensor.dtype == np.dtype(dtype)
    result = tensor.numpy()
    assert result.dtype == np.dtype(dtype)
    assert result.tobytes() == data.tobytes()
    assert tensor[1:].numpy().tobytes() == data[1:].tobytes()
    copy = env.empty((2, 4), dtype)
    env.copy_tensor(tensor[1:], copy)
    assert copy.numpy().tobytes() == data[1:].tobytes()


@pytest.mark.parametrize(
    "dtype",
    [
        object,
        "O",
        "S",
        "U",
        "V",
        np.dtypes.StringDType(),
        [("a", "<i4"), ("b", "O")],
    ],
    ids=str,
)
def test_dtypes_without_fixed_size_raise(env: Environment, dtype: Any) -> None:
    with pytest.raises(UnsupportedDtypeError, match="fixed"):
        env.empty(3, dtype)
    with pytest.raises(TypeError):
        Tensor(HostStorage.allocate(64), (1,), dtype)


def test_not_a_dtype_raises(env: Environment) -> None:
    with pytest.raises(UnsupportedDtypeError, match="is not a numpy dtype"):
        env.empty(3, "float99")


def test_object_array_is_rejected(env: Environment) -> None:
    data = np.array([1, "a", None], dtype=object)
    with pytest.raises(UnsupportedDtypeError):
        env.from_numpy(data)
    with pytest.raises(UnsupportedDtypeError):
        env.from_numpy(data, copy=False)


def test_subarray_dtype_is_rejected(env: Environment) -> None:
    # numpy itself expands a subarray dtype into the shape; a tensor of one
    # would not survive numpy()/host_array()/zeros().
    with pytest.raises(UnsupportedDtypeError, match="subarray"):
        env.empty(3, ("<f4", (2,)))


# zero-size tensors ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5), (2, 0, 4)], ids=str)
def test_zero_size_tensors(env: Environment, shape: tuple[int, ...]) -> None:
    data = np.zeros(shape, np.float64)
    tensor = env.from_numpy(data)
    assert (tensor.shape, tensor.size, tensor.nbytes) == (shape, 0, 0)
    assert env.to_numpy(tensor).shape == shape
    assert env.zeros(shape, np.int8).numpy().shape == shape
    target = env.empty(shape, np.float64)
    env.copy_tensor(tensor, target)
    env.fill(target, 1.0)
    assert tensor.reshape(-1).shape == (0,)
    assert tensor[0:0].shape == (0, *shape[1:])


def test_zero_size_views_of_a_non_empty_tensor(env: Environment, grid: Tensor) -> None:
    empty = grid[2:2]
    assert (empty.shape, empty.offset) == ((0, 6), 48)
    env.copy_tensor(env.empty((0, 6), np.float32), empty)
    np.testing.assert_array_equal(grid.numpy(), np.arange(24).reshape(4, 6))
