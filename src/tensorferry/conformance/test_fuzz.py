"""Property-based tests: random programs of copies and fills, with numpy as the oracle.

Each example allocates a few storages on the device under test, on another
device of its backend and on the host, then runs random steps: batches (sync or
async) mixing uploads, downloads, device and host copies between views of any
numeric dtype, bool, float16 or complex, any shape (0-d and empty included),
first-axis views and byte views at odd offsets, destinations that overlap; and
fills of views. numpy applies the same pairs one after another; every storage
must then hold exactly the oracle's bytes (read back through the transfer, and
without it where the backend has :class:`tensorferry.RawAccess`).

Quick by default (``--tensorferry-fuzz-examples`` sets examples per device; the
``fuzz`` nox session runs 10,000). Needs ``hypothesis`` (``tensorferry[conformance]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tensorferry as tf
from tensorferry.conformance._support import NUMERIC_DTYPES, assert_bytes, raw_bytes
from tensorferry.conformance.plugin import FUZZ_COUNTS

pytest.importorskip(
    "hypothesis", reason="the property-based tests need hypothesis: pip install hypothesis"
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

QUICK_EXAMPLES = 30
MAX_STORAGE = 192
FILL_DTYPES = [d for d in NUMERIC_DTYPES if d not in ("longdouble", "clongdouble")]
"""Fill values are drawn as random bytes; long doubles have padding bytes numpy
does not keep through a scalar, so their fills are tested in test_fill instead."""


class _Memory:
    """One storage under test and the numpy bytes it must hold."""

    def __init__(self, env: tf.Environment, device: tf.Device, data: np.ndarray) -> None:
        self.device = device
        self.tensor = env.from_numpy(data, device)
        self.oracle = data.copy()

    def view(self, offset: int, nbytes: int, dtype: np.dtype[Any]) -> tf.Tensor:
        return self.tensor[offset : offset + nbytes].view(dtype)


def _draw_view(data: Any, memory: _Memory, dtype: np.dtype[Any], count: int) -> tuple[int, int]:
    """A byte offset for ``count`` elements of ``dtype`` in ``memory``."""
    nbytes = count * dtype.itemsize
    offset = data.draw(st.integers(0, memory.oracle.size - nbytes), label="offset")
    return offset, nbytes


def _shape_of(data: Any, count: int) -> tuple[int, ...]:
    """A shape of ``count`` elements: 1-d, 2-d (rows x cols) or, for one element, 0-d."""
    choices: list[tuple[int, ...]] = [(count,)]
    if count == 1:
        choices.append(())
    choices += [(count // c, c) for c in range(1, min(count, 6) + 1) if count % c == 0]
    if count == 0:
        choices.append((0, 3))
    shape: tuple[int, ...] = data.draw(st.sampled_from(choices), label="shape")
    return shape


def _rows(data: Any, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """A first-axis slice [i:j] of a 2-d shape, or None to keep the whole view."""
    if len(shape) != 2 or not data.draw(st.booleans(), label="row slice"):
        return None
    i = data.draw(st.integers(0, shape[0]), label="row start")
    j = data.draw(st.integers(i, shape[0]), label="row stop")
    return i, j


def _typed(
    memory: _Memory,
    offset: int,
    nbytes: int,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    rows: tuple[int, int] | None,
) -> tuple[tf.Tensor, int, int]:
    """The tensor for a view, with the byte range it finally covers."""
    tensor = memory.view(offset, nbytes, dtype).reshape(shape)
    if rows is None:
        return tensor, offset, nbytes
    row_bytes = shape[1] * dtype.itemsize
    return tensor[rows[0] : rows[1]], offset + rows[0] * row_bytes, (rows[1] - rows[0]) * row_bytes


def _copy_pair(data: Any, memories: list[_Memory]) -> tuple[tf.Tensor, tf.Tensor, Any]:
    src = data.draw(st.sampled_from(memories), label="source")
    dst = data.draw(st.sampled_from(memories), label="destination")
    dtype = np.dtype(data.draw(st.sampled_from(NUMERIC_DTYPES), label="dtype"))
    most = min(src.oracle.size, dst.oracle.size) // dtype.itemsize
    count = data.draw(st.integers(0, most), label="count")
    shape = _shape_of(data, count)
    rows = _rows(data, shape)
    s_off, nbytes = _draw_view(data, src, dtype, count)
    d_off, _ = _draw_view(data, dst, dtype, count)
    source, s_start, length = _typed(src, s_off, nbytes, dtype, shape, rows)
    target, d_start, _ = _typed(dst, d_off, nbytes, dtype, shape, rows)

    def apply() -> None:
        dst.oracle[d_start : d_start + length] = src.oracle[s_start : s_start + length].copy()

    return source, target, apply


def _fill(data: Any, env: tf.Environment, memories: list[_Memory]) -> None:
    memory = data.draw(st.sampled_from(memories), label="fill target")
    dtype = np.dtype(data.draw(st.sampled_from(FILL_DTYPES), label="fill dtype"))
    count = data.draw(st.integers(0, memory.oracle.size // dtype.itemsize), label="fill count")
    shape = _shape_of(data, count)
    offset, nbytes = _draw_view(data, memory, dtype, count)
    tensor, start, length = _typed(memory, offset, nbytes, dtype, shape, _rows(data, shape))
    if dtype == np.bool_:
        value: Any = np.bool_(data.draw(st.booleans(), label="fill value"))
    else:
        raw = data.draw(st.binary(min_size=dtype.itemsize, max_size=dtype.itemsize))
        value = np.frombuffer(raw, dtype)[0]
    env.fill(tensor, value)
    pattern = np.frombuffer(np.array(value, dtype).tobytes(), np.uint8)
    memory.oracle[start : start + length] = np.tile(pattern, length // dtype.itemsize)


def _run_program(data: Any, env: tf.Environment, devices: list[tf.Device]) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    places = data.draw(
        st.lists(st.sampled_from(devices), min_size=2, max_size=5), label="storage devices"
    )
    memories = [
        _Memory(env, device, rng.integers(0, 256, int(rng.integers(0, MAX_STORAGE)), np.uint8))
        for device in places
    ]
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        kind = data.draw(st.sampled_from(["batch", "async", "fill"]), label="step")
        if kind == "fill":
            _fill(data, env, memories)
            continue
        pairs = [_copy_pair(data, memories) for _ in range(data.draw(st.integers(1, 6)))]
        srcs, dsts = [p[0] for p in pairs], [p[1] for p in pairs]
        if kind == "batch":
            env.copy_tensors(srcs, dsts)
        else:
            env.copy_tensors_async(srcs, dsts).wait(timeout=120)
        for _, _, apply in pairs:
            apply()
    for number, memory in enumerate(memories):
        what = f"storage {number} on {memory.device}"
        assert_bytes(memory.tensor.numpy(), memory.oracle, f"{what}, read through the transfer")
        if memory.device.is_host or isinstance(env.backend(memory.device.backend), tf.RawAccess):
            assert_bytes(raw_bytes(env, memory.tensor), memory.oracle, f"{what}, read raw")


def test_random_programs_match_numpy(
    tensorferry_env: tf.Environment, tensorferry_device: tf.Device, pytestconfig: pytest.Config
) -> None:
    """Random programs of batches, async batches and fills over the device, another
    device of its backend and the host give numpy's bytes, views and overlaps included."""
    env, device = tensorferry_env, tensorferry_device
    siblings = [d for d in env.backend(device.backend).devices() if d != device]
    devices = list(dict.fromkeys([device, *siblings[:1], tf.HOST]))
    examples = pytestconfig.getoption("tensorferry_fuzz_examples") or QUICK_EXAMPLES
    key = str(device)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: Any) -> None:
        FUZZ_COUNTS[key] = FUZZ_COUNTS.get(key, 0) + 1
        _run_program(data, env, devices)

    run()
