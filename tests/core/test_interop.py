"""numpy, the buffer protocol, DLPack, pickling and Tensor.to, on host memory and on a
fake accelerator whose memory is not host memory."""

from __future__ import annotations

import copy
import pickle
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tensorferry import Environment, InvalidArrayError, Tensor
from tensorferry.dlpack import DLDeviceType, dlpack_device

MakeAccelerator = Callable[..., Any]


@pytest.fixture
def acc_env(env: Environment, make_accelerator: MakeAccelerator) -> Environment:
    """The cpu environment plus a fake accelerator backend ``acc`` with two devices."""
    env.register_backend("acc", make_accelerator("acc", device_count=2))
    return env


@pytest.fixture
def on_acc(acc_env: Environment) -> Tensor:
    """A 2x3 float32 tensor on acc:1 holding 0..5."""
    return acc_env.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3), "acc:1")


# numpy ---------------------------------------------------------------------------------


def test_asarray_of_host_tensor_shares_memory(env: Environment) -> None:
    source = np.arange(12, dtype=np.int16).reshape(3, 4)
    tensor = env.from_numpy(source, copy=False)[1:3]
    array = np.asarray(tensor)
    assert array.dtype == np.int16
    assert array.shape == (2, 4)
    assert np.shares_memory(array, source)
    array[0, 0] = -1
    assert source[1, 0] == -1


def test_asarray_of_device_tensor_downloads_values_not_objects(on_acc: Tensor) -> None:
    array = np.asarray(on_acc)
    assert array.dtype == np.float32  # never an object array of 0-d tensors
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(on_acc[1]), [3, 4, 5])


def test_array_with_copy_true_copies_host_memory(env: Environment) -> None:
    source = np.arange(4, dtype=np.uint8)
    array = np.array(env.from_numpy(source, copy=False), copy=True)
    array[0] = 9
    assert source[0] == 0


def test_copy_false_refuses_a_download(on_acc: Tensor) -> None:
    with pytest.raises(ValueError, match=r"needs a download \(a copy\), but copy=False"):
        np.asarray(on_acc, copy=False)


def test_copy_false_on_host_is_a_view(env: Environment) -> None:
    source = np.arange(4, dtype=np.uint8)
    assert np.shares_memory(np.asarray(env.from_numpy(source, copy=False), copy=False), source)


def test_dtype_conversion(env: Environment, on_acc: Tensor) -> None:
    host = env.from_numpy(np.arange(3, dtype=np.int32), copy=False)
    assert np.asarray(host, dtype=np.float64).tolist() == [0.0, 1.0, 2.0]
    assert np.asarray(on_acc, dtype=np.int64).dtype == np.int64
    # numpy may answer from the buffer protocol (3.12+) with its own message.
    with pytest.raises(ValueError, match="copy"):
        np.asarray(host, dtype=np.float64, copy=False)
    with pytest.raises(ValueError, match="converting int32 to float64 needs a copy"):
        host.__array__(np.float64, copy=False)


def test_read_only_host_tensor_gives_read_only_array(env: Environment) -> None:
    source = np.arange(3, dtype=np.float32)
    source.flags.writeable = False
    assert not np.asarray(env.from_numpy(source, copy=False)).flags.writeable


def test_numpy_functions_accept_tensors(on_acc: Tensor) -> None:
    assert float(np.sum(on_acc)) == 15.0


# buffer protocol -----------------------------------------------------------------------


def test_memoryview_of_host_tensor_shares_memory(env: Environment) -> None:
    source = np.arange(6, dtype=np.int32)
    tensor = env.from_numpy(source, copy=False)[2:5]
    if sys.version_info < (3, 12):  # the documented limit: no __buffer__ before PEP 688
        with pytest.raises(TypeError, match="bytes-like object is required"):
            memoryview(tensor)  # type: ignore[arg-type,unused-ignore]
        return
    view = memoryview(tensor)  # type: ignore[arg-type,unused-ignore]
    assert view.format == "i"
    assert view.shape == (3,)
    assert view.tolist() == [2, 3, 4]
    view[0] = 42
    assert source[2] == 42


def test_memoryview_of_device_tensor_is_refused(on_acc: Tensor) -> None:
    # Python 3.11 cannot call __buffer__ at all (TypeError); 3.12+ gets its BufferError.
    expected = TypeError if sys.version_info < (3, 12) else BufferError
    with pytest.raises(expected):
        memoryview(on_acc)  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(BufferError, match=r"acc:1 memory, which has no host address"):
        on_acc.__buffer__(0)


def test_buffer_method_of_host_tensor(env: Environment) -> None:
    source = np.arange(3, dtype=np.float64)
    source.flags.writeable = False
    view = env.from_numpy(source, copy=False).__buffer__(0)
    assert view.readonly
    assert view.tolist() == [0.0, 1.0, 2.0]


# DLPack --------------------------------------------------------------------------------


def test_dlpack_device(env: Environment, on_acc: Tensor) -> None:
    assert env.from_numpy(np.zeros(2)).__dlpack_device__() == (1, 0)
    # The fake backend declares no DLPack device type: kDLExtDev.
    assert on_acc.__dlpack_device__() == (int(DLDeviceType.EXT_DEV), 1)


def test_dlpack_device_declared_by_backend(acc_env: Environment) -> None:
    device = acc_env.device("acc:0")
    declared = type(device)("acc", 0, device.type, properties={"dlpack_device_type": 15})
    assert dlpack_device(declared) == (15, 0)


def test_from_dlpack_of_host_tensor_is_zero_copy(env: Environment) -> None:
    source = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = env.from_numpy(source, copy=False)[1]
    array = np.from_dlpack(tensor)
    assert np.shares_memory(array, source)
    np.testing.assert_array_equal(array, [4, 5, 6, 7])


def test_dlpack_copy_true_on_host_copies(env: Environment) -> None:
    source = np.arange(4, dtype=np.int64)
    array = np.from_dlpack(env.from_numpy(source, copy=False), copy=True)
    assert not np.shares_memory(array, source)
    np.testing.assert_array_equal(array, source)


def test_dlpack_of_read_only_host_tensor_is_read_only(env: Environment) -> None:
    source = np.arange(4, dtype=np.int64)
    source.flags.writeable = False
    array = np.from_dlpack(env.from_numpy(source, copy=False))
    assert not array.flags.writeable


def test_device_tensor_exports_host_copy_for_cpu(on_acc: Tensor) -> None:
    array = np.from_dlpack(on_acc, device="cpu")
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_device_tensor_without_cpu_request_is_refused(on_acc: Tensor) -> None:
    with pytest.raises(BufferError, match=r"no address a DLPack capsule can carry.*device='cpu'"):
        np.from_dlpack(on_acc)


def test_device_tensor_with_copy_false_is_refused(on_acc: Tensor) -> None:
    with pytest.raises(BufferError, match="needs a copy, but copy=False"):
        np.from_dlpack(on_acc, device="cpu", copy=False)


def test_dlpack_refuses_a_stream_and_other_devices(env: Environment) -> None:
    tensor = env.from_numpy(np.zeros(2))
    with pytest.raises(ValueError, match="stream must be None"):
        tensor.__dlpack__(stream=1)
    with pytest.raises(BufferError, match=r"to DLPack device \(2, 0\)"):
        tensor.__dlpack__(dl_device=(2, 0))
    with pytest.raises(ValueError, match="dl_device must be a"):
        tensor.__dlpack__(dl_device="cpu")  # type: ignore[arg-type]


def test_legacy_and_versioned_capsules(env: Environment) -> None:
    tensor = env.from_numpy(np.zeros(2))
    assert "dltensor_versioned" in repr(tensor.__dlpack__(max_version=(1, 0)))
    assert "dltensor_versioned" not in repr(tensor.__dlpack__())


def test_env_from_dlpack_shares_memory(env: Environment) -> None:
    source = np.arange(6, dtype=np.uint16).reshape(3, 2)
    tensor = env.from_dlpack(source)
    assert tensor.device.is_host
    assert tensor.shape == (3, 2)
    assert np.shares_memory(tensor.host_array(), source)


def test_env_from_dlpack_copies_to_device(acc_env: Environment) -> None:
    source = np.arange(5, dtype=np.float64)
    tensor = acc_env.from_dlpack(source, device="acc:1")
    assert str(tensor.device) == "acc:1"
    np.testing.assert_array_equal(tensor.numpy(), source)
    copied = acc_env.from_dlpack(source, device="cpu")
    assert not np.shares_memory(copied.host_array(), source)


def test_env_from_dlpack_of_host_tensor_of_another_library(env: Environment) -> None:
    class Producer:
        """A minimal third-party DLPack producer in host memory."""

        def __init__(self, array: np.ndarray[Any, Any]) -> None:
            self.array = array

        def __dlpack__(self, **kwargs: Any) -> Any:
            return self.array.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return (1, 0)

    source = np.arange(3, dtype=np.int8)
    assert np.shares_memory(env.from_dlpack(Producer(source)).host_array(), source)


def test_env_from_dlpack_errors(env: Environment, on_acc: Tensor) -> None:
    with pytest.raises(TypeError, match=r"expected a DLPack producer.*got list"):
        env.from_dlpack([1, 2])
    with pytest.raises(InvalidArrayError, match=r"DLPack device \(12, 1\) \(EXT_DEV\), not host"):
        env.from_dlpack(on_acc)

    class Broken:
        def __dlpack__(self, **kwargs: Any) -> Any:
            raise BufferError("unsupported version")

        def __dlpack_device__(self) -> tuple[int, int]:
            return (1, 0)

    with pytest.raises(InvalidArrayError, match=r"numpy cannot import the Broken.*unsupported"):
        env.from_dlpack(Broken())


# Tensor.to -----------------------------------------------------------------------------


def test_to_moves_between_devices(on_acc: Tensor) -> None:
    host = on_acc.to("cpu")
    assert host.device.is_host
    np.testing.assert_array_equal(host.host_array(), np.arange(6).reshape(2, 3))
    other = host.to("acc:0")
    assert str(other.device) == "acc:0"
    np.testing.assert_array_equal(other.numpy(), np.arange(6).reshape(2, 3))


def test_to_same_device_returns_the_tensor(on_acc: Tensor) -> None:
    assert on_acc.to("acc:1") is on_acc
    assert on_acc.to(on_acc.device) is on_acc
    copied = on_acc.to("acc:1", copy=True)
    assert copied is not on_acc
    np.testing.assert_array_equal(copied.numpy(), on_acc.numpy())


def test_to_device_is_the_array_api_spelling(on_acc: Tensor) -> None:
    assert on_acc.to_device("cpu").device.is_host
    with pytest.raises(ValueError, match="stream must be None"):
        on_acc.to_device("cpu", stream=0)


def test_to_unknown_device(on_acc: Tensor) -> None:
    with pytest.raises(LookupError, match="no device 'acc:7'"):
        on_acc.to("acc:7")


def test_to_without_owner() -> None:
    from tensorferry import HostStorage

    orphan = Tensor(HostStorage.allocate(4), (4,), np.uint8)
    with pytest.raises(RuntimeError, match="no owning environment"):
        orphan.to("cpu")


# pickle --------------------------------------------------------------------------------


def test_pickle_is_refused_with_the_way_out(on_acc: Tensor, env: Environment) -> None:
    for tensor in (on_acc, env.from_numpy(np.zeros(2))):
        with pytest.raises(TypeError, match=r"cannot pickle.*pickle numpy.asarray\(tensor\)"):
            pickle.dumps(tensor)
        with pytest.raises(TypeError, match="cannot pickle or deep-copy"):
            copy.deepcopy(tensor)


def test_shallow_copy_is_the_same_view(on_acc: Tensor) -> None:
    assert copy.copy(on_acc) is on_acc
