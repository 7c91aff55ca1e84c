"""Helpers shared by the conformance suite's modules: test data, byte checks, probes."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry as tf
from tensorferry.conformance.plugin import DevicePair

Array: TypeAlias = npt.NDArray[Any]
Bytes: TypeAlias = npt.NDArray[np.uint8]

NUMERIC_DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
]
"""Every numeric numpy dtype plus bool, by name (the test ids)."""


def random_array(shape: SupportsIndex | Sequence[SupportsIndex], dtype: Any, seed: int) -> Array:
    """Seeded random data of any fixed-size dtype, built from random bytes.

    Floats therefore include NaNs with payloads, infinities and subnormals,
    which only a byte-exact copy preserves. Bools are 0 or 1.
    """
    kind = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, SupportsIndex) else tuple(shape)
    count = math.prod(int(d) for d in dims)
    rng = np.random.default_rng(seed)
    if kind == np.bool_:
        raw: Bytes = rng.integers(0, 2, size=count, dtype=np.uint8)
    else:
        raw = rng.integers(0, 256, size=count * kind.itemsize, dtype=np.uint8)
    result: Array = raw.view(kind).reshape(dims)
    return result


def unlike(data: Array) -> Array:
    """An array of data's shape and dtype whose every byte differs from data's."""
    if data.dtype == np.bool_:
        return ~data
    return (~bytes_of(data)).view(data.dtype).reshape(data.shape)


def bytes_of(array: Array) -> Bytes:
    """The bytes of an array, flat (works for 0-d and empty arrays)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def read(tensor: tf.Tensor) -> Array:
    """A host copy of ``tensor``, checked to have the tensor's shape and dtype."""
    result = tensor.numpy()
    assert isinstance(result, np.ndarray), f"numpy() returned {type(result).__name__}"
    assert result.shape == tensor.shape, f"numpy() gave shape {result.shape}, not {tensor.shape}"
    assert result.dtype == tensor.dtype, f"numpy() gave dtype {result.dtype}, not {tensor.dtype}"
    return result


def assert_bytes(actual: Array, expected: Array, what: str) -> None:
    """Assert two arrays hold the same bytes (NaN payloads and padding included)."""
    got, want = bytes_of(actual), bytes_of(expected)
    assert got.shape == want.shape, f"{what}: {got.size} bytes, expected {want.size}"
    mismatch = np.flatnonzero(got != want)
    assert mismatch.size == 0, (
        f"{what}: {mismatch.size} of {want.size} bytes differ, first at byte {mismatch[0]} "
        f"(got {got[mismatch[0]]:#04x}, expected {want[mismatch[0]]:#04x}); "
        f"differing byte offsets start {mismatch[:16].tolist()}"
    )


def assert_tensor_bytes(tensor: tf.Tensor, expected: Array, what: str) -> None:
    """Read ``tensor`` back and assert it holds the bytes of ``expected``."""
    assert_bytes(read(tensor), expected, what)


def backend_of(pair: DevicePair) -> str:
    """The backend a pair belongs to: its accelerator side, else the host backend."""
    for device in (pair.dst, pair.src):
        if not device.is_host:
            return device.backend
    return pair.src.backend


def require_filler(env: tf.Environment, device: tf.Device) -> tf.Filler:
    """The device's backend as a :class:`tensorferry.Filler`, or skip naming the capability."""
    backend = env.backend(device.backend)
    if not isinstance(backend, tf.Filler):
        pytest.skip(
            f"backend {backend.name!r} does not implement the optional capability "
            "tensorferry.Filler (env.fill uploads instead; that path is tested too)"
        )
    return backend


def require_async(env: tf.Environment, pair: DevicePair) -> tf.AsyncDataTransfer:
    """The pair's direct transfer as a :class:`tensorferry.AsyncDataTransfer`, or skip
    naming the capability."""
    for device in pair:
        env.device(device)  # loads the backend, registering its transfers
    transfer = env.data_transfer_manager.get_data_transfer(pair.src, pair.dst)
    assert transfer is not None, f"no direct transfer for {pair}"
    if not isinstance(transfer, tf.AsyncDataTransfer):
        pytest.skip(
            f"backend {backend_of(pair)!r} does not implement the optional capability "
            f"tensorferry.AsyncDataTransfer ({type(transfer).__name__} copies {pair} "
            "synchronously; env.copy_tensors_async falls back, and that path is tested too)"
        )
    return transfer


def require_raw(env: tf.Environment, device: tf.Device) -> tf.RawAccess:
    """The device's backend as a :class:`tensorferry.RawAccess`, or skip naming the capability."""
    backend = env.backend(device.backend)
    if not isinstance(backend, tf.RawAccess):
        pytest.skip(
            f"backend {backend.name!r} does not implement the optional capability "
            "tensorferry.RawAccess (read_raw/write_raw); device-side bytes are only checked "
            "through its own transfers"
        )
    return backend


def raw_bytes(env: tf.Environment, tensor: tf.Tensor) -> Bytes:
    """The bytes of ``tensor``'s whole storage, read without any transfer (host
    storage directly, device storage through :class:`tensorferry.RawAccess`)."""
    storage = tensor.storage
    if isinstance(storage, tf.HostStorage):
        return storage.array.copy()
    raw = require_raw(env, tensor.device)
    data = raw.read_raw(storage, 0, storage.nbytes)
    assert isinstance(data, bytes), f"read_raw returned {type(data).__name__}, expected bytes"
    return np.frombuffer(data, np.uint8).copy()


def raw_fill(env: tf.Environment, tensor: tf.Tensor, data: Bytes) -> None:
    """Write ``data`` over ``tensor``'s whole storage without any transfer."""
    storage = tensor.storage
    assert data.nbytes == storage.nbytes, f"{data.nbytes} bytes for storage of {storage.nbytes}"
    if isinstance(storage, tf.HostStorage):
        storage.array[:] = data
        return
    require_raw(env, tensor.device).write_raw(storage, 0, data.tobytes())


def require_memory_usage(env: tf.Environment, device: tf.Device) -> tf.MemoryUsage:
    """The device's backend as a :class:`tensorferry.MemoryUsage`, or skip naming it."""
    backend = env.backend(device.backend)
    if not isinstance(backend, tf.MemoryUsage):
        pytest.skip(
            f"backend {backend.name!r} does not implement the optional capability "
            "tensorferry.MemoryUsage (bytes_in_use); released storage is only checked "
            "through garbage collection"
        )
    return backend


def wait_until_done(handle: tf.TransferHandle, timeout: float = 120.0) -> None:
    """Poll ``handle.done()`` (never ``wait``) until it is true; fail if it never is."""
    deadline = time.monotonic() + timeout
    while not handle.done():
        assert time.monotonic() < deadline, f"done() stayed False for {timeout} s"
        time.sleep(0.0005)
