"""Bad inputs: each raises its documented exception, and no destination changes.

Every exception is checked twice: as the tensorferry class and as the builtin it
subclasses, which is what callers who never import tensorferry catch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import (
    Array,
    assert_bytes,
    assert_tensor_bytes,
    random_array,
    read,
)
from tensorferry.conformance.plugin import DevicePair

MISMATCHES = {
    # name: (source shape, source dtype, destination shape, destination dtype)
    "shape": ((2, 3), np.float32, (3, 2), np.float32),
    "dtype": ((4,), np.float32, (4,), np.int32),
    "byte-size": ((3,), np.float64, (3,), np.float32),
    "element-count": ((5,), np.uint8, (6,), np.uint8),
    "rank": ((6,), np.int16, (1, 6), np.int16),
}


@pytest.mark.parametrize(
    ("src_shape", "src_dtype", "dst_shape", "dst_dtype"), MISMATCHES.values(), ids=MISMATCHES.keys()
)
def test_mismatched_pair(
    tensorferry_env: tf.Environment,
    tensorferry_pair: DevicePair,
    src_shape: tuple[int, ...],
    src_dtype: type,
    dst_shape: tuple[int, ...],
    dst_dtype: type,
) -> None:
    """Shape, dtype or byte size differ: IncompatibleTensorsError (a ValueError)."""
    env, pair = tensorferry_env, tensorferry_pair
    src = env.from_numpy(random_array(src_shape, src_dtype, seed=80), pair.src)
    dst_data = random_array(dst_shape, dst_dtype, seed=81)
    dst = env.from_numpy(dst_data, pair.dst)
    with pytest.raises(tf.IncompatibleTensorsError, match="expected equal shapes and dtypes"):
        env.copy_tensor(src, dst)
    with pytest.raises(ValueError, match="expected equal shapes and dtypes"):
        env.copy_tensors_async([src], [dst])
    assert_tensor_bytes(dst, dst_data, f"destination on {pair.dst}")


def test_source_and_destination_counts_differ(
    tensorferry_env: tf.Environment, tensorferry_pair: DevicePair
) -> None:
    """len(srcs) != len(dsts): IncompatibleTensorsError, and nothing is copied."""
    env, pair = tensorferry_env, tensorferry_pair
    srcs = [env.from_numpy(random_array((4,), np.uint8, seed=82 + i), pair.src) for i in range(2)]
    dst_data = [random_array((4,), np.uint8, seed=84 + i) for i in range(2)]
    dsts = [env.from_numpy(a, pair.dst) for a in dst_data]
    with pytest.raises(tf.IncompatibleTensorsError, match="2 sources and 1 destinations"):
        env.copy_tensors(srcs, dsts[:1])
    with pytest.raises(ValueError, match="1 sources and 2 destinations"):
        env.copy_tensors(srcs[:1], dsts)
    with pytest.raises(ValueError, match="2 sources and 1 destinations"):
        env.copy_tensors_async(srcs, dsts[:1])
    for i, (dst, data) in enumerate(zip(dsts, dst_data, strict=True)):
        assert_tensor_bytes(dst, data, f"destination {i} on {pair.dst}")


LATE_BAD_PAIRS = {
    # name: (exception, builtin it subclasses, call)
    "shape": (tf.IncompatibleTensorsError, ValueError, "sync"),
    "shape-async": (tf.IncompatibleTensorsError, ValueError, "async"),
    "dtype": (tf.IncompatibleTensorsError, ValueError, "sync"),
    "read-only": (tf.InvalidArrayError, ValueError, "sync"),
    "foreign": (tf.ForeignTensorError, ValueError, "sync"),
    "not-a-tensor": (TypeError, TypeError, "sync"),
}


@pytest.mark.parametrize("kind", LATE_BAD_PAIRS.keys())
def test_bad_pair_late_in_batch_copies_nothing(
    tensorferry_env: tf.Environment,
    tensorferry_other_env: tf.Environment,
    tensorferry_pair: DevicePair,
    kind: str,
) -> None:
    """The whole batch is validated before any memory is touched: a bad last pair
    leaves the destinations of the good pairs before it unchanged."""
    env, pair = tensorferry_env, tensorferry_pair
    error, builtin, call = LATE_BAD_PAIRS[kind]
    good_srcs = [env.from_numpy(random_array((5,), np.int16, 86 + i), pair.src) for i in range(3)]
    good_data = [random_array((5,), np.int16, seed=89 + i) for i in range(3)]
    good_dsts = [env.from_numpy(a, pair.dst) for a in good_data]
    bad_src: Any = env.from_numpy(random_array((5,), np.int16, seed=92), pair.src)
    bad_dst_data = random_array((5,), np.int16, seed=93)
    bad_dst: Any = env.from_numpy(bad_dst_data, pair.dst)
    check_bad_dst: Callable[[], Array] = bad_dst.numpy
    if kind.startswith("shape"):
        bad_dst = bad_dst[1:]
    elif kind == "dtype":
        bad_dst = bad_dst.view(np.uint16)
    elif kind == "read-only":
        read_only = bad_dst_data.copy()
        read_only.flags.writeable = False
        bad_dst = env.from_numpy(read_only, copy=False)
        check_bad_dst = read_only.copy
    elif kind == "foreign":
        bad_dst = tensorferry_other_env.from_numpy(bad_dst_data, pair.dst)
        check_bad_dst = bad_dst.numpy
    else:
        bad_src = random_array((5,), np.int16, seed=92)
    copy = env.copy_tensors if call == "sync" else env.copy_tensors_async
    with pytest.raises(error, match="pair 3") as caught:
        copy([*good_srcs, bad_src], [*good_dsts, bad_dst])
    assert isinstance(caught.value, builtin)
    for i, (dst, data) in enumerate(zip(good_dsts, good_data, strict=True)):
        assert_tensor_bytes(dst, data, f"good destination {i} on {pair.dst}")
    assert_bytes(check_bad_dst(), bad_dst_data, "the bad pair's destination")


def test_no_transfer_for_a_pair(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_pair: DevicePair
) -> None:
    """With no transfer registered, a copy raises NoTransferError (a LookupError)
    whose message names both devices, and nothing changes."""
    pair = tensorferry_pair
    env = tensorferry_new_env()
    manager = env.data_transfer_manager
    src = env.from_numpy(random_array((6,), np.float32, seed=94), pair.src)
    dst_data = random_array((6,), np.float32, seed=95)
    dst = env.from_numpy(dst_data, pair.dst)
    transfers = manager.data_transfers
    for transfer in transfers:
        manager.unregister_data_transfer(transfer)
    assert manager.get_data_transfer(pair.src, pair.dst) is None
    with pytest.raises(tf.NoTransferError) as caught:
        env.copy_tensor(src, dst)
    assert isinstance(caught.value, LookupError)
    message = str(caught.value)
    if pair.src == pair.dst:
        assert message.count(str(pair.src)) >= 2, message
    else:
        assert str(pair.src) in message, message
        assert str(pair.dst) in message, message
    for transfer in transfers:
        manager.register_data_transfer(transfer)
    assert_tensor_bytes(dst, dst_data, f"destination on {pair.dst}")


def test_unknown_device(tensorferry_env: tf.Environment, tensorferry_backend: str) -> None:
    """Device strings and devices that name nothing raise UnknownDeviceError (a
    LookupError) naming the devices there are."""
    env, name = tensorferry_env, tensorferry_backend
    devices = list(env.backend(name).devices())
    missing = f"{name}:{max(d.index for d in devices) + 1}"
    with pytest.raises(tf.UnknownDeviceError) as caught:
        env.device(missing)
    assert isinstance(caught.value, LookupError)
    assert str(devices[0]) in str(caught.value), "the message should list the devices there are"
    with pytest.raises(LookupError):
        env.empty((2,), np.float32, missing)
    with pytest.raises(tf.UnknownDeviceError):
        env.from_numpy(np.zeros(2), f"{name}:first")
    with pytest.raises(tf.UnknownDeviceError):
        env.zeros((2,), np.float32, "no-such-backend:0")
    first = devices[0]
    impostor = tf.Device(
        name, first.index, first.type, first.memory, first.vendor_id + 1, first.device_id
    )
    with pytest.raises(tf.UnknownDeviceError):
        env.device(impostor)


def test_foreign_tensors_in_a_copy(
    tensorferry_env: tf.Environment,
    tensorferry_other_env: tf.Environment,
    tensorferry_pair: DevicePair,
) -> None:
    """A tensor of another environment, as source or destination, raises
    ForeignTensorError (a ValueError); neither environment's tensors change."""
    env, other, pair = tensorferry_env, tensorferry_other_env, tensorferry_pair
    local_src = env.from_numpy(random_array((7,), np.uint8, seed=96), pair.src)
    foreign_data = random_array((7,), np.uint8, seed=97)
    foreign_dst = other.from_numpy(foreign_data, pair.dst)
    with pytest.raises(tf.ForeignTensorError, match="another environment"):
        env.copy_tensor(local_src, foreign_dst)
    foreign_src = other.from_numpy(random_array((7,), np.uint8, seed=98), pair.src)
    local_data = random_array((7,), np.uint8, seed=99)
    local_dst = env.from_numpy(local_data, pair.dst)
    with pytest.raises(ValueError, match="another environment"):
        env.copy_tensor(foreign_src, local_dst)
    assert_tensor_bytes(foreign_dst, foreign_data, f"foreign destination on {pair.dst}")
    assert_tensor_bytes(local_dst, local_data, f"local destination on {pair.dst}")


def test_foreign_tensor_fill_and_read(
    tensorferry_env: tf.Environment,
    tensorferry_other_env: tf.Environment,
    tensorferry_device: tf.Device,
) -> None:
    """env.fill and env.to_numpy refuse another environment's tensor."""
    data = random_array((3,), np.float64, seed=100)
    foreign = tensorferry_other_env.from_numpy(data, tensorferry_device)
    with pytest.raises(tf.ForeignTensorError):
        tensorferry_env.fill(foreign, 1.0)
    with pytest.raises(tf.ForeignTensorError):
        tensorferry_env.to_numpy(foreign)
    assert_tensor_bytes(foreign, data, f"foreign tensor on {tensorferry_device}")


def test_tensor_of_a_closed_environment(
    tensorferry_env: tf.Environment,
    tensorferry_new_env: Callable[[], tf.Environment],
    tensorferry_device: tf.Device,
) -> None:
    """After close(), an environment and its tensors raise ClosedError (a
    RuntimeError); another environment refuses them as foreign; device storage
    reports itself released."""
    env, device = tensorferry_env, tensorferry_device
    closed = tensorferry_new_env()
    tensor = closed.from_numpy(random_array((4,), np.int32, seed=101), device)
    host = closed.from_numpy(random_array((4,), np.int32, seed=102))
    closed.close()
    closed.close()  # idempotent
    assert closed.closed
    with pytest.raises(tf.ClosedError) as caught:
        tensor.numpy()
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(tf.ClosedError):
        closed.copy_tensor(host, tensor)
    with pytest.raises(tf.ClosedError):
        closed.fill(tensor, 0)
    with pytest.raises(RuntimeError):
        closed.from_numpy(np.zeros(4, np.int32), device)
    local_data = random_array((4,), np.int32, seed=103)
    local = env.from_numpy(local_data, device)
    with pytest.raises(tf.ForeignTensorError):
        env.copy_tensor(tensor, local)
    assert_tensor_bytes(local, local_data, f"local destination on {device}")
    if not device.is_host:
        assert tensor.storage.closed, (
            f"storage on {device} still reports closed=False after Environment.close(); "
            "closing the environment closes the backend, which must release its storage"
        )


def test_read_only_destination(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """A read-only array shared with copy=False is never written: InvalidArrayError
    (a ValueError), synchronous or not."""
    env = tensorferry_env
    array = random_array((2, 4), np.float32, seed=104)
    array.flags.writeable = False
    before = array.copy()
    dst = env.from_numpy(array, copy=False)
    assert not dst.writable
    src = env.from_numpy(random_array((2, 4), np.float32, seed=105), tensorferry_device)
    with pytest.raises(tf.InvalidArrayError, match="read-only") as caught:
        env.copy_tensor(src, dst)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(tf.InvalidArrayError, match="read-only"):
        env.copy_tensors_async([src[1]], [dst[1]])
    assert_bytes(array, before, "read-only array")


@pytest.mark.parametrize("layout", ["strided", "fortran", "reversed"])
def test_non_contiguous_array_cannot_be_shared(
    tensorferry_env: tf.Environment, layout: str
) -> None:
    """from_numpy(copy=False) refuses arrays that are not C-contiguous."""
    base = random_array((4, 6), np.int16, seed=106)
    array = {"strided": base[:, ::2], "fortran": base.T, "reversed": base[::-1]}[layout]
    with pytest.raises(tf.InvalidArrayError, match="C-contiguous") as caught:
        tensorferry_env.from_numpy(array, copy=False)
    assert isinstance(caught.value, ValueError)


def test_copy_false_shares_host_memory_only(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """copy=False shares the array on the host (writes show through) and raises
    ValueError for any other device."""
    env, device = tensorferry_env, tensorferry_device
    array = random_array((5,), np.uint16, seed=107)
    before = array.copy()
    if device.is_host:
        shared = env.from_numpy(array, device, copy=False)
        env.fill(shared, 3)
        assert_bytes(array, np.full(5, 3, np.uint16), "the shared array after fill")
    else:
        with pytest.raises(ValueError, match="copy=False"):
            env.from_numpy(array, device, copy=False)
        assert_bytes(array, before, "the array")


OUT_ARRAYS: dict[str, Callable[[], Array]] = {
    "read-only": lambda: _read_only(np.full((3, 4), 7, np.int32)),
    "wrong-shape": lambda: np.full((4, 3), 7, np.int32),
    "wrong-dtype": lambda: np.full((3, 4), 7, np.uint32),
    "non-contiguous": lambda: np.full((3, 8), 7, np.int32)[:, ::2],
}


def _read_only(array: Array) -> Array:
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("kind", OUT_ARRAYS.keys())
def test_numpy_into_bad_out(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, kind: str
) -> None:
    """numpy(out=...) with a read-only, wrong-shape, wrong-dtype or non-contiguous
    out raises InvalidArrayError (a ValueError) and leaves out alone."""
    tensor = tensorferry_env.from_numpy(random_array((3, 4), np.int32, 108), tensorferry_device)
    out = OUT_ARRAYS[kind]()
    before = out.copy()
    with pytest.raises(tf.InvalidArrayError) as caught:
        tensor.numpy(out=out)
    assert isinstance(caught.value, ValueError)
    assert_bytes(out, before, f"{kind} out")


def test_numpy_into_out(tensorferry_env: tf.Environment, tensorferry_device: tf.Device) -> None:
    """numpy(out=...) fills a good out in place and returns it."""
    data = random_array((3, 4), np.int32, seed=109)
    tensor = tensorferry_env.from_numpy(data, tensorferry_device)
    out = np.zeros((3, 4), np.int32)
    assert tensor.numpy(out=out) is out
    assert_bytes(out, data, "out")


def test_dtypes_without_fixed_size(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """Object and unsized dtypes raise UnsupportedDtypeError (a TypeError)."""
    env, device = tensorferry_env, tensorferry_device
    with pytest.raises(tf.UnsupportedDtypeError) as caught:
        env.empty((3,), object, device)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(tf.UnsupportedDtypeError):
        env.from_numpy(np.array([1, None], dtype=object), device)
    with pytest.raises(TypeError):
        env.from_numpy(np.zeros(2, dtype=[("a", np.int32), ("b", object)]), device)
    with pytest.raises(tf.UnsupportedDtypeError):
        env.zeros((2,), "U", device)
    tensor = env.zeros((2,), np.int64, device)
    with pytest.raises(tf.UnsupportedDtypeError):
        tensor.view(object)


def test_not_a_tensor(tensorferry_env: tf.Environment, tensorferry_device: tf.Device) -> None:
    """A numpy array where a tensor belongs raises TypeError; nothing changes."""
    env = tensorferry_env
    data = random_array((4,), np.float32, seed=110)
    dst = env.from_numpy(data, tensorferry_device)
    source: Any = np.ones(4, np.float32)
    with pytest.raises(TypeError, match=r"tensorferry\.Tensor"):
        env.copy_tensor(source, dst)
    assert_tensor_bytes(dst, data, f"destination on {tensorferry_device}")


def _still_works(env: tf.Environment, device: tf.Device) -> None:
    data = random_array((9,), np.uint8, seed=120)
    assert_tensor_bytes(env.from_numpy(data, device), data, f"a fresh copy on {device}")


BAD_SPECS: dict[str, tuple[object, type[Exception]]] = {
    "empty": ("", tf.UnknownDeviceError),
    "blank": ("   ", tf.UnknownDeviceError),
    "negative-index": ("{name}:-1", tf.UnknownDeviceError),
    "plus-index": ("{name}:+1", tf.UnknownDeviceError),
    "minus-zero": ("{name}:-0", tf.UnknownDeviceError),
    "word-index": ("{name}:abc", tf.UnknownDeviceError),
    "leading-zero": ("{name}:00", tf.UnknownDeviceError),
    "inner-space": ("{name} : 0", tf.UnknownDeviceError),
    "none": (None, TypeError),
    "int": (3, TypeError),
}


@pytest.mark.parametrize("kind", BAD_SPECS.keys())
def test_bad_device_specs(
    tensorferry_env: tf.Environment, tensorferry_backend: str, kind: str
) -> None:
    """Malformed device strings raise UnknownDeviceError (a LookupError) saying what
    was expected; non-strings raise TypeError; nothing is allocated."""
    env, name = tensorferry_env, tensorferry_backend
    spec, error = BAD_SPECS[kind]
    if isinstance(spec, str):
        spec = spec.format(name=name)
    with pytest.raises(error) as caught:
        env.device(spec)  # type: ignore[arg-type]
    if error is tf.UnknownDeviceError:
        assert isinstance(caught.value, LookupError)
        assert "expected" in str(caught.value), caught.value
    with pytest.raises(error):
        env.empty((2,), np.uint8, spec)  # type: ignore[arg-type]
    _still_works(env, env.device(name))


def test_same_tensor_as_source_and_destination(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """A tensor copied onto itself keeps its bytes (a defined no-op, synchronous or not)."""
    env = tensorferry_env
    data = random_array((33,), np.int16, seed=121)
    tensor = env.from_numpy(data, tensorferry_device)
    env.copy_tensor(tensor, tensor)
    env.copy_tensors([tensor, tensor[3:9]], [tensor, tensor[3:9]])
    env.copy_tensors_async([tensor], [tensor]).wait(timeout=60)
    assert_tensor_bytes(tensor, data, f"tensor on {tensorferry_device}")


@pytest.mark.parametrize("shift", [1, -1, 3, -7])
def test_overlapping_views_of_one_storage(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, shift: int
) -> None:
    """A copy between overlapping views of one storage behaves like ``memmove``
    (numpy's ``a[d:d+n] = a[s:s+n].copy()``), alone and as the second pair of a batch."""
    env = tensorferry_env
    data = random_array((64,), np.uint8, seed=122)
    tensor = env.from_numpy(data, tensorferry_device)
    start, count = 20, 30
    env.copy_tensor(tensor[start : start + count], tensor[start + shift : start + shift + count])
    expected = data.copy()
    expected[start + shift : start + shift + count] = data[start : start + count].copy()
    assert_tensor_bytes(tensor, expected, f"storage on {tensorferry_device}")
    env.copy_tensors(
        [tensor[0:4], tensor[start : start + count]],
        [tensor[60:64], tensor[start + shift : start + shift + count]],
    )
    expected[60:64] = expected[0:4].copy()
    expected[start + shift : start + shift + count] = expected[start : start + count].copy()
    assert_tensor_bytes(tensor, expected, f"storage on {tensorferry_device} after a batch")


ODD_ARRAYS: dict[str, Callable[[], Array]] = {
    "non-contiguous": lambda: random_array((6, 8), np.int32, seed=123)[:, ::2],
    "fortran": lambda: np.asfortranarray(random_array((5, 3), np.float64, seed=124)),
    "read-only": lambda: _read_only(random_array((7,), np.uint16, seed=125)),
    "structured": lambda: np.array([(1, 2.5), (3, -1.0)], dtype=[("a", "<u2"), ("b", "<f8")]),
    "big-endian": lambda: random_array((9,), np.dtype(">i4"), seed=126),
    "big-endian-float": lambda: random_array((4, 2), np.dtype(">f8"), seed=127),
}


@pytest.mark.parametrize("kind", ODD_ARRAYS.keys())
def test_unusual_arrays_round_trip(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, kind: str
) -> None:
    """Non-contiguous, Fortran-order, read-only, structured and non-native byte order
    arrays upload (copied, copy=True) and come back with their dtype and bytes; only
    sharing (copy=False) a non-C-contiguous array is refused (InvalidArrayError)."""
    env = tensorferry_env
    array = ODD_ARRAYS[kind]()
    tensor = env.from_numpy(array, tensorferry_device)
    assert tensor.dtype == array.dtype
    assert_bytes(
        read(tensor), np.ascontiguousarray(array), f"{kind} array via {tensorferry_device}"
    )
    if not array.flags.c_contiguous:
        with pytest.raises(tf.InvalidArrayError, match="C-contiguous"):
            env.from_numpy(array, copy=False)


def test_views_outside_their_storage(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device
) -> None:
    """A view that would reach past its storage (a negative or too large offset, a
    shape too big) raises ValueError when it is made; slices clamp like numpy's."""
    env = tensorferry_env
    data = random_array((16,), np.uint8, seed=128)
    tensor = env.from_numpy(data, tensorferry_device)
    storage = tensor.storage
    for shape, offset in [((17,), 0), ((1,), 16), ((4,), -1), ((2, 9), 0)]:
        with pytest.raises(ValueError, match="does not fit"):
            tf.Tensor(storage, shape, np.uint8, offset, env)
        with pytest.raises(ValueError, match="does not fit"):
            env.wrap_storage(storage, shape, np.uint8, offset)
    with pytest.raises(IndexError):
        tensor[16]
    assert tensor[10:100].shape == (6,)
    assert_tensor_bytes(tensor, data, f"tensor on {tensorferry_device}")


BAD_SHAPES: dict[str, tuple[object, type[Exception]]] = {
    "negative": ((3, -1), ValueError),
    "minus-one": (-1, ValueError),
    "float": ((2.0,), TypeError),
    "bool": ((True,), TypeError),
    "string": ("4", TypeError),
    "beyond-numpy": ((2**40, 2**40), ValueError),
    "beyond-memory": ((2**62,), tf.OutOfDeviceMemoryError),
}


@pytest.mark.parametrize("kind", BAD_SHAPES.keys())
def test_bad_shapes(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, kind: str
) -> None:
    """Negative, non-integer, bool and huge shapes raise before anything is allocated:
    TypeError or ValueError for the shape, OutOfDeviceMemoryError (a MemoryError)
    for one that no device holds."""
    env = tensorferry_env
    shape, error = BAD_SHAPES[kind]
    with pytest.raises(error):
        env.empty(shape, np.uint8, tensorferry_device)  # type: ignore[arg-type]
    with pytest.raises(error):
        env.zeros(shape, np.float32, tensorferry_device)  # type: ignore[arg-type]
    _still_works(env, tensorferry_device)


MISFITS: dict[str, tuple[Any, object]] = {
    "int8-1000": (np.int8, 1000),
    "int8-np.int64-1000": (np.int8, np.int64(1000)),
    "uint8-np.float64-300": (np.uint8, np.float64(300.0)),
    "uint8-minus-one": (np.uint8, -1),
    "int32-half": (np.int32, 0.5),
    "int16-str": (np.int16, "5"),
    "float16-1e6": (np.float16, 1e6),
    "float32-complex": (np.float32, 1 + 1j),
    "bool-2": (np.bool_, 2),
    "S4-too-long": ("S4", b"12345"),
    "list": (np.float64, [1.0]),
}


@pytest.mark.parametrize("kind", MISFITS.keys())
def test_fill_values_that_do_not_fit(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, kind: str
) -> None:
    """A fill value that does not fit the dtype raises ValueError naming both, and the
    tensor keeps every byte (the same rule on every backend)."""
    env = tensorferry_env
    dtype, value = MISFITS[kind]
    tensor = env.empty((6,), dtype, tensorferry_device)
    before = random_array((tensor.nbytes,), np.uint8, seed=129)
    env.copy_tensor(env.from_numpy(before), tensor.view(np.uint8).reshape(-1))
    with pytest.raises(ValueError, match=r"cannot convert|scalar") as caught:
        env.fill(tensor, value)
    assert str(np.dtype(dtype)) in str(caught.value) or "scalar" in str(caught.value)
    assert_tensor_bytes(
        tensor.view(np.uint8).reshape(-1), before, f"tensor on {tensorferry_device}"
    )
    _still_works(env, tensorferry_device)


@pytest.mark.parametrize("itemsize", [1, 3, 16, 129, 200])
def test_fill_elements_of_any_size(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, itemsize: int
) -> None:
    """Every fixed-size dtype can be filled, elements larger than 128 bytes included."""
    env = tensorferry_env
    element = random_array((itemsize,), np.uint8, seed=130).tobytes()
    tensor = env.zeros((7,), f"V{itemsize}", tensorferry_device)
    env.fill(tensor[2:6], element)
    expected = bytes(itemsize) * 2 + element * 4 + bytes(itemsize)
    assert read(tensor).tobytes() == expected
