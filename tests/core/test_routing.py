"""Streamed routes and fan-out on the toy backend: two toy devices no transfer connects.

The toy transfer is real (bytes move through bytearrays); :class:`_Hooked` wraps it
to see calls and to hold a call at a gate, which is how the tests prove that work
overlaps without timing anything. Device bytes are written and read through the
toy's raw access, bypassing the transfers under test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tensorferry_toy
from tensorferry import (
    ClosedError,
    CopyPair,
    DataTransferManager,
    Device,
    HostStorage,
    Storage,
    Tensor,
)
from tensorferry_cpu import CpuDataTransfer

CHUNK = 4096
GATE_TIMEOUT = 30.0
"""Seconds a gated call waits before failing the test: only reached when the
overlap the test is about does not happen (the run would otherwise hang)."""


class _Hooked:
    """The toy transfer, with ``hook(pairs)`` called before each batch it copies."""

    def __init__(self, inner: tensorferry_toy.ToyDataTransfer) -> None:
        self.inner = inner
        self.hook: Callable[[Sequence[CopyPair]], object] = lambda pairs: None
        self.lock = threading.Lock()
        self.calls: list[list[CopyPair]] = []
        self.running = 0

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return self.inner.can_copy(src_device, dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        with self.lock:
            self.calls.append(list(pairs))
            self.running += 1
        try:
            self.hook(pairs)
            self.inner.copy_tensors(pairs)
        finally:
            with self.lock:
                self.running -= 1

    def close(self) -> None:
        self.inner.close()


class _Rig:
    """A manager wired with the cpu transfer and the hooked toy transfer, counting the
    host memory it allocates."""

    def __init__(self, **options: Any) -> None:
        self.backend = tensorferry_toy.ToyBackend()
        (toy,) = self.backend.data_transfers()
        self.toy = _Hooked(toy)
        self.allocated: list[int] = []
        self.manager = DataTransferManager(host_allocator=self._allocate, **options)
        self.manager.register_data_transfer(CpuDataTransfer())
        self.manager.register_data_transfer(self.toy)
        self.devices = self.backend.devices()

    def _allocate(self, nbytes: int) -> HostStorage:
        self.allocated.append(nbytes)
        return HostStorage.allocate(nbytes)

    def tensor(self, data: npt.ArrayLike, device: int, *, offset: int = 0) -> Tensor:
        """A toy tensor at byte ``offset`` of fresh storage (with slack after it)."""
        array = np.ascontiguousarray(data)
        storage = self.backend.allocate(self.devices[device], offset + array.nbytes + 7)
        self.backend.write_raw(storage, 0, bytes(np.full(storage.nbytes, 0xAB, np.uint8)))
        self.backend.write_raw(storage, offset, array.tobytes())
        return Tensor(storage, array.shape, array.dtype, offset)

    def read(self, tensor: Tensor) -> npt.NDArray[Any]:
        raw = self.backend.read_raw(tensor.storage, tensor.offset, tensor.nbytes)
        return np.frombuffer(raw, tensor.dtype).reshape(tensor.shape)

    def outside(self, tensor: Tensor) -> bytes:
        """The storage's bytes around the tensor's view."""
        storage = tensor.storage
        whole = self.backend.read_raw(storage, 0, storage.nbytes)
        return whole[: tensor.offset] + whole[tensor.offset + tensor.nbytes :]

    def close(self) -> None:
        self.manager.close()
        self.backend.close()


@pytest.fixture
def make_rig() -> Iterator[Callable[..., _Rig]]:
    made: list[_Rig] = []

    def make(**options: Any) -> _Rig:
        options.setdefault("stream_chunk_bytes", CHUNK)
        rig = _Rig(**options)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _uploads(pairs: Sequence[CopyPair]) -> bool:
    return pairs[0][0].device.is_host


# streamed routes ------------------------------------------------------------------


def test_routes_are_whole_unless_streaming_is_asked_for() -> None:
    """Streaming is opt-in: by default a routed pair goes through one host buffer
    of its own size, one download and one upload."""
    rig = _Rig()
    try:
        nbytes = 10 * CHUNK + 5
        data = np.random.default_rng(7).integers(0, 256, nbytes, dtype=np.uint8)
        src = rig.tensor(data, 0, offset=3)
        dst = rig.tensor(np.zeros(nbytes, np.uint8), 1)
        rig.manager.copy_tensor(src, dst)
        np.testing.assert_array_equal(rig.read(dst), data)
        assert rig.allocated == [nbytes]
        assert len(rig.toy.calls) == 2
    finally:
        rig.close()


@pytest.mark.parametrize(
    ("nbytes", "src_offset", "dst_offset", "chunks"),
    [
        (CHUNK + 1, 0, 0, 2),
        (10 * CHUNK + 123, 3, 0, 2),
        (10 * CHUNK + 123, 0, 5, 3),
        (7 * CHUNK - 1, 1001, 77, 3),
        (25 * CHUNK, 255, 257, 4),
    ],
    ids=["just-over-a-chunk", "odd-source", "odd-destination", "both-odd", "many-chunks"],
)
def test_streamed_route_is_byte_exact(
    make_rig: Callable[..., _Rig], nbytes: int, src_offset: int, dst_offset: int, chunks: int
) -> None:
    rig = make_rig(stream_chunks=chunks)
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    src = rig.tensor(data, 0, offset=src_offset)
    dst = rig.tensor(np.zeros(nbytes, np.uint8), 1, offset=dst_offset)
    before = rig.outside(dst)
    rig.manager.copy_tensor(src, dst)
    np.testing.assert_array_equal(rig.read(dst), data)
    assert rig.outside(dst) == before
    assert len(rig.toy.calls) > 2 * (nbytes // CHUNK)  # a download and an upload per chunk


def test_streamed_route_keeps_any_dtype_and_shape(make_rig: Callable[..., _Rig]) -> None:
    rig = make_rig()
    data = np.arange(3 * 5 * 1000, dtype=np.complex64).reshape(3, 5, 1000)
    src = rig.tensor(data, 0, offset=8)
    dst = rig.tensor(np.zeros_like(data), 1, offset=16)
    rig.manager.copy_tensors([src[1:3]], [dst[0:2]])
    np.testing.assert_array_equal(rig.read(dst)[0:2], data[1:3])
    np.testing.assert_array_equal(rig.read(dst)[2], np.zeros_like(data[2]))


@pytest.mark.parametrize("chunks", [2, 3])
def test_streamed_route_staging_is_bounded(make_rig: Callable[..., _Rig], chunks: int) -> None:
    rig = make_rig(stream_chunks=chunks)
    nbytes = 40 * CHUNK + 17
    data = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8)
    dst = rig.tensor(np.zeros(nbytes, np.uint8), 1)
    rig.manager.copy_tensor(rig.tensor(data, 0), dst)
    np.testing.assert_array_equal(rig.read(dst), data)
    assert rig.allocated == [CHUNK] * chunks
    assert sum(rig.allocated) <= chunks * CHUNK < nbytes


def test_small_routed_pairs_take_the_plain_route(make_rig: Callable[..., _Rig]) -> None:
    rig = make_rig()
    sources = [rig.tensor(np.full(CHUNK // 8, i, np.int64), 0) for i in range(3)]
    targets = [rig.tensor(np.zeros(CHUNK // 8, np.int64), 1) for _ in range(3)]
    rig.manager.copy_tensors(sources, targets)
    assert rig.allocated == [CHUNK] * 3  # one whole-tensor staging buffer per pair
    assert len(rig.toy.calls) == 2  # every download in one call, every upload in another
    for i, target in enumerate(targets):
        np.testing.assert_array_equal(rig.read(target), np.full(CHUNK // 8, i))


def test_next_chunk_downloads_while_the_previous_one_uploads(
    make_rig: Callable[..., _Rig],
) -> None:
    """The first upload is held until the second download has started: without
    overlap the route could never get there, and the test fails at the gate."""
    rig = make_rig(stream_chunks=2)
    second_download = threading.Event()
    downloads = 0

    def hook(pairs: Sequence[CopyPair]) -> None:
        nonlocal downloads
        if _uploads(pairs):
            if not second_download.wait(GATE_TIMEOUT):
                raise AssertionError("chunk 1 was not downloaded while chunk 0 uploaded")
        else:
            downloads += 1
            if downloads == 2:
                second_download.set()

    rig.toy.hook = hook
    data = np.random.default_rng(2).integers(0, 256, 6 * CHUNK, dtype=np.uint8)
    dst = rig.tensor(np.zeros(6 * CHUNK, np.uint8), 1)
    rig.manager.copy_tensor(rig.tensor(data, 0), dst)
    np.testing.assert_array_equal(rig.read(dst), data)


@pytest.mark.parametrize("failing", ["download", "upload"])
def test_an_error_mid_stream_raises_after_every_started_upload_landed(
    make_rig: Callable[..., _Rig], failing: str
) -> None:
    rig = make_rig(stream_chunks=3)
    seen = {"download": 0, "upload": 0}

    def hook(pairs: Sequence[CopyPair]) -> None:
        kind = "upload" if _uploads(pairs) else "download"
        seen[kind] += 1
        if kind == failing and seen[kind] == 4:
            raise RuntimeError(f"planted {kind} failure")

    rig.toy.hook = hook
    data = np.ones(12 * CHUNK, np.uint8)
    src, dst = rig.tensor(data, 0), rig.tensor(np.zeros(12 * CHUNK, np.uint8), 1)
    with pytest.raises(RuntimeError, match=f"planted {failing} failure"):
        rig.manager.copy_tensor(src, dst)
    assert rig.toy.running == 0  # nothing of the failed copy still runs
    assert seen["download"] < 12  # it stopped starting chunks
    rig.toy.hook = lambda pairs: None
    rig.manager.copy_tensor(src, dst)  # the manager is fine afterwards
    np.testing.assert_array_equal(rig.read(dst), data)


def test_unregister_with_wait_waits_for_a_routed_stream(make_rig: Callable[..., _Rig]) -> None:
    rig = make_rig()
    release, uploading = threading.Event(), threading.Event()

    def hook(pairs: Sequence[CopyPair]) -> None:
        if _uploads(pairs):
            uploading.set()
            release.wait(GATE_TIMEOUT)

    rig.toy.hook = hook
    data = np.arange(8 * CHUNK, dtype=np.uint8)
    src, dst = rig.tensor(data, 0), rig.tensor(np.zeros(8 * CHUNK, np.uint8), 1)
    copier = threading.Thread(target=rig.manager.copy_tensor, args=(src, dst))
    copier.start()
    assert uploading.wait(GATE_TIMEOUT)
    unregistered = threading.Event()

    def unregister() -> None:
        rig.manager.unregister_data_transfer(rig.toy, wait=True)
        unregistered.set()

    waiter = threading.Thread(target=unregister)
    waiter.start()
    assert not unregistered.wait(0.2)  # still streaming: unregister must not have returned
    release.set()
    waiter.join(GATE_TIMEOUT)
    copier.join(GATE_TIMEOUT)
    assert unregistered.is_set()
    np.testing.assert_array_equal(rig.read(dst), data)


def test_async_routed_stream_lands_before_close_returns(make_rig: Callable[..., _Rig]) -> None:
    rig = make_rig()
    release = threading.Event()
    rig.toy.hook = lambda pairs: None if not _uploads(pairs) else release.wait(GATE_TIMEOUT)
    data = np.arange(8 * CHUNK, dtype=np.uint8)
    src, dst = rig.tensor(data, 0), rig.tensor(np.zeros(8 * CHUNK, np.uint8), 1)
    handle = rig.manager.copy_tensors_async([src], [dst])
    assert not handle.done()  # held at the gate: it runs in the background
    closer = threading.Thread(target=rig.manager.close)
    closer.start()
    release.set()
    closer.join(GATE_TIMEOUT)
    assert handle.done()
    handle.wait()
    np.testing.assert_array_equal(rig.read(dst), data)
    with pytest.raises(ClosedError):
        rig.manager.copy_tensor(src, dst)


def test_async_routed_stream_error_is_raised_by_wait(make_rig: Callable[..., _Rig]) -> None:
    rig = make_rig()

    def hook(pairs: Sequence[CopyPair]) -> None:
        if _uploads(pairs):
            raise OSError("planted upload failure")

    rig.toy.hook = hook
    src = rig.tensor(np.ones(4 * CHUNK, np.uint8), 0)
    handle = rig.manager.copy_tensors_async([src], [rig.tensor(np.zeros(4 * CHUNK, np.uint8), 1)])
    with pytest.raises(OSError, match="planted upload failure"):
        handle.wait()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"stream_chunk_bytes": 100}, ValueError, "stream_chunk_bytes must be >= 4096, got 100"),
        ({"stream_chunk_bytes": "8M"}, TypeError, "stream_chunk_bytes must be an int, got str"),
        ({"stream_chunks": 1}, ValueError, "stream_chunks must be >= 2, got 1"),
        ({"stream_chunks": 2.0}, TypeError, "stream_chunks must be an int, got float"),
        ({"fan_out_threads": -1}, ValueError, "fan_out_threads must be >= 0"),
        ({"fan_out_threads": True}, TypeError, "fan_out_threads must be an int, got bool"),
    ],
    ids=["tiny-chunk", "chunk-str", "one-buffer", "chunks-float", "negative-threads", "bool"],
)
def test_bad_routing_options_are_refused(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        DataTransferManager(**options)


# fan-out --------------------------------------------------------------------------


def test_groups_of_different_devices_run_at_once(make_rig: Callable[..., _Rig]) -> None:
    """The toy:0 group is held until the toy:1 group has started: run one after the
    other, the batch could never get there, and the test fails at the gate."""
    rig = make_rig()
    second_started = threading.Event()

    def hook(pairs: Sequence[CopyPair]) -> None:
        device = pairs[0][1].device if _uploads(pairs) else pairs[0][0].device
        if device.index == 1:
            second_started.set()
        elif not second_started.wait(GATE_TIMEOUT):
            raise AssertionError("the toy:1 group did not start while toy:0 copied")

    rig.toy.hook = hook
    host = Tensor(HostStorage.allocate(64), (64,), np.uint8)
    targets = [rig.tensor(np.zeros(64, np.uint8), 0), rig.tensor(np.zeros(64, np.uint8), 1)]
    host.host_array()[:] = 9
    rig.manager.copy_tensors([host, host], targets)
    for target in targets:
        np.testing.assert_array_equal(rig.read(target), np.full(64, 9))


def test_an_error_in_one_group_is_raised_after_the_others_finished(
    make_rig: Callable[..., _Rig],
) -> None:
    rig = make_rig()

    def hook(pairs: Sequence[CopyPair]) -> None:
        if pairs[0][1].device.index == 1:
            raise ValueError("planted toy:1 failure")

    rig.toy.hook = hook
    host = Tensor(HostStorage.wrap(np.full(64, 5, np.uint8)), (64,), np.uint8)
    on0, on1 = rig.tensor(np.zeros(64, np.uint8), 0), rig.tensor(np.zeros(64, np.uint8), 1)
    with pytest.raises(ValueError, match="planted toy:1 failure"):
        rig.manager.copy_tensors([host, host], [on0, on1])
    assert rig.toy.running == 0
    np.testing.assert_array_equal(rig.read(on0), np.full(64, 5))


@pytest.mark.parametrize("threads", [0, 8])
def test_mixed_batches_with_dependencies_equal_a_loop(
    make_rig: Callable[..., _Rig], threads: int
) -> None:
    """Random batches over toy:0, toy:1 and host memory, with routed pairs (small and
    streamed) and dependent pairs across devices, end as copying pair by pair would."""
    rig = make_rig(fan_out_threads=threads)
    rng = np.random.default_rng(threads)
    length = 3 * CHUNK
    host = rng.integers(0, 256, length, dtype=np.uint8)
    storages: dict[str, Storage] = {"host": HostStorage.wrap(host)}
    mirrors = {"host": host.copy()}
    for name, index in (("toy0", 0), ("toy1", 1)):
        start = rng.integers(0, 256, length, dtype=np.uint8)
        storages[name] = rig.tensor(start, index).storage
        mirrors[name] = start.copy()
    names = sorted(storages)
    for _ in range(60):
        sources, targets = [], []
        for _ in range(int(rng.integers(1, 7))):
            src_name, dst_name = rng.choice(names, 2)
            count = int(rng.choice([0, 1, 17, 1000, CHUNK + 5, 2 * CHUNK + 3]))
            src_at, dst_at = (int(x) for x in rng.integers(0, length - count + 1, 2))
            sources.append(Tensor(storages[src_name], (count,), np.uint8, src_at))
            targets.append(Tensor(storages[dst_name], (count,), np.uint8, dst_at))
            mirrors[dst_name][dst_at : dst_at + count] = mirrors[src_name][
                src_at : src_at + count
            ].copy()
        rig.manager.copy_tensors(sources, targets)
        for name in names:
            whole = Tensor(storages[name], (length,), np.uint8)
            actual = whole.host_array() if name == "host" else rig.read(whole)
            np.testing.assert_array_equal(actual, mirrors[name], err_msg=name)
