"""Downloads into new arrays over mapped staging memory: what would lending pay?

``Tensor.numpy()`` allocates a host array and copies the mapped staging bytes
into it. The array could instead *be* the mapped bytes of a ``MAP_READ``
buffer that the device copied into: no copy out, no page faults of a new
array, at the price of a buffer per live array. For each SIZE (bytes, K/M/G
suffixes) on the first WebGPU device, the ways alternating, medians of ROUNDS:

* ``numpy()``: what ``Tensor.numpy()`` does now;
* ``fresh buffer``: create a ``MAP_READ | COPY_DST`` buffer, copy into it,
  submit, map, wrap the mapped bytes as an array (the buffer's creation
  included; its destruction timed apart, as ``destroy``);
* ``reused buffer``: the same, into one buffer kept from round to round
  (unmapped first): what a pool of returned buffers would do;
* ``read``: summing the array once (GB/s), for a ``numpy()`` array and for one
  over the mapped buffer: whether the host reads mapped memory at memory speed.

Small sizes print microseconds p50, large ones GB/s.

Run: ``python benchmarks/probes/lent_arrays.py [ROUNDS] [SIZE ...]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import wgpu
from _median import alternating_seconds

import tensorferry as tf
from tensorferry_webgpu import _native, _waits

Bytes = npt.NDArray[np.uint8]
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"501K"`` -> 513024."""
    unit = _UNITS.get(text[-1].upper(), 1)
    return int(text[:-1] if unit > 1 else text) * unit


class Mapped:
    """One ``MAP_READ`` buffer the device copies ``nbytes`` into, read as an array."""

    def __init__(self, gpu: wgpu.GPUDevice, nbytes: int) -> None:
        self.gpu, self.nbytes = gpu, nbytes
        self.buffer = gpu.create_buffer(
            size=nbytes, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
        )

    def fill_from(self, source: wgpu.GPUBuffer, offset: int, queue: wgpu.GPUQueue) -> Bytes:
        """Copy ``nbytes`` at ``offset`` of ``source`` into the buffer; the mapped bytes."""
        if self.buffer.map_state == "mapped":
            self.buffer.unmap()
        _native.submit_copies(self.gpu, queue, [(source, offset, self.buffer, 0, self.nbytes)])
        _waits.request_map(self.buffer, _native.MAP_READ, 0, self.nbytes).wait(
            self.gpu, lost_after=10.0, spin=200e-6
        )
        return _native.mapped_array(self.buffer, 0, self.nbytes)


def main() -> None:
    """Print one block of lines per size."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    sizes = [parse_size(s) for s in sys.argv[2:]] or [4 << 10, 501 << 10, 4 << 20, 1 << 30]
    with tf.Environment() as env:
        device = env.device("webgpu")
        print(f"# {device}; medians of {rounds}")
        for nbytes in sizes:
            _measure(env, device, nbytes, rounds)


def _measure(env: tf.Environment, device: tf.Device, nbytes: int, rounds: int) -> None:
    data = np.random.default_rng(nbytes).integers(0, 255, nbytes, np.uint8)
    tensor = env.from_numpy(data, device)
    storage = tensor.storage
    context = storage.context  # type: ignore[attr-defined]
    gpu, queue, source = context.gpu, context.queue, storage.buffer  # type: ignore[attr-defined]
    offset = storage.base + tensor.offset  # type: ignore[attr-defined]
    reused = Mapped(gpu, nbytes)
    destroys: list[float] = []

    def fresh() -> Bytes:
        mapped = Mapped(gpu, nbytes)
        array = mapped.fill_from(source, offset, queue)
        assert array[-1] == data[-1]
        del array
        start = time.perf_counter()
        mapped.buffer.unmap()
        mapped.buffer.destroy()
        destroys.append(time.perf_counter() - start)
        return data

    ways: dict[str, Callable[[], object]] = {
        "numpy()": tensor.numpy,
        "fresh buffer": fresh,
        "reused buffer": lambda: reused.fill_from(source, offset, queue),
    }
    times = alternating_seconds(ways, rounds)
    for name, values in times.items():
        print(f"{nbytes:>11} {name:<14} {_show(nbytes, values)}")
    print(f"{nbytes:>11} {'destroy':<14} {np.median(destroys) * 1e6:9.1f} us")
    lent = reused.fill_from(source, offset, queue)
    assert np.array_equal(lent, data), "the mapped bytes differ from the data"
    own = tensor.numpy()
    for name, array in (("read numpy()", own), ("read mapped", lent)):
        words = array[: nbytes - nbytes % 8].view(np.uint64)
        words.sum()
        start = time.perf_counter()
        for _ in range(3):
            words.sum()
        rate = 3 * words.nbytes / (time.perf_counter() - start) / 1e9
        print(f"{nbytes:>11} {name:<14} {rate:9.2f} GB/s")
    del lent, own
    reused.buffer.unmap()
    reused.buffer.destroy()


def _show(nbytes: int, values: list[float]) -> str:
    if nbytes < 1 << 20:
        return f"{np.median(values) * 1e6:9.1f} us p50 ({np.percentile(values, 90) * 1e6:.1f} p90)"
    return f"{nbytes / np.median(values) / 1e9:9.2f} GB/s ({np.median(values) * 1e3:.2f} ms)"


if __name__ == "__main__":
    main()
