"""Transfers beyond the shared conformance suite: chunked staging, batches that mix
directions, randomized byte-exactness against a numpy model, copies between two
WebGPU devices, zero-byte tensors, asynchronous batches, bounded staging memory.

Most tests use contexts with small staging chunks (64 KiB, two per direction), so
tensors of a few MiB cross in dozens of chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw

CHUNK = 64 << 10
CHUNKS = 2
MIB = 1 << 20

Bytes = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def chunked_env(staged_options: Callable[..., Any]) -> Iterator[tf.Environment]:
    """An environment whose WebGPU contexts stage every byte through 2 chunks of
    64 KiB per direction."""
    env = tf.Environment(backends=[])
    options = staged_options(staging_chunk=CHUNK, staging_chunks=CHUNKS)
    env.register_backend("webgpu", tw.WebGPUBackend(options))
    yield env
    env.close()


@pytest.fixture
def chunked_device(chunked_env: tf.Environment, webgpu_index: int) -> tf.Device:
    return chunked_env.device(f"webgpu:{webgpu_index}")


def random_bytes(rng: np.random.Generator, n: int) -> Bytes:
    return rng.integers(0, 256, n, dtype=np.uint8)


def host_view(env: tf.Environment, array: Bytes) -> tf.Tensor:
    """A tensor sharing ``array``'s memory (writes land in the array)."""
    return env.from_numpy(array, copy=False)


def assert_same_bytes(actual: Bytes, expected: Bytes, what: str) -> None:
    if not np.array_equal(actual, expected):
        wrong = np.flatnonzero(actual != expected)
        raise AssertionError(
            f"{what}: {wrong.size} of {expected.size} bytes differ, first at {wrong[:8].tolist()}"
        )


@pytest.fixture
def staging_env(
    make_env: Callable[..., tf.Environment],
    staged_options: Callable[..., Any],
    webgpu_index: int,
    staging_spy: Callable[[Any], Any],
) -> tuple[tf.Environment, tf.Device, Any]:
    """A fresh environment like ``chunked_env``, one of its devices, and a record
    of that device's staging buffers from the context's creation on."""
    env = make_env(staged_options(staging_chunk=CHUNK, staging_chunks=CHUNKS))
    device = env.device(f"webgpu:{webgpu_index}")
    return env, device, staging_spy(tw.backend_of(env).context(device))


def assert_staging_bounded(record: Any) -> None:
    """At most ``staging_chunks`` staging buffers of ``staging_chunk`` bytes per
    direction ever existed, and they were reused."""
    for direction in ("upload", "download"):
        distinct = record.distinct(direction)
        created = record.created[direction]
        assert distinct, f"no {direction} staging buffer was used"
        assert created, f"the spy saw no {direction} staging buffer being created"
        assert len(created) <= CHUNKS, (
            f"{len(created)} {direction} staging buffers were created, more than "
            f"staging_chunks={CHUNKS}"
        )
        assert len(distinct) <= CHUNKS
        assert {b.size for b in distinct} == {CHUNK}
        assert len(record.handed_out[direction]) > len(distinct), "chunks must be reused"


# chunked staging ------------------------------------------------------------


def test_multi_chunk_round_trip_at_odd_offsets(
    staging_env: tuple[tf.Environment, tf.Device, Any],
) -> None:
    env, device, record = staging_env
    rng = np.random.default_rng(11)
    n = 3 * MIB + 5
    initial = random_bytes(rng, n + 19)
    tensor = env.from_numpy(initial, device)
    payload = random_bytes(rng, n + 8)
    env.copy_tensor(host_view(env, payload)[3 : 3 + n], tensor[7 : 7 + n])
    expected = initial.copy()
    expected[7 : 7 + n] = payload[3 : 3 + n]
    assert_same_bytes(tensor.numpy(), expected, "device storage after an odd-offset upload")
    landing = np.full(n + 10, 0xA5, np.uint8)
    env.copy_tensor(tensor[2 : 2 + n], host_view(env, landing)[5 : 5 + n])
    want = np.full(n + 10, 0xA5, np.uint8)
    want[5 : 5 + n] = expected[2 : 2 + n]
    assert_same_bytes(landing, want, "host array after an odd-offset download")
    assert_staging_bounded(record)


def test_mixed_batch_with_multi_chunk_pairs(
    staging_env: tuple[tf.Environment, tf.Device, Any],
) -> None:
    """Uploads, downloads and device copies in one batch, several of them larger
    than a chunk, some reading what an earlier pair wrote: the result is that
    of a loop over the pairs."""
    env, device, record = staging_env
    rng = np.random.default_rng(12)
    big, mid = 2 * MIB + 1, MIB + 3
    model = {
        "a": random_bytes(rng, big + 9),
        "b": random_bytes(rng, mid + 5),
        "c": random_bytes(rng, 300),
    }
    dev = {name: env.from_numpy(data, device) for name, data in model.items()}
    x, y, small = random_bytes(rng, big + 1), random_bytes(rng, mid), random_bytes(rng, 100)
    got_b = np.zeros(mid + 4, np.uint8)
    got_a = np.zeros(big, np.uint8)
    pairs = [
        (host_view(env, x)[1:], dev["a"][5 : 5 + big]),
        (dev["b"][1:], host_view(env, got_b)),
        (host_view(env, small), dev["c"][3:103]),
        (dev["a"][5 : 5 + big], host_view(env, got_a)),
        (dev["b"][10:210], dev["c"][50:250]),
        (host_view(env, y), dev["b"][2 : 2 + mid]),
        (dev["b"][0:200], dev["a"][1:201]),
    ]
    expected_b_download = model["b"][1:].copy()
    model["a"][5 : 5 + big] = x[1:]
    model["c"][3:103] = small
    expected_a_download = model["a"][5 : 5 + big].copy()
    model["c"][50:250] = model["b"][10:210]
    model["b"][2 : 2 + mid] = y
    model["a"][1:201] = model["b"][0:200]
    env.copy_tensors([s for s, _ in pairs], [d for _, d in pairs])
    assert_same_bytes(got_b, expected_b_download, "download of b taken before b was overwritten")
    assert_same_bytes(got_a, expected_a_download, "download of a after the batch wrote it")
    for name, tensor in dev.items():
        assert_same_bytes(tensor.numpy(), model[name], f"device tensor {name}")
    assert_staging_bounded(record)


@pytest.mark.parametrize("n", [1000, 200_000, 3 * MIB + 3], ids=["1000B", "200KB", "3MiB"])
def test_download_then_upload_of_the_same_host_memory(
    chunked_env: tf.Environment, chunked_device: tf.Device, n: int
) -> None:
    """A batch downloads into host memory that a later pair of the same batch
    uploads from: the upload sends the downloaded bytes."""
    env, device = chunked_env, chunked_device
    rng = np.random.default_rng(n)
    data = random_bytes(rng, n)
    source = env.from_numpy(data, device)
    whole = env.zeros((n,), np.uint8, device)
    half = env.zeros((n - n // 2,), np.uint8, device)
    host = np.full(n + 8, 0x5A, np.uint8)
    staging = host_view(env, host)
    env.copy_tensors(
        [source, staging[3 : 3 + n], staging[3 + n // 2 : 3 + n]],
        [staging[3 : 3 + n], whole, half],
    )
    assert_same_bytes(whole.numpy(), data, "upload of freshly downloaded host memory")
    assert_same_bytes(half.numpy(), data[n // 2 :], "upload of part of it")
    assert_same_bytes(host[:3], np.full(3, 0x5A, np.uint8), "host bytes before the view")
    assert_same_bytes(host[3 + n :], np.full(5, 0x5A, np.uint8), "host bytes after the view")


@pytest.mark.parametrize(("src_at", "dst_at"), [(1, 6), (8, 0), (0, 4), (7, 2)])
def test_overlapping_multi_chunk_copy_within_one_tensor(
    chunked_env: tf.Environment, chunked_device: tf.Device, src_at: int, dst_at: int
) -> None:
    env, device = chunked_env, chunked_device
    rng = np.random.default_rng(src_at * 10 + dst_at)
    n = MIB + 13
    data = random_bytes(rng, n + 16)
    tensor = env.from_numpy(data, device)
    env.copy_tensor(tensor[src_at : src_at + n], tensor[dst_at : dst_at + n])
    expected = data.copy()
    expected[dst_at : dst_at + n] = data[src_at : src_at + n]
    assert_same_bytes(tensor.numpy(), expected, "overlapping copy within one storage")


def test_staging_stays_bounded_under_threads(
    staging_env: tuple[tf.Environment, tf.Device, Any],
) -> None:
    env, device, record = staging_env
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            data = random_bytes(rng, MIB + seed)
            tensor = env.from_numpy(data, device)
            out = np.empty_like(data)
            env.copy_tensors_async([tensor], [host_view(env, out)]).wait(60)
            assert_same_bytes(out, data, f"thread {seed}")
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert_staging_bounded(record)


# randomized byte-exactness --------------------------------------------------


class ByteModel:
    """Device tensors and host arrays beside a numpy model of their bytes; random
    batches of uploads, downloads, device copies and fills are applied to both."""

    def __init__(
        self,
        env: tf.Environment,
        devices: list[tf.Device],
        rng: np.random.Generator,
        largest: int = 300_000,
    ) -> None:
        self.env = env
        self.rng = rng
        self.models: list[Bytes] = []
        self.tensors: list[tf.Tensor] = []
        for i in range(6):
            initial = random_bytes(rng, int(rng.integers(1, largest)))
            self.models.append(initial.copy())
            self.tensors.append(env.from_numpy(initial, devices[i % len(devices)]))
        self.host: list[Bytes] = [
            random_bytes(rng, int(rng.integers(1, largest))) for _ in range(3)
        ]
        self.host_models = [h.copy() for h in self.host]
        self.host_tensors = [host_view(env, h) for h in self.host]

    def _span(self, limit: int) -> int:
        if self.rng.random() < 0.5:
            return int(self.rng.integers(0, min(limit, 64) + 1))
        return int(self.rng.integers(0, limit + 1))

    def _pick(self, side: str) -> tuple[tf.Tensor, Bytes]:
        if side == "device":
            k = int(self.rng.integers(len(self.tensors)))
            return self.tensors[k], self.models[k]
        k = int(self.rng.integers(len(self.host)))
        return self.host_tensors[k], self.host_models[k]

    def random_pair(self) -> tuple[tf.Tensor, tf.Tensor]:
        kind = ["up", "down", "within"][int(self.rng.integers(3))]
        src, src_model = self._pick("host" if kind == "up" else "device")
        dst, dst_model = self._pick("host" if kind == "down" else "device")
        n = self._span(min(src.nbytes, dst.nbytes))
        s = int(self.rng.integers(0, src.nbytes - n + 1))
        d = int(self.rng.integers(0, dst.nbytes - n + 1))
        dst_model[d : d + n] = src_model[s : s + n].copy()
        return src[s : s + n], dst[d : d + n]

    def random_fill(self) -> None:
        k = int(self.rng.integers(len(self.tensors)))
        tensor, model = self.tensors[k], self.models[k]
        dtype = np.dtype([np.uint8, np.uint16, np.uint32, np.float64][int(self.rng.integers(4))])
        count = self._span(tensor.nbytes // dtype.itemsize)
        start = int(self.rng.integers(0, tensor.nbytes - count * dtype.itemsize + 1))
        value = int(self.rng.integers(0, 256))
        view = tensor[start : start + count * dtype.itemsize].view(dtype)
        self.env.fill(view, value)
        model[start : start + count * dtype.itemsize] = (
            np.full(count, value, dtype).view(np.uint8).reshape(-1)
        )

    def step(self) -> None:
        if self.rng.random() < 0.2:
            self.random_fill()
            return
        pairs = [self.random_pair() for _ in range(int(self.rng.integers(1, 8)))]
        self.env.copy_tensors([s for s, _ in pairs], [d for _, d in pairs])

    def check(self, when: str) -> None:
        for k, (tensor, model) in enumerate(zip(self.tensors, self.models, strict=True)):
            assert_same_bytes(tensor.numpy(), model, f"device tensor {k} ({tensor.device}) {when}")
        for k, (array, model) in enumerate(zip(self.host, self.host_models, strict=True)):
            assert_same_bytes(array, model, f"host array {k} {when}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_randomized_batches_are_byte_exact(
    chunked_env: tf.Environment, chunked_device: tf.Device, seed: int
) -> None:
    model = ByteModel(chunked_env, [chunked_device], np.random.default_rng(seed))
    for step in range(40):
        model.step()
        model.check(f"after step {step} (seed {seed})")


def test_randomized_large_batches_with_default_options(
    env: tf.Environment, device: tf.Device
) -> None:
    """Tensors up to 3 MiB with the default options, which may map large tensors
    directly instead of staging them."""
    model = ByteModel(env, [device], np.random.default_rng(5), largest=3 * MIB)
    for step in range(20):
        model.step()
        model.check(f"after step {step}")


def test_randomized_batches_across_devices(chunked_env: tf.Environment) -> None:
    devices = [d for d in chunked_env.devices() if d.backend == "webgpu"]
    if len(devices) < 2:
        pytest.skip("needs two WebGPU devices")
    model = ByteModel(chunked_env, devices, np.random.default_rng(4))
    for step in range(40):
        model.step()
        model.check(f"after step {step}")


# copies between two WebGPU devices ------------------------------------------


@pytest.fixture
def two_devices(
    chunked_env: tf.Environment, two_adapters: Callable[..., tuple[tf.Device, tf.Device]]
) -> tuple[tf.Device, tf.Device]:
    return two_adapters(d for d in chunked_env.devices() if d.backend == "webgpu")


def test_cross_device_copies_route_through_host(
    chunked_env: tf.Environment, two_devices: tuple[tf.Device, tf.Device]
) -> None:
    env, (first, second) = chunked_env, two_devices
    manager = env.data_transfer_manager
    assert manager.get_data_transfer(first, second) is None, "no direct path between adapters"
    assert manager.get_data_transfer(first, tf.HOST) is not None
    rng = np.random.default_rng(21)
    n = 3 * MIB + 7
    a_data, b_data = random_bytes(rng, n + 11), random_bytes(rng, n + 20)
    a, b = env.from_numpy(a_data, first), env.from_numpy(b_data, second)
    env.copy_tensor(a[3 : 3 + n], b[9 : 9 + n])
    b_data[9 : 9 + n] = a_data[3 : 3 + n]
    assert_same_bytes(b.numpy(), b_data, f"{second} after a copy from {first}")
    env.copy_tensor(b[1 : 1 + n], a[0:n])
    a_data[0:n] = b_data[1 : 1 + n]
    assert_same_bytes(a.numpy(), a_data, f"{first} after a copy from {second}")


def test_chain_through_both_devices_in_one_batch(
    chunked_env: tf.Environment, two_devices: tuple[tf.Device, tf.Device]
) -> None:
    env, (first, second) = chunked_env, two_devices
    rng = np.random.default_rng(22)
    n = 300_001
    data = random_bytes(rng, n)
    a, b = env.zeros((n + 1,), np.uint8, first), env.zeros((n + 2,), np.uint8, second)
    back = np.zeros(n, np.uint8)
    env.copy_tensors(
        [host_view(env, data), a[1:], b[2:]],
        [a[1:], b[2:], host_view(env, back)],
    )
    assert_same_bytes(back, data, "host -> first -> second -> host in one batch")
    handle = env.copy_tensors_async([b[2:]], [a[:n]])
    handle.wait(60)
    assert_same_bytes(a[:n].numpy(), data, "asynchronous copy between the devices")


# zero-byte tensors ----------------------------------------------------------


def test_zero_byte_tensors(env: tf.Environment, device: tf.Device) -> None:
    empty = env.empty((0,), np.float32, device)
    assert empty.nbytes == 0
    assert empty.numpy().shape == (0,)
    with pytest.raises(ValueError, match="no bytes"):
        tw.buffer_of(empty)
    env.copy_tensor(env.from_numpy(np.empty(0, np.float32)), empty)
    env.copy_tensor(empty, env.empty((0,), np.float32, device))
    env.fill(empty, 3.0)
    wide = env.zeros((3, 0, 2), np.int64, device)
    assert wide.numpy().shape == (3, 0, 2)
    handle = env.copy_tensors_async([empty], [env.empty((0,), np.float32)])
    handle.wait(10)
    assert handle.done()


def test_zero_length_views_in_a_batch(env: tf.Environment, device: tf.Device) -> None:
    """Zero-byte pairs among real ones change nothing; the real ones land."""
    data = np.arange(10, dtype=np.uint8)
    tensor = env.from_numpy(data, device)
    nothing = np.empty(0, np.uint8)
    env.copy_tensors(
        [env.from_numpy(np.array([7, 8, 9], np.uint8)), host_view(env, nothing), tensor[7:7]],
        [tensor[1:4], tensor[5:5], host_view(env, nothing)],
    )
    env.copy_tensors([tensor[0:0], tensor[2:2]], [tensor[9:9], tensor[3:3]])
    expected = data.copy()
    expected[1:4] = [7, 8, 9]
    assert_same_bytes(tensor.numpy(), expected, "tensor after a batch with empty views")


def test_zero_byte_copy_between_devices(
    chunked_env: tf.Environment, two_devices: tuple[tf.Device, tf.Device]
) -> None:
    env, (first, second) = chunked_env, two_devices
    env.copy_tensor(env.empty((0, 4), np.float32, first), env.empty((0, 4), np.float32, second))


# asynchronous batches -------------------------------------------------------


def test_async_returns_before_the_copy_lands(env: tf.Environment, device: tf.Device) -> None:
    """With the device busy (its context lock held), copy_tensors_async returns a
    handle that is not done and times out; once the device is free it lands."""
    data = np.random.default_rng(31).integers(0, 256, MIB, dtype=np.uint8)
    source = env.from_numpy(data, device)
    out = np.zeros(MIB, np.uint8)
    context = tw.backend_of(env).context(device)
    with context.lock:
        handle = env.copy_tensors_async([source], [host_view(env, out)])
        assert isinstance(handle, tf.TransferHandle)
        assert not handle.done()
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.05)
        assert not out.any(), "nothing may land while the device is busy"
    handle.wait(timeout=60)
    assert handle.done()
    handle.wait(timeout=0)  # a finished handle returns at once, again
    assert_same_bytes(out, data, "destination of the asynchronous download")


def test_async_overlaps_host_work(env: tf.Environment, device: tf.Device) -> None:
    rng = np.random.default_rng(32)
    n = 8 * MIB + 3
    down_data, up_data = random_bytes(rng, n), random_bytes(rng, n)
    source = env.from_numpy(down_data, device)
    target = env.empty((n,), np.uint8, device)
    out = np.zeros(n, np.uint8)
    handle = env.copy_tensors_async(
        [source, host_view(env, up_data)], [host_view(env, out), target]
    )
    busy = np.sort(rng.random(1 << 20))  # host work while the copies run
    assert busy[0] <= busy[-1]
    handle.wait(timeout=120)
    assert handle.done()
    assert_same_bytes(out, down_data, "asynchronous download")
    assert_same_bytes(target.numpy(), up_data, "asynchronous upload")


def test_async_validation_errors_are_raised_at_once(env: tf.Environment, device: tf.Device) -> None:
    tensor = env.from_numpy(np.arange(4, dtype=np.float32), device)
    with pytest.raises(tf.IncompatibleTensorsError):
        env.copy_tensors_async([tensor], [env.empty((5,), np.float32)])
    read_only = np.zeros(4, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(tf.InvalidArrayError):
        env.copy_tensors_async([tensor], [env.from_numpy(read_only, copy=False)])


@pytest.mark.parametrize("width", [1024, 1000], ids=["rows-16B-aligned", "rows-with-staging-gaps"])
def test_downloads_into_neighbouring_rows_of_one_array(
    env: tf.Environment, device: tf.Device, width: int
) -> None:
    """Many small downloads into rows of one host array (their host copies merge
    where rows and staging are adjacent) land byte-exact: rows in order, rows out
    of order, odd-sized rows, and a row written twice (the later pair wins)."""
    rng = np.random.default_rng(11)
    rows = 300
    data = [random_bytes(rng, width) for _ in range(rows)]
    sources = [env.from_numpy(d, device) for d in data]
    odd = env.from_numpy(random_bytes(rng, 7), device)
    host = np.zeros((rows + 2, width), np.uint8)
    target = env.from_numpy(host, copy=False)
    order = [*range(150), *range(299, 149, -1)]  # ascending, then descending rows
    srcs = [sources[i] for i in order] + [odd, sources[5]]
    dsts = [target[i] for i in order] + [target[rows].view(np.uint8)[3:10], target[rows + 1]]
    srcs.append(sources[7])
    dsts.append(target[rows + 1])  # written twice: sources[7] must win over sources[5]
    env.copy_tensors(srcs, dsts)
    for i in range(rows):
        assert_same_bytes(host[i], data[i], f"row {i}")
    expected_odd = np.zeros(width, np.uint8)
    expected_odd[3:10] = odd.numpy()
    assert_same_bytes(host[rows], expected_odd, "the odd-sized row and its neighbours")
    assert_same_bytes(host[rows + 1], data[7], "the row written twice")
