"""DataTransferManager: registry, validation, grouping, order, routing, async, threads, close."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest

from tensorferry import (
    HOST,
    AsyncDataTransfer,
    ClosedError,
    CopyPair,
    DataTransferManager,
    Device,
    Environment,
    ForeignTensorError,
    HostStorage,
    IDataTransfer,
    IncompatibleTensorsError,
    InvalidArrayError,
    NoTransferError,
    Tensor,
    TransferHandle,
)
from tensorferry_cpu import CpuDataTransfer

MakeAccelerator = Callable[..., Any]


def _host(data: npt.ArrayLike, dtype: npt.DTypeLike = None) -> Tensor:
    """An ownerless host tensor over a fresh copy of ``data``."""
    array = np.array(data, dtype=dtype)
    return Tensor(HostStorage.wrap(array), array.shape, array.dtype)


def _values(tensor: Tensor) -> npt.NDArray[Any]:
    return tensor.host_array().copy()


@pytest.fixture
def acca(make_accelerator: MakeAccelerator) -> Any:
    """A fake accelerator with two devices whose transfer does every direction."""
    return make_accelerator("acca", device_count=2)


@pytest.fixture
def accb(make_accelerator: MakeAccelerator) -> Any:
    """A second fake accelerator, one device, host <-> device only."""
    return make_accelerator("accb", directions={"up", "down"})


@pytest.fixture
def wired(
    manager: DataTransferManager, recording_cpu: IDataTransfer, acca: Any, accb: Any
) -> DataTransferManager:
    """The standalone manager with the cpu, acca and accb transfers, in that order."""
    for transfer in (recording_cpu, acca.transfer, accb.transfer):
        manager.register_data_transfer(transfer)
    return manager


# registry ---------------------------------------------------------------------


MakeCpuTransfer = Callable[[str], Any]


def test_get_data_transfer_is_first_match_in_registration_order(
    manager: DataTransferManager, make_cpu_transfer: MakeCpuTransfer
) -> None:
    first, second = make_cpu_transfer("first"), make_cpu_transfer("second")
    manager.register_data_transfer(first)
    manager.register_data_transfer(second)
    assert manager.data_transfers == (first, second)
    assert manager.get_data_transfer(HOST, HOST) is first
    manager.unregister_data_transfer(first)
    assert manager.data_transfers == (second,)
    assert manager.get_data_transfer(HOST, HOST) is second
    manager.register_data_transfer(first)
    assert manager.data_transfers == (second, first)
    assert manager.get_data_transfer(HOST, HOST) is second


def test_get_data_transfer_returns_none_without_a_match(
    manager: DataTransferManager, recording_cpu: IDataTransfer
) -> None:
    assert manager.get_data_transfer(HOST, HOST) is None
    manager.register_data_transfer(recording_cpu)
    assert manager.get_data_transfer(HOST, Device("acca", 0)) is None


def test_copies_go_to_the_first_match_only(
    manager: DataTransferManager, make_cpu_transfer: MakeCpuTransfer
) -> None:
    first, second = make_cpu_transfer("first"), make_cpu_transfer("second")
    manager.register_data_transfer(first)
    manager.register_data_transfer(second)
    src, dst = _host([1, 2]), _host([0, 0])
    manager.copy_tensor(src, dst)
    assert first.calls == [[(src, dst)]]
    assert second.calls == []
    manager.unregister_data_transfer(first)
    manager.copy_tensor(src, dst)
    assert second.calls == [[(src, dst)]]


class _NoClose:
    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return True

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        raise AssertionError


@pytest.mark.parametrize(
    "candidate", [object(), "cpu", _NoClose()], ids=["object", "str", "no-close"]
)
def test_register_rejects_what_is_not_a_transfer(
    manager: DataTransferManager, candidate: Any
) -> None:
    with pytest.raises(TypeError, match=r"is not an IDataTransfer; expected .*can_copy"):
        manager.register_data_transfer(candidate)
    assert manager.data_transfers == ()


def test_register_twice_raises(manager: DataTransferManager, recording_cpu: IDataTransfer) -> None:
    manager.register_data_transfer(recording_cpu)
    with pytest.raises(ValueError, match="registered already"):
        manager.register_data_transfer(recording_cpu)
    assert manager.data_transfers == (recording_cpu,)


def test_unregister_unknown_raises(
    manager: DataTransferManager, recording_cpu: IDataTransfer
) -> None:
    with pytest.raises(LookupError, match="not registered"):
        manager.unregister_data_transfer(recording_cpu)


def test_unregister_does_not_close(
    manager: DataTransferManager, recording_cpu: IDataTransfer, events: list[str]
) -> None:
    manager.register_data_transfer(recording_cpu)
    manager.unregister_data_transfer(recording_cpu)
    assert events == []
    recording_cpu.copy_tensors([(_host([1]), _host([0]))])


def test_registry_changes_take_effect_for_the_next_copy(
    manager: DataTransferManager, acca: Any
) -> None:
    src, dst = _host([1, 2, 3]), acca.tensor([0, 0, 0])
    with pytest.raises(NoTransferError):
        manager.copy_tensor(src, dst)
    manager.register_data_transfer(acca.transfer)
    manager.copy_tensor(src, dst)
    np.testing.assert_array_equal(acca.read(dst), [1, 2, 3])
    manager.unregister_data_transfer(acca.transfer)
    with pytest.raises(NoTransferError):
        manager.copy_tensor(dst, src)


# validation -------------------------------------------------------------------


def _readonly_host() -> Tensor:
    array = np.zeros(3, np.float32)
    return Tensor(HostStorage.wrap(array, writable=False), (3,), np.float32)


def _bad_pair(kind: str, acca: Any, accb: Any) -> tuple[Any, Any]:
    good = np.arange(3, dtype=np.float32)
    if kind == "shape":
        return _host(good), _host(np.zeros(4, np.float32))
    if kind == "dtype":
        return _host(good), _host(np.zeros(3, np.int32))
    if kind == "reinterpretable":
        return _host(np.zeros((2, 3), np.float32)), _host(np.zeros(6, np.float32))
    if kind == "read-only":
        return _host(good), _readonly_host()
    if kind == "closed":
        src = acca.tensor(good)
        src.storage.closed = True
        return src, _host(good)
    if kind == "no-transfer":
        return _host(good), accb.tensor(good)
    if kind == "not-a-tensor":
        return _host(good), np.zeros(3, np.float32)
    raise AssertionError(kind)


BAD_PAIRS = {
    "shape": (
        IncompatibleTensorsError,
        r"pair 2: source is \(3,\) float32 but destination is \(4,\) float32; expected equal "
        r"shapes and dtypes \(12 vs 16 bytes\)",
    ),
    "dtype": (
        IncompatibleTensorsError,
        r"pair 2: source is \(3,\) float32 but destination is \(3,\) int32; .*"
        r"use \.view\(\) or \.reshape\(\)",
    ),
    "reinterpretable": (
        IncompatibleTensorsError,
        r"pair 2: source is \(2, 3\) float32 but destination is \(6,\) float32.*\.reshape\(\)",
    ),
    "read-only": (
        InvalidArrayError,
        r"pair 2: the destination Tensor\(.*\) is read-only; expected writable memory",
    ),
    "closed": (
        ClosedError,
        r"pair 2: the source Tensor\(device=acca:0.*\) has released storage; expected a live",
    ),
    "no-transfer": (
        NoTransferError,
        r"pair 2: no registered data transfer copies cpu -> accb:0, directly or through host",
    ),
    "not-a-tensor": (
        TypeError,
        r"pair 2: the destination is a ndarray, expected a tensorferry.Tensor",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_PAIRS))
def test_whole_batch_is_validated_before_any_copy(
    manager: DataTransferManager,
    recording_cpu: Any,
    acca: Any,
    accb: Any,
    events: list[str],
    kind: str,
) -> None:
    manager.register_data_transfer(recording_cpu)
    manager.register_data_transfer(acca.transfer)
    host_dst, device_dst = _host(np.zeros(3, np.float32)), acca.tensor(np.zeros(3, np.float32))
    bad_src, bad_dst = _bad_pair(kind, acca, accb)
    error, message = BAD_PAIRS[kind]
    with pytest.raises(error, match=message):
        manager.copy_tensors(
            [_host(np.ones(3, np.float32)), _host(np.ones(3, np.float32)), bad_src],
            [host_dst, device_dst, bad_dst],
        )
    assert events == []
    np.testing.assert_array_equal(_values(host_dst), np.zeros(3))
    np.testing.assert_array_equal(acca.read(device_dst), np.zeros(3))


@pytest.mark.parametrize("kind", list(BAD_PAIRS))
def test_a_bad_pair_in_the_middle_of_a_long_uniform_batch_stops_it_before_any_copy(
    manager: DataTransferManager,
    acca: Any,
    accb: Any,
    events: list[str],
    kind: str,
) -> None:
    """The planner's shortcuts for pairs that share one device pair (route and lane
    found once) still check every pair, and name the bad one."""
    manager.register_data_transfer(acca.transfer)
    sources = [_host(np.ones(3, np.float32)) for _ in range(1000)]
    destinations = [acca.tensor(np.zeros(3, np.float32)) for _ in range(1000)]
    sources[500], destinations[500] = _bad_pair(kind, acca, accb)
    error, message = BAD_PAIRS[kind]
    with pytest.raises(error, match=message.replace("pair 2", "pair 500")):
        manager.copy_tensors(sources, destinations)
    assert events == []
    for dst in (destinations[0], destinations[499], destinations[999]):
        np.testing.assert_array_equal(acca.read(dst), np.zeros(3))


def test_errors_subclass_builtins() -> None:
    assert issubclass(IncompatibleTensorsError, ValueError)
    assert issubclass(InvalidArrayError, ValueError)
    assert issubclass(ForeignTensorError, ValueError)
    assert issubclass(NoTransferError, LookupError)
    assert issubclass(ClosedError, RuntimeError)


@pytest.mark.parametrize(("sources", "destinations"), [(2, 1), (0, 1), (1, 0)])
def test_lengths_must_match(
    manager: DataTransferManager, recording_cpu: Any, sources: int, destinations: int
) -> None:
    manager.register_data_transfer(recording_cpu)
    with pytest.raises(
        IncompatibleTensorsError,
        match=f"got {sources} sources and {destinations} destinations; expected equal counts",
    ):
        manager.copy_tensors([_host([1])] * sources, [_host([0]) for _ in range(destinations)])
    assert recording_cpu.calls == []


def test_empty_batch_is_a_no_op(manager: DataTransferManager) -> None:
    manager.copy_tensors([], [])
    manager.copy_tensors_async([], []).wait()


def test_tensors_of_another_owner_are_foreign() -> None:
    with Environment(backends=["cpu"]) as mine, Environment(backends=["cpu"]) as theirs:
        src = mine.from_numpy(np.arange(3))
        dst = mine.empty(3, src.dtype)
        manager = mine.data_transfer_manager
        with pytest.raises(
            ForeignTensorError,
            match=r"pair 1: the destination Tensor.* belongs to another environment",
        ):
            manager.copy_tensors([src, src], [dst, theirs.empty(3, src.dtype)])
        with pytest.raises(ForeignTensorError, match="pair 0: the source"):
            manager.copy_tensor(_host([1, 2, 3], src.dtype), dst)


def test_a_manager_without_owner_accepts_any_tensor(
    manager: DataTransferManager, recording_cpu: Any
) -> None:
    manager.register_data_transfer(recording_cpu)
    with Environment(backends=["cpu"]) as env:
        dst = _host([0, 0])
        manager.copy_tensor(env.from_numpy(np.array([4, 5])), dst)
    np.testing.assert_array_equal(_values(dst), [4, 5])


# grouping and order ---------------------------------------------------------------


def test_mixed_batch_calls_each_transfer_once_per_device_with_its_pairs_in_order(
    wired: DataTransferManager, recording_cpu: Any, acca: Any
) -> None:
    sources = [_host(np.full(4, i, np.int16)) for i in range(6)]
    destinations = [
        _host(np.zeros(4, np.int16)),
        acca.tensor(np.zeros(4, np.int16)),
        _host(np.zeros(4, np.int16)),
        acca.tensor(np.zeros(4, np.int16), index=1),
        acca.tensor(np.zeros(4, np.int16)),
        _host(np.zeros(4, np.int16)),
    ]
    wired.copy_tensors(sources, destinations)
    pairs = list(zip(sources, destinations, strict=True))
    assert recording_cpu.calls == [[pairs[0], pairs[2], pairs[5]]]
    assert sorted(acca.transfer.calls, key=len) == [[pairs[3]], [pairs[1], pairs[4]]]
    for i, dst in enumerate(destinations):
        value = _values(dst) if dst.device.is_host else acca.read(dst)
        np.testing.assert_array_equal(value, np.full(4, i))


def test_equal_devices_of_distinct_objects_share_one_call(
    wired: DataTransferManager, acca: Any
) -> None:
    """A device equal to the batch's first one, as another object, stays in its call."""
    sources = [_host(np.full(2, i, np.int32)) for i in range(4)]
    destinations = [acca.tensor(np.zeros(2, np.int32)) for _ in range(4)]
    for dst in destinations[1::2]:
        dst.storage.device = attrs.evolve(dst.storage.device)
    assert destinations[1].device == destinations[0].device
    assert destinations[1].device is not destinations[0].device
    wired.copy_tensors(sources, destinations)
    assert acca.transfer.calls == [list(zip(sources, destinations, strict=True))]
    for i, dst in enumerate(destinations):
        np.testing.assert_array_equal(acca.read(dst), np.full(2, i))


def test_a_late_pair_on_another_device_of_the_one_transfer_gets_its_own_call(
    wired: DataTransferManager, acca: Any
) -> None:
    sources = [_host(np.full(2, i, np.int32)) for i in range(20)]
    destinations = [acca.tensor(np.zeros(2, np.int32)) for _ in range(19)]
    destinations.append(acca.tensor(np.zeros(2, np.int32), index=1))
    wired.copy_tensors(sources, destinations)
    pairs = list(zip(sources, destinations, strict=True))
    assert sorted(acca.transfer.calls, key=len) == [pairs[19:], pairs[:19]]
    for i, dst in enumerate(destinations):
        np.testing.assert_array_equal(acca.read(dst), np.full(2, i))


def test_late_pairs_on_other_devices_leave_a_uniform_batch_correctly_grouped(
    wired: DataTransferManager, recording_cpu: Any, acca: Any, accb: Any
) -> None:
    """Pairs after a long run on one device pair: another device of the same transfer,
    another transfer, a routed pair; each goes to its own group, in order."""
    n = 50
    sources = [_host(np.full(3, i, np.int16)) for i in range(n)]
    destinations = [acca.tensor(np.zeros(3, np.int16)) for _ in range(n)]
    other_device = acca.tensor(np.zeros(3, np.int16), index=1)
    on_host = _host(np.zeros(3, np.int16))
    routed_src, routed_dst = (
        acca.tensor(np.full(3, 77, np.int16)),
        accb.tensor(np.zeros(3, np.int16)),
    )
    back = _host(np.zeros(3, np.int16))
    sources += [_host(np.full(3, 55, np.int16)), _host(np.full(3, 66, np.int16)), routed_src]
    destinations += [other_device, on_host, routed_dst]
    sources.append(destinations[1])  # a download on the first device joins its call
    destinations.append(back)
    wired.copy_tensors(sources, destinations)
    pairs = list(zip(sources, destinations, strict=True))
    assert recording_cpu.calls == [[pairs[n + 1]]]
    calls = sorted(acca.transfer.calls, key=len)
    assert calls[0] == [pairs[n]]
    assert calls[1][:n] == pairs[:n]
    assert calls[1][n][0] is routed_src
    assert calls[1][n + 1] == pairs[-1]
    assert len(calls) == 2
    assert [dst for _, dst in accb.transfer.calls[0]] == [routed_dst]
    for i, dst in enumerate(destinations[:n]):
        np.testing.assert_array_equal(acca.read(dst), np.full(3, i))
    np.testing.assert_array_equal(acca.read(other_device), np.full(3, 55))
    np.testing.assert_array_equal(_values(on_host), np.full(3, 66))
    np.testing.assert_array_equal(accb.read(routed_dst), np.full(3, 77))
    np.testing.assert_array_equal(_values(back), np.full(3, 1))


def test_downloads_and_uploads_of_one_device_share_one_call(
    wired: DataTransferManager, acca: Any
) -> None:
    on_device = acca.tensor([1.0, 2.0])
    back, up = _host([0.0, 0.0]), acca.tensor([0.0, 0.0])
    wired.copy_tensors([on_device, _host([3.0, 4.0])], [back, up])
    assert len(acca.transfer.calls) == 1
    np.testing.assert_array_equal(_values(back), [1, 2])
    np.testing.assert_array_equal(acca.read(up), [3, 4])


def test_read_after_write_across_transfers_sees_the_new_data(
    wired: DataTransferManager, recording_cpu: Any, acca: Any, events: list[str]
) -> None:
    middle = _host(np.zeros(3, np.int32))
    new, device = _host([7, 8, 9], np.int32), acca.tensor(np.zeros(3, np.int32))
    wired.copy_tensors([new, middle], [middle, device])
    np.testing.assert_array_equal(acca.read(device), [7, 8, 9])
    assert events == ["copy cpu", "copy acca"]
    assert recording_cpu.calls == [[(new, middle)]]
    assert acca.transfer.calls == [[(middle, device)]]


def test_write_after_read_across_transfers_keeps_the_old_data_for_the_reader(
    wired: DataTransferManager, acca: Any, events: list[str]
) -> None:
    middle, device = _host([1, 2, 3], np.int32), acca.tensor(np.zeros(3, np.int32))
    wired.copy_tensors([middle, _host([7, 8, 9], np.int32)], [device, middle])
    np.testing.assert_array_equal(acca.read(device), [1, 2, 3])
    np.testing.assert_array_equal(_values(middle), [7, 8, 9])
    assert events == ["copy acca", "copy cpu"]


def test_write_after_write_across_transfers_keeps_the_last_write(
    wired: DataTransferManager, acca: Any, events: list[str]
) -> None:
    target = _host(np.zeros(2, np.int8))
    wired.copy_tensors(
        [acca.tensor(np.array([1, 1], np.int8)), _host([2, 2], np.int8)], [target, target]
    )
    np.testing.assert_array_equal(_values(target), [2, 2])
    assert events == ["copy acca", "copy cpu"]
    wired.copy_tensors(
        [_host([3, 3], np.int8), acca.tensor(np.array([4, 4], np.int8))], [target, target]
    )
    np.testing.assert_array_equal(_values(target), [4, 4])


def test_partial_overlap_of_views_orders_the_pairs(wired: DataTransferManager, acca: Any) -> None:
    shared = _host(np.zeros(8, np.int16))
    device = acca.tensor(np.zeros(4, np.int16))
    wired.copy_tensors([_host(np.full(4, 5, np.int16)), shared[3:7]], [shared[0:4], device])
    np.testing.assert_array_equal(acca.read(device), [5, 0, 0, 0])


def test_aliasing_host_storages_are_ordered_by_address(
    wired: DataTransferManager, acca: Any
) -> None:
    memory = np.zeros(4, np.int32)
    writer = Tensor(HostStorage.wrap(memory), (4,), np.int32)
    reader = Tensor(HostStorage.wrap(memory[:]), (4,), np.int32)
    assert writer.storage is not reader.storage
    device = acca.tensor(np.zeros(4, np.int32))
    wired.copy_tensors([_host([1, 2, 3, 4], np.int32), reader], [writer, device])
    np.testing.assert_array_equal(acca.read(device), [1, 2, 3, 4])


def test_no_split_for_disjoint_views_of_one_storage(
    wired: DataTransferManager, recording_cpu: Any, acca: Any
) -> None:
    shared = _host(np.arange(8, dtype=np.int64))
    devices = [acca.tensor(np.zeros(2, np.int64)) for _ in range(2)]
    wired.copy_tensors(
        [_host([-1, -2]), shared[2:4], _host([-5, -6]), shared[6:8]],
        [shared[0:2], devices[0], shared[4:6], devices[1]],
    )
    assert len(recording_cpu.calls) == 1
    assert len(acca.transfer.calls) == 1
    np.testing.assert_array_equal(_values(shared), [-1, -2, 2, 3, -5, -6, 6, 7])
    np.testing.assert_array_equal(acca.read(devices[1]), [6, 7])


def test_no_split_when_transfers_only_read_the_same_memory(
    wired: DataTransferManager, recording_cpu: Any, acca: Any
) -> None:
    shared = _host([1, 2, 3])
    outs = [acca.tensor([0, 0, 0]), _host([0, 0, 0]), acca.tensor([0, 0, 0]), _host([0, 0, 0])]
    wired.copy_tensors([shared] * 4, outs)
    assert (len(recording_cpu.calls), len(acca.transfer.calls)) == (1, 1)


def test_dependencies_within_one_transfer_and_device_do_not_split(
    wired: DataTransferManager, acca: Any
) -> None:
    device, middle, other = acca.tensor([0, 0]), _host([0, 0]), acca.tensor([0, 0])
    wired.copy_tensors([_host([4, 2]), device, middle], [device, middle, other])
    assert len(acca.transfer.calls) == 1
    np.testing.assert_array_equal(acca.read(other), [4, 2])


def test_dependencies_across_devices_of_one_transfer_are_ordered(
    wired: DataTransferManager, acca: Any, events: list[str]
) -> None:
    device, middle, other = acca.tensor([0, 0]), _host([0, 0]), acca.tensor([0, 0], index=1)
    wired.copy_tensors([_host([4, 2]), device, middle], [device, middle, other])
    assert acca.transfer.calls == [
        [(acca.transfer.calls[0][0][0], device), (device, middle)],
        [(middle, other)],
    ]
    np.testing.assert_array_equal(acca.read(other), [4, 2])


def test_overlapping_source_and_destination_in_one_pair(
    wired: DataTransferManager, acca: Any
) -> None:
    shared = _host(np.arange(6, dtype=np.int32))
    wired.copy_tensor(shared[0:4], shared[2:6])
    np.testing.assert_array_equal(_values(shared), [0, 1, 0, 1, 2, 3])
    device = acca.tensor(np.arange(6, dtype=np.int32))
    wired.copy_tensor(device[2:6], device[0:4])
    np.testing.assert_array_equal(acca.read(device), [2, 3, 4, 5, 4, 5])


def test_random_batches_equal_a_loop_of_single_copies(
    wired: DataTransferManager, acca: Any, accb: Any
) -> None:
    """Any mix of devices, views and overlaps ends as copying pair by pair would."""
    rng = np.random.default_rng(2024)
    length = 24
    host_a, host_b = (rng.integers(-1000, 1000, length, dtype=np.int32) for _ in range(2))
    storages: dict[str, Any] = {
        "host_a": HostStorage.wrap(host_a),
        "host_a_alias": HostStorage.wrap(host_a[:]),
        "host_b": HostStorage.wrap(host_b),
    }
    mirrors = {"host_a": host_a.copy(), "host_b": host_b.copy()}
    for name, backend, index in (("acca0", acca, 0), ("acca1", acca, 1), ("accb0", accb, 0)):
        start = rng.integers(-1000, 1000, length, dtype=np.int32)
        storages[name] = backend.tensor(start, index).storage
        mirrors[name] = start.copy()
    mirrors["host_a_alias"] = mirrors["host_a"]
    names = sorted(storages)

    for _ in range(300):
        sources, destinations = [], []
        for _ in range(int(rng.integers(1, 8))):
            src_name, dst_name = rng.choice(names, 2)
            count = int(rng.integers(0, 9))
            src_at, dst_at = rng.integers(0, length - count + 1, 2)
            sources.append(Tensor(storages[src_name], (count,), np.int32, int(src_at) * 4))
            destinations.append(Tensor(storages[dst_name], (count,), np.int32, int(dst_at) * 4))
            mirrors[dst_name][dst_at : dst_at + count] = mirrors[src_name][
                src_at : src_at + count
            ].copy()
        wired.copy_tensors(sources, destinations)
        for name in names:
            whole = Tensor(storages[name], (length,), np.int32)
            actual = _values(whole) if whole.device.is_host else acca.read(whole)
            np.testing.assert_array_equal(actual, mirrors[name], err_msg=name)


# routing through host memory -------------------------------------------------------


def test_routes_between_accelerators_through_host_memory(
    wired: DataTransferManager, acca: Any, accb: Any
) -> None:
    src, dst = acca.tensor([1.5, 2.5, 3.5]), accb.tensor(np.zeros(3))
    wired.copy_tensor(src, dst)
    np.testing.assert_array_equal(accb.read(dst), [1.5, 2.5, 3.5])
    [[(down_src, staging)]] = acca.transfer.calls
    [[(up_src, up_dst)]] = accb.transfer.calls
    assert (down_src, up_src, up_dst) == (src, staging, dst)
    assert staging.device == HOST
    assert (staging.shape, staging.dtype) == (src.shape, src.dtype)


def test_routed_batch_downloads_once_per_device_and_uploads_in_one_call(
    wired: DataTransferManager, acca: Any, accb: Any, events: list[str]
) -> None:
    sources = [acca.tensor(np.full(5, i, np.uint16), index=i % 2) for i in range(4)]
    destinations = [accb.tensor(np.zeros(5, np.uint16)) for _ in range(4)]
    wired.copy_tensors(sources, destinations)
    assert events == ["copy acca", "copy acca", "copy accb"]
    downloaded = [[src for src, _ in call] for call in acca.transfer.calls]
    assert sorted(downloaded, key=lambda call: call[0].device.index) == [
        sources[0::2],
        sources[1::2],
    ]
    assert [dst for _, dst in accb.transfer.calls[0]] == destinations
    for i, dst in enumerate(destinations):
        np.testing.assert_array_equal(accb.read(dst), np.full(5, i))


def test_routed_pair_after_a_write_to_its_source(
    wired: DataTransferManager, acca: Any, accb: Any
) -> None:
    on_a, on_b = acca.tensor(np.zeros(2)), accb.tensor(np.zeros(2))
    wired.copy_tensors([_host([6.0, 7.0]), on_a, _host([8.0, 9.0])], [on_a, on_b, on_a])
    np.testing.assert_array_equal(accb.read(on_b), [6, 7])
    np.testing.assert_array_equal(acca.read(on_a), [8, 9])


def test_direct_transfer_is_preferred_over_a_route(wired: DataTransferManager, acca: Any) -> None:
    src, dst = acca.tensor([1, 2]), acca.tensor([0, 0], index=1)
    wired.copy_tensor(src, dst)
    assert acca.transfer.calls == [[(src, dst)]]
    np.testing.assert_array_equal(acca.read(dst), [1, 2])


def test_zero_size_routed_copy(wired: DataTransferManager, acca: Any, accb: Any) -> None:
    wired.copy_tensor(acca.tensor(np.zeros((0, 3))), accb.tensor(np.zeros((0, 3))))


@pytest.mark.parametrize(
    ("a_directions", "b_directions", "host_allocator"),
    [
        (None, {"up", "down"}, HostStorage.allocate),
        ({"up", "down"}, None, HostStorage.allocate),
        ({"up"}, {"up", "down"}, HostStorage.allocate),
        ({"up", "down"}, {"down"}, HostStorage.allocate),
        ({"up", "down"}, {"up", "down"}, None),
    ],
    ids=["no-a-transfer", "no-b-transfer", "a-cannot-download", "b-cannot-upload", "no-routing"],
)
def test_no_transfer_error_names_both_devices(
    make_accelerator: MakeAccelerator,
    a_directions: set[str] | None,
    b_directions: set[str] | None,
    host_allocator: Any,
) -> None:
    manager = DataTransferManager(host_allocator=host_allocator)
    acca = make_accelerator("acca", directions=a_directions or ())
    accb = make_accelerator("accb", directions=b_directions or ())
    for backend, directions in ((acca, a_directions), (accb, b_directions)):
        if directions is not None:
            manager.register_data_transfer(backend.transfer)
    with pytest.raises(NoTransferError, match=r"pair 0: .* copies acca:0 -> accb:0") as info:
        manager.copy_tensor(acca.tensor([1]), accb.tensor([0]))
    assert "registered:" in str(info.value)
    manager.close()


def test_no_transfer_error_lists_registered_transfers(
    manager: DataTransferManager, recording_cpu: Any, acca: Any
) -> None:
    with pytest.raises(NoTransferError, match="registered: none"):
        manager.copy_tensor(_host([1]), _host([0]))
    manager.register_data_transfer(recording_cpu)
    with pytest.raises(NoTransferError, match=r"cpu -> acca:0.*\['RecordingTransfer'\]"):
        manager.copy_tensor(_host([1]), acca.tensor([0]))


# asynchronous copies ------------------------------------------------------------------


class _DeferredHandle:
    """Runs its batch when first waited on: 'in flight' until then."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work: Callable[[], None] | None = work
        self._error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> None:
        if self._work is not None:
            work, self._work = self._work, None
            try:
                work()
            except Exception as exc:
                self._error = exc
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        return self._work is None


class _DeferredTransfer:
    """An AsyncDataTransfer (upload only) whose batches land when their handle is waited on."""

    def __init__(self, inner: IDataTransfer, events: list[str]) -> None:
        self.inner, self.events = inner, events
        self.sync_calls: list[list[CopyPair]] = []
        self.async_calls: list[list[CopyPair]] = []

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return self.inner.can_copy(src_device, dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        self.sync_calls.append(list(pairs))
        self.inner.copy_tensors(pairs)

    def copy_tensors_async(self, pairs: Sequence[CopyPair]) -> TransferHandle:
        self.async_calls.append(list(pairs))
        self.events.append("start async")

        def work() -> None:
            self.events.append("land async")
            self.inner.copy_tensors(pairs)

        return _DeferredHandle(work)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def uploads(make_accelerator: MakeAccelerator, events: list[str]) -> Any:
    """acca whose own transfer only downloads; ``uploads.deferred`` uploads asynchronously."""
    backend = make_accelerator("acca", directions={"down"})
    backend.deferred = _DeferredTransfer(backend.raw_transfer({"up"}), events)
    return backend


def test_async_transfer_runs_in_the_background(manager: DataTransferManager, uploads: Any) -> None:
    assert isinstance(uploads.deferred, AsyncDataTransfer)
    manager.register_data_transfer(uploads.deferred)
    src, dst = _host([1, 2, 3], np.int32), uploads.tensor(np.zeros(3, np.int32))
    handle = manager.copy_tensors_async([src], [dst])
    assert isinstance(handle, TransferHandle)
    assert uploads.deferred.async_calls == [[(src, dst)]]
    assert not handle.done()
    np.testing.assert_array_equal(uploads.read(dst), [0, 0, 0])
    handle.wait()
    assert handle.done()
    np.testing.assert_array_equal(uploads.read(dst), [1, 2, 3])
    handle.wait()


def test_sync_copy_never_uses_the_async_entry_point(
    manager: DataTransferManager, uploads: Any
) -> None:
    manager.register_data_transfer(uploads.deferred)
    src, dst = _host([5], np.int32), uploads.tensor(np.zeros(1, np.int32))
    manager.copy_tensor(src, dst)
    assert (uploads.deferred.sync_calls, uploads.deferred.async_calls) == ([[(src, dst)]], [])
    np.testing.assert_array_equal(uploads.read(dst), [5])


def test_async_with_plain_transfers_completes_before_returning(
    wired: DataTransferManager, acca: Any
) -> None:
    src, dst = _host([1, 2]), acca.tensor([0, 0])
    handle = wired.copy_tensors_async([src], [dst])
    assert handle.done()
    np.testing.assert_array_equal(acca.read(dst), [1, 2])
    handle.wait(timeout=0)


def test_async_waits_between_dependent_stages(
    manager: DataTransferManager, uploads: Any, events: list[str]
) -> None:
    manager.register_data_transfer(uploads.deferred)
    manager.register_data_transfer(uploads.transfer)
    device, back = uploads.tensor(np.zeros(2, np.int32)), _host([0, 0], np.int32)
    handle = manager.copy_tensors_async([_host([3, 4], np.int32), device], [device, back])
    handle.wait()
    np.testing.assert_array_equal(_values(back), [3, 4])
    assert events == ["start async", "land async", "copy acca"]


def test_async_error_is_raised_by_wait(manager: DataTransferManager, uploads: Any) -> None:
    manager.register_data_transfer(uploads.deferred)
    uploads.deferred.inner.close()
    handle = manager.copy_tensors_async([_host([1])], [uploads.tensor([0])])
    with pytest.raises(ClosedError, match="closed"):
        handle.wait()


def test_async_validates_before_starting(
    manager: DataTransferManager, uploads: Any, events: list[str]
) -> None:
    manager.register_data_transfer(uploads.deferred)
    good_dst = uploads.tensor(np.zeros(2))
    with pytest.raises(IncompatibleTensorsError, match="pair 1"):
        manager.copy_tensors_async(
            [_host([1.0, 2.0]), _host([1.0])], [good_dst, uploads.tensor(np.zeros(2))]
        )
    assert events == []
    assert uploads.deferred.async_calls == []


# threads ----------------------------------------------------------------------------------


@pytest.fixture
def fast_thread_switching() -> Iterator[None]:
    """Switch threads often, so that races show within a short test."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fast_thread_switching")
def test_copies_from_many_threads_while_a_transfer_comes_and_goes(
    manager: DataTransferManager, recording_cpu: Any, acca: Any
) -> None:
    manager.register_data_transfer(recording_cpu)
    errors: list[BaseException] = []
    outcomes: list[str] = []
    workers_done = threading.Event()
    toggles = 0

    def work(number: int) -> None:
        try:
            source, host_copy = _host(np.zeros(256, np.int64)), _host(np.zeros(256, np.int64))
            device, back = acca.tensor(np.zeros(256, np.int64)), _host(np.zeros(256, np.int64))
            for iteration in range(300):
                value = number * 100_000 + iteration
                source.host_array()[:] = value
                host_copy.host_array()[:] = -1
                try:
                    manager.copy_tensors([source, source], [host_copy, device])
                except NoTransferError:
                    # the whole batch failed validation: not even the host pair ran
                    assert (host_copy.host_array() == -1).all()
                    manager.copy_tensor(source, host_copy)
                    outcomes.append("no-transfer")
                else:
                    assert (acca.read(device) == value).all()
                    try:
                        manager.copy_tensor(device, back)
                    except NoTransferError:
                        outcomes.append("no-transfer")
                    else:
                        assert (back.host_array() == value).all()
                        outcomes.append("copied")
                assert (host_copy.host_array() == value).all()
        except BaseException as exc:
            errors.append(exc)

    def toggle() -> None:
        nonlocal toggles
        try:
            while not workers_done.is_set():
                manager.register_data_transfer(acca.transfer)
                time.sleep(0.0005)
                manager.unregister_data_transfer(acca.transfer)
                time.sleep(0.0002)
                toggles += 1
        except BaseException as exc:
            errors.append(exc)

    toggler = threading.Thread(target=toggle)
    workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    toggler.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    workers_done.set()
    toggler.join(timeout=5)

    assert errors == []
    assert not toggler.is_alive()
    assert not any(w.is_alive() for w in workers)
    assert len(outcomes) == 8 * 300
    assert toggles > 0
    assert "copied" in outcomes
    assert manager.data_transfers == (recording_cpu,)
    # no stale route survived the churn
    source, device = _host(np.ones(4)), acca.tensor(np.zeros(4))
    with pytest.raises(NoTransferError):
        manager.copy_tensor(source, device)
    manager.register_data_transfer(acca.transfer)
    manager.copy_tensor(source, device)
    np.testing.assert_array_equal(acca.read(device), np.ones(4))


# close ------------------------------------------------------------------------------------


class _BlockingTransfer:
    """A host transfer whose copies wait for ``release``; it logs start, end and close."""

    def __init__(self, events: list[str]) -> None:
        self.inner = CpuDataTransfer()
        self.events = events
        self.started = threading.Event()
        self.release = threading.Event()

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return self.inner.can_copy(src_device, dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        self.events.append("copy start")
        self.started.set()
        assert self.release.wait(timeout=10)
        self.inner.copy_tensors(pairs)
        self.events.append("copy end")

    def close(self) -> None:
        self.events.append("close")
        self.inner.close()


def _in_thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_close_waits_for_copies_in_flight(events: list[str]) -> None:
    manager = DataTransferManager()
    blocking = _BlockingTransfer(events)
    manager.register_data_transfer(blocking)
    src, dst = _host([1, 2, 3]), _host([0, 0, 0])
    errors: list[BaseException] = []
    copier = _in_thread(lambda: manager.copy_tensor(src, dst), errors)
    assert blocking.started.wait(timeout=5)
    closer = _in_thread(manager.close, errors)
    _wait_until(lambda: manager.closed)
    with pytest.raises(ClosedError, match="closed"):
        manager.copy_tensor(src, dst)
    closer.join(timeout=0.05)
    assert closer.is_alive()
    assert events == ["copy start"]
    blocking.release.set()
    copier.join(timeout=5)
    closer.join(timeout=5)
    assert errors == []
    assert events == ["copy start", "copy end", "close"]
    np.testing.assert_array_equal(_values(dst), [1, 2, 3])


def test_close_closes_transfers_last_registered_first_once(
    manager: DataTransferManager, make_cpu_transfer: MakeCpuTransfer, events: list[str]
) -> None:
    transfers = [make_cpu_transfer(str(n)) for n in range(3)]
    for transfer in transfers:
        manager.register_data_transfer(transfer)
    manager.close()
    assert events == ["close transfer 2", "close transfer 1", "close transfer 0"]
    assert manager.closed
    assert manager.data_transfers == ()
    manager.close()
    assert len(events) == 3


def test_unregistered_transfers_are_not_closed_by_close(
    manager: DataTransferManager, make_cpu_transfer: MakeCpuTransfer, events: list[str]
) -> None:
    kept, removed = make_cpu_transfer("kept"), make_cpu_transfer("removed")
    manager.register_data_transfer(kept)
    manager.register_data_transfer(removed)
    manager.unregister_data_transfer(removed)
    manager.close()
    assert events == ["close transfer kept"]


@pytest.mark.parametrize(
    "use",
    [
        lambda m, make: m.copy_tensor(_host([1]), _host([0])),
        lambda m, make: m.copy_tensors([_host([1])], [_host([0])]),
        lambda m, make: m.copy_tensors_async([_host([1])], [_host([0])]),
        lambda m, make: m.register_data_transfer(make("late")),
    ],
    ids=["copy_tensor", "copy_tensors", "copy_tensors_async", "register"],
)
def test_use_after_close_raises(
    make_cpu_transfer: MakeCpuTransfer,
    recording_cpu: Any,
    use: Callable[[DataTransferManager, MakeCpuTransfer], object],
) -> None:
    manager = DataTransferManager()
    manager.register_data_transfer(recording_cpu)
    manager.close()
    with pytest.raises(ClosedError, match=r"DataTransferManager .* is closed"):
        use(manager, make_cpu_transfer)
    assert recording_cpu.calls == []


# asynchronous batches stay in flight until they land ----------------------------------------


class _GatedHandle:
    """A backend handle whose batch lands on its own thread once ``gate`` is set."""

    def __init__(self, work: Callable[[], None], gate: threading.Event, events: list[str]) -> None:
        self._error: BaseException | None = None
        self._landed = threading.Event()

        def run() -> None:
            try:
                if not gate.wait(timeout=30):
                    raise TimeoutError("the test never opened the gate")
                work()
                events.append("landed")
            except BaseException as exc:
                self._error = exc
            finally:
                self._landed.set()

        threading.Thread(target=run, daemon=True).start()

    def wait(self, timeout: float | None = None) -> None:
        if not self._landed.wait(timeout):
            raise TimeoutError("not landed yet")
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        return self._landed.is_set()


class _GatedTransfer:
    """A host -> host AsyncDataTransfer whose batches land only once ``gate`` is set;
    it logs ``landed`` and ``close`` into ``events``."""

    def __init__(self, events: list[str]) -> None:
        self.inner = CpuDataTransfer()
        self.events = events
        self.gate = threading.Event()

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        return self.inner.can_copy(src_device, dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        self.inner.copy_tensors(pairs)

    def copy_tensors_async(self, pairs: Sequence[CopyPair]) -> TransferHandle:
        return _GatedHandle(lambda: self.inner.copy_tensors(pairs), self.gate, self.events)

    def close(self) -> None:
        self.events.append("close")
        self.inner.close()


@pytest.fixture
def gated(manager: DataTransferManager, events: list[str]) -> _GatedTransfer:
    """A gated async transfer registered with the standalone manager."""
    transfer = _GatedTransfer(events)
    manager.register_data_transfer(transfer)
    return transfer


def _open_gate_soon(gate: threading.Event, errors: list[BaseException]) -> threading.Thread:
    """Open the gate from another thread once the caller is (very likely) blocked."""

    def run() -> None:
        time.sleep(0.05)
        gate.set()

    return _in_thread(run, errors)


@pytest.mark.parametrize("how", ["unregister", "close"])
def test_async_batch_is_in_flight_until_it_lands(
    manager: DataTransferManager, gated: _GatedTransfer, events: list[str], how: str
) -> None:
    """unregister_data_transfer(wait=True) and close() return only after a running
    async batch has landed, even though copy_tensors_async returned long before."""
    src, dst = _host([1, 2, 3]), _host([0, 0, 0])
    handle = manager.copy_tensors_async([src], [dst])
    assert not handle.done()
    errors: list[BaseException] = []
    opener = _open_gate_soon(gated.gate, errors)
    if how == "unregister":
        manager.unregister_data_transfer(gated, wait=True)
        gated.close()
    else:
        manager.close()
    opener.join(timeout=10)
    assert errors == []
    assert events == ["landed", "close"]
    assert handle.done()
    handle.wait(timeout=0)
    np.testing.assert_array_equal(_values(dst), [1, 2, 3])


def test_unregister_without_wait_does_not_wait_for_async_batches(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    handle = manager.copy_tensors_async([_host([1])], [_host([0])])
    manager.unregister_data_transfer(gated)
    assert not handle.done()
    gated.gate.set()
    handle.wait(timeout=10)


def test_unregister_waits_only_for_batches_of_that_transfer(
    manager: DataTransferManager, gated: _GatedTransfer, recording_cpu: Any
) -> None:
    other = _GatedTransfer([])
    manager.unregister_data_transfer(gated)
    manager.register_data_transfer(other)
    handle = manager.copy_tensors_async([_host([1])], [_host([0])])  # runs on `other`
    manager.register_data_transfer(recording_cpu)
    manager.unregister_data_transfer(recording_cpu, wait=True)  # returns at once
    assert not handle.done()
    other.gate.set()
    handle.wait(timeout=10)


def test_environment_close_waits_for_async_batches_before_closing_backends(
    make_accelerator: MakeAccelerator, events: list[str]
) -> None:
    backend = make_accelerator("acca", directions={"down"})
    gated = _GatedTransfer(events)
    env = Environment(backends=["cpu"])
    env.register_backend("acca", backend)
    env.data_transfer_manager.register_data_transfer(gated)
    src, dst = env.from_numpy(np.arange(3)), env.zeros(3, np.int64)
    handle = env.copy_tensors_async([src], [dst])
    errors: list[BaseException] = []
    opener = _open_gate_soon(gated.gate, errors)
    env.close()
    opener.join(timeout=10)
    assert errors == []
    assert events.index("landed") < events.index("close backend acca")
    assert handle.done()
    np.testing.assert_array_equal(dst.host_array(), np.arange(3))


def test_failed_async_batch_still_leaves_flight(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    gated.inner.close()  # the batch will fail with ClosedError when it runs
    handle = manager.copy_tensors_async([_host([1])], [_host([0])])
    gated.gate.set()
    with pytest.raises(ClosedError):
        handle.wait(timeout=10)
    with pytest.raises(ClosedError):
        handle.wait(timeout=10)  # the same error again
    manager.unregister_data_transfer(gated, wait=True)  # nothing left in flight


def test_async_batches_nobody_waits_for_do_not_pile_up(manager: DataTransferManager) -> None:
    transfer = _GatedTransfer([])
    transfer.gate.set()
    manager.register_data_transfer(transfer)
    handles = [manager.copy_tensors_async([_host([i])], [_host([0])]) for i in range(50)]
    _wait_until(lambda: all(h.done() for h in handles))
    for _ in range(10):
        manager.copy_tensors_async([_host([1])], [_host([0])]).wait()
    assert not manager._pending, "landed batches are still tracked"


# the copy handle: wait, done, await, callbacks --------------------------------------------


def test_handle_wait_times_out_and_can_wait_again(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    handle = manager.copy_tensors_async([_host([7])], [dst := _host([0])])
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.01)
    assert not handle.done()
    gated.gate.set()
    handle.wait(timeout=10)
    assert _values(dst).tolist() == [7]


def test_handle_is_awaitable_without_blocking_the_event_loop(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    """While one coroutine awaits the handle, another runs and opens the gate: a
    handle that blocked the loop would never land (the gate waits 30 s, then fails)."""
    import asyncio

    dst = _host([0, 0])
    order: list[str] = []

    async def opener() -> None:
        await asyncio.sleep(0)
        order.append("loop ran")
        gated.gate.set()

    async def main() -> None:
        handle = manager.copy_tensors_async([_host([4, 5])], [dst])
        await asyncio.gather(handle, opener())
        order.append("awaited")
        assert handle.done()
        await handle  # awaiting a done handle returns at once

    asyncio.run(main())
    assert order == ["loop ran", "awaited"]
    assert _values(dst).tolist() == [4, 5]


def test_awaiting_a_failed_handle_raises_its_error(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    import asyncio

    gated.inner.close()
    gated.gate.set()
    handle = manager.copy_tensors_async([_host([1])], [_host([0])])

    async def main() -> None:
        await handle

    with pytest.raises(ClosedError):
        asyncio.run(main())


def test_done_callbacks_run_once_when_the_batch_lands(
    manager: DataTransferManager, gated: _GatedTransfer
) -> None:
    """A callback added while running fires once, from the thread that sees the batch
    land, even if nobody waits; one added afterwards fires at once, in the caller."""
    dst = _host([0])
    seen: list[tuple[str, bool, list[int], str]] = []
    landed = threading.Event()

    def record(label: str) -> Callable[[Any], None]:
        def callback(handle: Any) -> None:
            seen.append(
                (label, handle.done(), _values(dst).tolist(), threading.current_thread().name)
            )
            landed.set()

        return callback

    handle = manager.copy_tensors_async([_host([9])], [dst])
    handle.add_done_callback(record("early"))
    assert seen == []
    gated.gate.set()
    assert landed.wait(timeout=10)
    handle.add_done_callback(record("late"))
    assert [s[:3] for s in seen] == [("early", True, [9]), ("late", True, [9])]
    assert seen[1][3] == threading.current_thread().name
    handle.wait()
    assert len(seen) == 2


def test_a_raising_callback_is_logged_not_raised(
    manager: DataTransferManager, caplog: pytest.LogCaptureFixture
) -> None:
    manager.register_data_transfer(CpuDataTransfer())
    handle = manager.copy_tensors_async([_host([1])], [_host([0])])

    def broken(handle: Any) -> None:
        raise ValueError("callback bug")

    handle.add_done_callback(broken)
    assert "callback bug" in caplog.text
    with pytest.raises(TypeError, match="callable"):
        handle.add_done_callback("not callable")  # type: ignore[arg-type]


# a copy never runs on a transfer that unregister(wait=True) released -------------------------


@pytest.mark.usefixtures("fast_thread_switching")
def test_replacing_a_transfer_while_copying_never_uses_the_closed_one() -> None:
    """The documented replacement (register the new, unregister the old with
    wait=True, close the old) while other threads copy: no copy may pick the old
    transfer before it is unregistered and use it after it is closed."""
    manager = DataTransferManager()
    current = CpuDataTransfer()
    manager.register_data_transfer(current)
    stop = threading.Event()
    errors: list[BaseException] = []
    closed_errors: list[ClosedError] = []
    copies = [0, 0]

    def copy(number: int) -> None:
        src, dst = _host(np.arange(8)), _host(np.zeros(8, np.int64))
        while not stop.is_set():
            try:
                if copies[number] % 2:
                    manager.copy_tensor(src, dst)
                else:
                    manager.copy_tensors([src, src[2:4]], [dst, dst[4:6]])
            except ClosedError as exc:
                closed_errors.append(exc)
            copies[number] += 1

    def replace() -> None:
        nonlocal current
        replaced = 0
        while replaced < 1000 or min(copies) < 20_000:
            replaced += 1
            new = CpuDataTransfer()
            manager.register_data_transfer(new)
            manager.unregister_data_transfer(current, wait=True)
            current.close()
            current = new
        stop.set()

    threads = [_in_thread(lambda n=n: copy(n), errors) for n in range(2)]
    replacer = _in_thread(replace, errors)
    replacer.join(timeout=120)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    manager.close()
    assert errors == []
    assert closed_errors == []
    assert min(copies) > 0
