"""Streamed routes and fan-out between two real adapters (lavapipe Vulkan and llvmpipe GL).

A standalone manager holds the cpu transfer and the WebGPU backend's transfer, so the
tests choose the stream's chunk size and count the host memory the route allocates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry as tf
from tensorferry_cpu import CpuDataTransfer

tw = pytest.importorskip("tensorferry_webgpu")

CHUNK = 64 << 10


class _Rig:
    def __init__(self, **options: Any) -> None:
        self.backend = tw.WebGPUBackend()
        self.allocated: list[int] = []
        self.fail_at: int | None = None  # the allocation (counting from 1) that fails
        self.manager = tf.DataTransferManager(
            host_allocator=self._allocate, stream_chunk_bytes=CHUNK, **options
        )
        self.manager.register_data_transfer(CpuDataTransfer())
        for transfer in self.backend.data_transfers():
            self.manager.register_data_transfer(transfer)
        self.devices = self.backend.devices()

    def _allocate(self, nbytes: int) -> tf.HostStorage:
        self.allocated.append(nbytes)
        if len(self.allocated) == self.fail_at:
            raise tf.OutOfDeviceMemoryError(f"planted: no host memory for {nbytes} bytes")
        return tf.HostStorage.allocate(nbytes)

    def empty(self, nbytes: int, device: int) -> tf.Tensor:
        return tf.Tensor(self.backend.allocate(self.devices[device], nbytes), (nbytes,), np.uint8)

    def upload(self, data: npt.NDArray[np.uint8], tensor: tf.Tensor) -> None:
        self.manager.copy_tensor(
            tf.Tensor(tf.HostStorage.wrap(data), data.shape, data.dtype), tensor
        )

    def download(self, tensor: tf.Tensor) -> npt.NDArray[Any]:
        out = np.empty(tensor.shape, tensor.dtype)
        self.manager.copy_tensor(tensor, tf.Tensor(tf.HostStorage.wrap(out), out.shape, out.dtype))
        return out

    def close(self) -> None:
        self.manager.close()
        self.backend.close()


def _two_adapter_rig(pick: Callable[..., tuple[tf.Device, tf.Device]], **options: Any) -> _Rig:
    """A rig whose devices 0 and 1 are of two different adapters."""
    result = _Rig(**options)
    try:
        result.devices = list(pick(result.devices))
    except BaseException:
        result.close()
        raise
    return result


@pytest.fixture
def rig(two_adapters: Callable[..., tuple[tf.Device, tf.Device]]) -> Iterator[_Rig]:
    result = _two_adapter_rig(two_adapters, stream_chunks=2)
    yield result
    result.close()


def _pattern(nbytes: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


@pytest.mark.parametrize("direction", [(0, 1), (1, 0)], ids=["vulkan-to-gl", "gl-to-vulkan"])
@pytest.mark.parametrize(
    ("nbytes", "src_at", "dst_at"),
    [(5 * CHUNK + 3, 0, 0), (7 * CHUNK + 1, 1, 3), (3 * CHUNK + 4095, 257, 6)],
    ids=["odd-size", "odd-offsets", "unaligned"],
)
def test_streamed_route_between_adapters_is_byte_exact(
    rig: _Rig, direction: tuple[int, int], nbytes: int, src_at: int, dst_at: int
) -> None:
    data = _pattern(nbytes, nbytes)
    source = rig.empty(src_at + nbytes + 5, direction[0])
    target = rig.empty(dst_at + nbytes + 5, direction[1])
    around = _pattern(target.nbytes, 7)
    rig.upload(_pattern(source.nbytes, 8), source)
    rig.upload(around, target)
    rig.upload(data, source[src_at : src_at + nbytes])
    rig.allocated.clear()
    rig.manager.copy_tensor(source[src_at : src_at + nbytes], target[dst_at : dst_at + nbytes])
    assert rig.allocated == [CHUNK, CHUNK]  # streamed through two chunk buffers
    expected = around.copy()
    expected[dst_at : dst_at + nbytes] = data
    np.testing.assert_array_equal(rig.download(target), expected)


def test_streamed_route_of_a_float_tensor(rig: _Rig) -> None:
    data = np.linspace(-1, 1, 100_003, dtype=np.float32)
    source = tf.Tensor(rig.backend.allocate(rig.devices[0], data.nbytes), data.shape, data.dtype)
    target = tf.Tensor(rig.backend.allocate(rig.devices[1], data.nbytes), data.shape, data.dtype)
    rig.manager.copy_tensor(tf.Tensor(tf.HostStorage.wrap(data), data.shape, data.dtype), source)
    handle = rig.manager.copy_tensors_async([source], [target])
    handle.wait()
    np.testing.assert_array_equal(rig.download(target), data)


def test_route_error_mid_stream_raises_after_the_started_upload_landed(rig: _Rig) -> None:
    """Host memory runs out after the first chunk is staged and uploading: the copy
    raises (nothing reports success), and the adapters stay usable."""
    nbytes = 8 * CHUNK
    source, target = rig.empty(nbytes, 0), rig.empty(nbytes, 1)
    data = _pattern(nbytes, 3)
    rig.upload(data, source)
    rig.fail_at = len(rig.allocated) + 2
    with pytest.raises(tf.OutOfDeviceMemoryError, match="planted"):
        rig.manager.copy_tensor(source, target)
    rig.fail_at = None
    rig.manager.copy_tensor(source, target)
    np.testing.assert_array_equal(rig.download(target), data)


@pytest.mark.parametrize("threads", [0, 8], ids=["in-order", "fan-out"])
def test_fan_out_over_both_adapters_and_host(
    threads: int, two_adapters: Callable[..., tuple[tf.Device, tf.Device]]
) -> None:
    """One batch: uploads to both adapters, downloads from both, a host copy, and
    pairs that depend on each other across devices (a download that a later
    upload to the other adapter reads, a routed pair from a tensor written earlier)."""
    rig = _two_adapter_rig(two_adapters, stream_chunks=2, fan_out_threads=threads)
    try:
        _mixed_batch(rig)
    finally:
        rig.close()


def _mixed_batch(rig: _Rig) -> None:
    nbytes = 3 * CHUNK + 12
    data = [_pattern(nbytes, seed) for seed in range(4)]
    host = [tf.Tensor(tf.HostStorage.wrap(d.copy()), (nbytes,), np.uint8) for d in data]
    middle = tf.Tensor(tf.HostStorage.allocate(nbytes), (nbytes,), np.uint8)
    back = [tf.Tensor(tf.HostStorage.allocate(nbytes), (nbytes,), np.uint8) for _ in range(2)]
    on0 = [rig.empty(nbytes, 0) for _ in range(3)]
    on1 = [rig.empty(nbytes, 1) for _ in range(3)]
    rig.upload(data[3], on0[2])
    rig.upload(data[3][::-1].copy(), on1[2])
    sources = [host[0], host[1], on0[2], on1[2], host[2], middle, on0[0], host[3]]
    targets = [on0[0], on1[0], back[0], back[1], middle, on1[1], on1[2], host[0]]
    rig.manager.copy_tensors(sources, targets)
    np.testing.assert_array_equal(rig.download(on0[0]), data[0])
    np.testing.assert_array_equal(rig.download(on1[0]), data[1])
    np.testing.assert_array_equal(back[0].host_array(), data[3])
    np.testing.assert_array_equal(back[1].host_array(), data[3][::-1])
    np.testing.assert_array_equal(rig.download(on1[1]), data[2])  # read middle after its write
    np.testing.assert_array_equal(rig.download(on1[2]), data[0])  # routed, after on0[0]'s write
    np.testing.assert_array_equal(host[0].host_array(), data[3])  # written after on0[0] read it


LATE_FAN_OUT = """
import json, threading
import numpy as np
import tensorferry as tf

env = tf.Environment()
devices = [d for d in env.devices() if d.backend == "webgpu"][:2]
targets = [env.zeros(4096, np.uint8, d) for d in devices]  # devices opened while main runs
result = {}

def late_batch():
    threading.main_thread().join()  # after the main thread has ended
    data = np.arange(4096, dtype=np.uint8)
    source = env.from_numpy(data, copy=False)
    env.copy_tensors([source] * len(targets), targets)  # one group per device: fan-out
    result["landed"] = all((t.numpy() == data).all() for t in targets)
    result["devices"] = len(targets)
    env.close()
    print(json.dumps(result), flush=True)

threading.Thread(target=late_batch).start()
"""


def test_fan_out_from_a_thread_that_outlives_the_main_thread(run_child: Any) -> None:
    """At interpreter shutdown executors refuse new work: the groups run on the
    calling thread instead, and the batch still lands."""
    report = run_child(LATE_FAN_OUT).report()
    assert report == {"landed": True, "devices": report["devices"]}
    assert report["devices"] >= 1
