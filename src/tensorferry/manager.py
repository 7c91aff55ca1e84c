"""DataTransferManager: an ordered, thread-safe registry of data transfers.

It does what ONNX Runtime's ``DataTransferManager`` does (first registered
transfer whose ``can_copy`` holds wins) and more: it validates a whole batch
before copying anything, groups a mixed batch per transfer and device and runs
independent groups concurrently while keeping the batch's order semantics,
routes through host memory when no transfer copies two devices directly
(streaming large tensors through bounded host buffers), and may be used from
many threads while others register or unregister transfers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeAlias, cast

import attrs

from tensorferry._fanout import FanOut, ThreadHandle
from tensorferry._routing import DEFAULT_CHUNKS, RoutedStream, StreamOptions
from tensorferry.device import HOST, Device
from tensorferry.errors import (
    ClosedError,
    ForeignTensorError,
    IncompatibleTensorsError,
    InvalidArrayError,
    NoTransferError,
)
from tensorferry.handle import CopyHandle
from tensorferry.storage import HostStorage
from tensorferry.tensor import Tensor, TensorOwner
from tensorferry.transfer import (
    AsyncDataTransfer,
    CopyPair,
    IDataTransfer,
    TransferHandle,
)

__all__ = ["DataTransferManager"]

logger = logging.getLogger(__name__)

_MISSING = object()


@attrs.frozen
class _Route:
    """How one device pair is copied: directly (one hop) or through host memory (two)."""

    hops: tuple[IDataTransfer, ...]


@attrs.frozen(eq=False)
class _Call:
    """One ``copy_tensors`` call: the pairs of one transfer and device, in batch order."""

    transfer: IDataTransfer
    pairs: list[CopyPair]

    @property
    def transfers(self) -> tuple[IDataTransfer, ...]:
        return (self.transfer,)

    def run(self) -> None:
        self.transfer.copy_tensors(self.pairs)

    def start(self) -> TransferHandle | None:
        """The transfer's own async batch, or None when it has none (run it then)."""
        if isinstance(self.transfer, AsyncDataTransfer):
            return self.transfer.copy_tensors_async(self.pairs)
        return None


_Group: TypeAlias = "_Call | RoutedStream"

_Stage: TypeAlias = "list[_Group]"
"""Groups whose pairs touch disjoint memory, so they may run in any order, or at once."""

_Hops: TypeAlias = "tuple[IDataTransfer, ...]"


class _Step(NamedTuple):
    """A pair for one transfer (or a whole streamed route), and the lane it runs in:
    steps of one lane go to one call, in order."""

    transfer: IDataTransfer
    src: Tensor
    dst: Tensor
    lane: object
    stream: RoutedStream | None = None


def _lane(transfer: IDataTransfer, src: Tensor, dst: Tensor) -> tuple[int, Device]:
    """Pairs of one transfer are grouped per device: the source's, unless it is host memory."""
    device = src.device
    return (id(transfer), dst.device if device.is_host else device)


@attrs.frozen
class _Plan:
    """A validated batch: stages to run one after another, and the transfers they use."""

    stages: list[_Stage]
    transfers: tuple[IDataTransfer, ...]


class DataTransferManager:
    """Registry of :class:`~tensorferry.IDataTransfer` objects, and the front door for copies.

    ``owner`` is the environment whose tensors this manager accepts (``None``
    accepts any tensor). ``host_allocator`` makes the host memory used to route
    copies that no transfer makes directly; pass ``None`` to disable routing.
    With ``stream_chunk_bytes`` set (streaming is off by default: see
    ``tensorferry._routing.StreamOptions`` for the measurement), a routed pair larger
    than that streams: chunk k is uploaded while chunk k+1 is downloaded, through
    ``stream_chunks`` reused host buffers of that size. Independent groups of a batch
    (per transfer and device) run concurrently on up to ``fan_out_threads`` threads
    besides the caller's; 0 runs them one after another. Raises
    ``TypeError``/``ValueError`` for bad values of these (chunks below 4096 bytes, fewer
    than 2 buffers, negative threads).

    A copy counts as *in flight* on each transfer it uses from the moment it
    picks them until it has landed: for an asynchronous batch, until its handle
    is done. :meth:`close` and ``unregister_data_transfer(wait=True)`` wait for
    those copies, and a copy never starts on a transfer that was unregistered
    after the copy looked it up (it looks again).
    """

    def __init__(
        self,
        *,
        owner: TensorOwner | None = None,
        host_allocator: Callable[[int], HostStorage] | None = HostStorage.allocate,
        stream_chunk_bytes: int | None = None,
        stream_chunks: int = DEFAULT_CHUNKS,
        fan_out_threads: int = 8,
    ) -> None:
        self._stream = StreamOptions(stream_chunk_bytes, stream_chunks)
        self._fan_out = FanOut(fan_out_threads)
        self._owner = owner
        self._host_allocator = host_allocator
        # The condition's own lock, taken directly on the hot path (Condition's
        # __enter__ is a Python-level call around it).
        self._mutex = threading.RLock()
        self._lock = threading.Condition(self._mutex)
        self._transfers: tuple[IDataTransfer, ...] = ()
        self._registered: set[int] = set()  # ids of self._transfers
        self._routes: dict[tuple[Device, Device], _Route | None] = {}
        self._in_flight: dict[int, int] = {}  # id(transfer) -> copies using it now
        self._pending: dict[CopyHandle, _Hops] = {}  # async batches not landed yet
        self._waiting = 0  # threads in close() or unregister(wait=True)
        self._closed = False

    # registry -------------------------------------------------------------

    @property
    def data_transfers(self) -> tuple[IDataTransfer, ...]:
        """The registered transfers, in lookup order."""
        return self._transfers

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def register_data_transfer(self, transfer: IDataTransfer) -> None:
        """Append ``transfer`` to the lookup order.

        Raises ``TypeError`` if it does not implement :class:`IDataTransfer`,
        ``ValueError`` if it is registered already, :class:`ClosedError` after close.
        """
        if not isinstance(transfer, IDataTransfer):
            raise TypeError(
                f"{type(transfer).__name__} is not an IDataTransfer; expected an object with "
                "can_copy(src_device, dst_device), copy_tensors(pairs) and close()"
            )
        with self._lock:
            self._check_open()
            if id(transfer) in self._registered:
                raise ValueError(f"{transfer!r} is registered already")
            self._transfers = (*self._transfers, transfer)
            self._registered.add(id(transfer))
            self._routes.clear()

    def unregister_data_transfer(self, transfer: IDataTransfer, *, wait: bool = False) -> None:
        """Remove ``transfer`` from the lookup order without closing it.

        New copies no longer use it; copies already running with it finish, and
        with ``wait=True`` this returns only once they have landed, asynchronous
        batches included (so the caller may close it). Raises ``LookupError`` if
        it is not registered.
        """
        with self._lock:
            if id(transfer) not in self._registered:
                raise LookupError(f"{transfer!r} is not registered with this manager")
            self._transfers = tuple(t for t in self._transfers if t is not transfer)
            self._registered.discard(id(transfer))
            self._routes.clear()
        if wait:
            self._drain(id(transfer))

    def get_data_transfer(self, src_device: Device, dst_device: Device) -> IDataTransfer | None:
        """The first registered transfer that copies ``src_device`` -> ``dst_device``, or None."""
        return next((t for t in self._transfers if t.can_copy(src_device, dst_device)), None)

    def _route(self, src: Device, dst: Device) -> _Route | None:
        key = (src, dst)
        cached = self._routes.get(key, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        with self._lock:
            if key in self._routes:
                return self._routes[key]
            route: _Route | None = None
            direct = self.get_data_transfer(src, dst)
            if direct is not None:
                route = _Route((direct,))
            elif self._host_allocator is not None and not src.is_host and not dst.is_host:
                down = self.get_data_transfer(src, HOST)
                up = self.get_data_transfer(HOST, dst)
                if down is not None and up is not None:
                    route = _Route((down, up))
                    logger.info(
                        "no transfer copies %s -> %s directly: routing through host memory",
                        src,
                        dst,
                    )
            self._routes[key] = route
            return route

    def close(self) -> None:
        """Refuse new copies, wait for those in flight (asynchronous batches until
        they have landed), then close every registered transfer, last registered
        first. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._drain(None)
        with self._lock:
            transfers, self._transfers = self._transfers, ()
            self._registered.clear()
            self._routes.clear()
        self._fan_out.close()
        for transfer in reversed(transfers):
            transfer.close()

    def _drain(self, key: int | None) -> None:
        """Return once no copy uses the transfer whose id is ``key`` (any, for None).

        Pending asynchronous batches are waited for here: their owner may never
        wait, and they count as in flight until they land.
        """
        with self._lock:
            self._waiting += 1
        try:
            while True:
                with self._lock:
                    pending = [
                        handle
                        for handle, hops in self._pending.items()
                        if key is None or any(id(t) == key for t in hops)
                    ]
                    if not pending:
                        busy = self._in_flight if key is None else self._in_flight.get(key)
                        if not busy:
                            return
                        self._lock.wait()
                        continue
                for handle in pending:
                    with contextlib.suppress(Exception):  # the error is the owner's to see
                        handle.wait()
        finally:
            with self._lock:
                self._waiting -= 1

    # copies ---------------------------------------------------------------

    def copy_tensor(self, src: Tensor, dst: Tensor) -> None:
        """Copy ``src`` into ``dst``; see :meth:`copy_tensors` for what it raises."""
        if self._closed:
            self._check_open()
        self._check_pair(0, src, dst)
        while True:
            route = self._route(src.device, dst.device)
            if route is None or len(route.hops) != 1:
                self.copy_tensors([src], [dst])  # routed, or raises NoTransferError
                return
            transfer = route.hops[0]
            if self._enter_one(transfer):
                break
        try:
            transfer.copy_tensors(((src, dst),))
        finally:
            self._leave_one(id(transfer))

    def copy_tensors(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> None:
        """Copy ``srcs[i]`` into ``dsts[i]`` for every i, as if one after another.

        The whole batch is validated before any memory is touched. Raises
        :class:`IncompatibleTensorsError` (lengths, shapes or dtypes differ),
        :class:`InvalidArrayError` (read-only destination), :class:`ForeignTensorError`
        (a tensor of another environment), :class:`NoTransferError` (no transfer,
        direct or through host, for a pair), :class:`ClosedError` (manager or a
        tensor's storage closed), ``TypeError`` (not a tensor).
        """
        plan = self._start(srcs, dsts)
        try:
            for stage in plan.stages:
                if len(stage) == 1:
                    stage[0].run()
                else:
                    self._fan_out.run([group.run for group in stage])
        finally:
            self._leave(plan.transfers)

    def copy_tensors_async(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> CopyHandle:
        """Start :meth:`copy_tensors` and return a :class:`~tensorferry.CopyHandle`
        whose ``wait()`` (or ``await``) finishes it.

        Transfers that implement :class:`AsyncDataTransfer` run in the
        background, and so do streamed routes; the others copy before this
        returns. A batch whose pairs depend on each other across transfers or
        devices waits between those parts.
        Validation errors are raised here, before anything is copied; errors of
        the copies themselves by the handle's ``wait()``.
        """
        plan = self._start(srcs, dsts)
        handles: list[TransferHandle] = []
        try:
            for index, stage in enumerate(plan.stages):
                if index:
                    for landing in handles:
                        landing.wait()
                inline: list[Callable[[], None]] = []
                for group in stage:
                    started = (
                        ThreadHandle(group.run, name="tensorferry-route")
                        if isinstance(group, RoutedStream)
                        else group.start()
                    )
                    if started is None:
                        inline.append(group.run)
                    else:
                        handles.append(started)
                self._fan_out.run(inline)
        except BaseException:
            for handle in handles:  # what started keeps its transfer busy until it lands
                with contextlib.suppress(Exception):
                    handle.wait()
            self._leave(plan.transfers)
            raise
        if not handles:
            self._leave(plan.transfers)
            return CopyHandle()
        with self._lock:
            result = CopyHandle(handles, on_landed=self._landed)
            self._pending[result] = plan.transfers
            if self._waiting:
                self._lock.notify_all()
        self._forget_landed()
        return result

    def _landed(self, handle: CopyHandle) -> None:
        with self._lock:
            hops = self._pending.pop(handle, ())
        self._leave(hops)

    def _forget_landed(self) -> None:
        """Let the oldest pending batches notice they have landed, so that batches
        nobody waits for do not pile up."""
        with self._lock:
            oldest = list(itertools.islice(self._pending, 4))
        for handle in oldest:
            handle.done()

    def _start(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> _Plan:
        """Plan the batch and count it in flight on the transfers it uses, atomically:
        if a transfer was unregistered in between, plan again with the registry as it is."""
        while True:
            plan = self._plan(srcs, dsts)
            if self._enter(plan.transfers):
                return plan

    def _enter(self, transfers: Sequence[IDataTransfer]) -> bool:
        """Count a copy in flight on ``transfers``; False (and nothing counted) if one
        of them is no longer registered. Raises :class:`ClosedError` after close."""
        with self._mutex:
            if self._closed:
                self._check_open()
            registered, in_flight = self._registered, self._in_flight
            for transfer in transfers:
                if id(transfer) not in registered:
                    return False
            for transfer in transfers:
                key = id(transfer)
                in_flight[key] = in_flight.get(key, 0) + 1
            return True

    def _enter_one(self, transfer: IDataTransfer) -> bool:
        """:meth:`_enter` for one transfer (a lone copy's hot path)."""
        key = id(transfer)
        with self._mutex:
            if self._closed:
                self._check_open()
            if key not in self._registered:
                return False
            in_flight = self._in_flight
            in_flight[key] = in_flight.get(key, 0) + 1
            return True

    def _leave(self, transfers: Sequence[IDataTransfer]) -> None:
        for transfer in transfers:
            self._leave_one(id(transfer))

    def _leave_one(self, key: int) -> None:
        """Count one copy less in flight on the transfer whose id is ``key``."""
        with self._mutex:
            in_flight = self._in_flight
            left = in_flight[key] - 1
            if left:
                in_flight[key] = left
            else:
                del in_flight[key]
                if self._waiting:
                    self._lock.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this DataTransferManager (or its environment) is closed")

    def _check_pair(self, index: int, src: Tensor, dst: Tensor) -> None:
        owner = self._owner
        if (
            type(src) is Tensor
            and type(dst) is Tensor
            and (owner is None or (src.owner is owner and dst.owner is owner))
            and src.shape == dst.shape
            and src.dtype == dst.dtype
            and not src.storage.closed
            and not dst.storage.closed
            and dst.storage.writable
        ):
            return  # the common case, checked without building messages
        for role, tensor in (("source", src), ("destination", dst)):
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"pair {index}: the {role} is a {type(tensor).__name__}, expected a "
                    "tensorferry.Tensor (wrap numpy arrays with Environment.from_numpy)"
                )
            if self._owner is not None and tensor.owner is not self._owner:
                raise ForeignTensorError(
                    f"pair {index}: the {role} {tensor!r} belongs to another environment; "
                    "expected a tensor created by this environment"
                )
            if tensor.storage.closed:
                raise ClosedError(
                    f"pair {index}: the {role} {tensor!r} has released storage; "
                    "expected a live tensor"
                )
        if src.shape != dst.shape or src.dtype != dst.dtype:
            hint = (
                "; use .view() or .reshape() to reinterpret the bytes"
                if src.nbytes == dst.nbytes
                else f" ({src.nbytes} vs {dst.nbytes} bytes)"
            )
            raise IncompatibleTensorsError(
                f"pair {index}: source is {src.shape} {src.dtype} but destination is "
                f"{dst.shape} {dst.dtype}; expected equal shapes and dtypes{hint}"
            )
        if not dst.writable:
            raise InvalidArrayError(
                f"pair {index}: the destination {dst!r} is read-only; expected writable memory"
            )

    # planning: validate every pair, find its route, order what must be ordered -----

    def _plan(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> _Plan:
        """Validate the batch and split it into stages of per-transfer groups."""
        if len(srcs) != len(dsts):
            raise IncompatibleTensorsError(
                f"got {len(srcs)} sources and {len(dsts)} destinations; expected equal counts"
            )
        self._check_open()
        only, routes = self._routes_of(srcs, dsts)
        if routes is None:
            # the common case: one transfer copies every pair directly, on one device
            if only is None:
                return _Plan([], ())
            return _Plan([[_Call(only, list(zip(srcs, dsts, strict=True)))]], (only,))
        stages = _stages(self._steps(srcs, dsts, routes))
        return _Plan(stages, tuple(_transfers_of(stages)))

    def _routes_of(
        self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]
    ) -> tuple[IDataTransfer | None, list[_Hops] | None]:
        """Check every pair and find the transfers that copy it: one (direct) or two
        (through host memory). Raises what :meth:`copy_tensors` lists.

        Returns ``(transfer, None)`` when that one transfer copies every pair directly
        on one device (the lane of :func:`_lane`), ``(None, None)`` for an empty batch,
        else ``(None, hops of each pair)``.
        """
        owner, routes = self._owner, self._routes
        result: list[_Hops] | None = None  # built once the batch is not uniform
        only: IDataTransfer | None = None
        lane: Device | None = None  # the device every pair so far runs on
        hops: _Hops = ()
        # Pairs of a batch mostly share one device pair (the very same Device objects):
        # its route and lane are found once, and equality runs only when objects differ.
        last_from: Device | None = None
        last_to: Device | None = None
        last_source: object = None
        from_device: Device | None = None
        for index, (src, dst) in enumerate(zip(srcs, dsts, strict=True)):
            if type(src) is not Tensor or type(dst) is not Tensor:
                self._check_pair(index, src, dst)  # raises TypeError for a non-tensor
            source, target = src.storage, dst.storage
            if source is not last_source:
                if source.closed:
                    self._check_pair(index, src, dst)  # raises ClosedError, or an earlier error
                from_device, last_source = source.device, source
            if not (  # the checks of _check_pair's common case, inlined for big batches
                (owner is None or (src.owner is owner and dst.owner is owner))
                and src.shape == dst.shape
                and (src.dtype is dst.dtype or src.dtype == dst.dtype)
                and not target.closed
                and target.writable
            ):
                self._check_pair(index, src, dst)
            to_device = target.device
            if from_device is last_from and to_device is last_to:
                if result is not None:
                    result.append(hops)
                continue
            assert from_device is not None
            cached = routes.get((from_device, to_device), _MISSING)
            route = (
                self._route(from_device, to_device)
                if cached is _MISSING
                else cast("_Route | None", cached)
            )
            if route is None:
                raise NoTransferError(
                    f"pair {index}: no registered data transfer copies {src.device} -> "
                    f"{dst.device}, directly or through host memory; registered: "
                    f"{[type(t).__name__ for t in self._transfers] or 'none'}"
                )
            last_from, last_to = from_device, to_device
            if result is None:
                device = to_device if from_device.is_host else from_device
                if index == 0 and len(route.hops) == 1:
                    only, lane = route.hops[0], device
                elif (
                    len(route.hops) != 1
                    or route.hops[0] is not only
                    or (device is not lane and device != lane)
                ):
                    result = [hops] * index  # the pairs so far all had the first hops
                    only = None
            hops = route.hops
            if result is not None:
                result.append(hops)
        return only, result

    def _steps(
        self, srcs: Sequence[Tensor], dsts: Sequence[Tensor], routes: Sequence[_Hops]
    ) -> list[_Step]:
        """One step per direct pair. A routed pair larger than a stream chunk is one
        step that streams it; a smaller one becomes a download into fresh host
        memory and an upload from it."""
        steps: list[_Step] = []
        allocate = self._host_allocator
        for index, (src, dst, hops) in enumerate(zip(srcs, dsts, routes, strict=True)):
            if len(hops) == 1:
                steps.append(_Step(hops[0], src, dst, _lane(hops[0], src, dst)))
                continue
            assert allocate is not None  # no routes without it
            down, up = hops
            if self._stream.streams(src.nbytes):
                logger.debug("pair %d: %s -> %s streamed", index, src.device, dst.device)
                stream = RoutedStream(down, up, src, dst, allocate, self._stream)
                steps.append(_Step(down, src, dst, ("stream", index), stream))
                continue
            logger.debug("pair %d: %s -> %s through host memory", index, src.device, dst.device)
            staging = Tensor(allocate(src.nbytes), src.shape, src.dtype, 0, src.owner)
            steps.append(_Step(down, src, staging, _lane(down, src, staging)))
            steps.append(_Step(up, staging, dst, _lane(up, staging, dst)))
        return steps


def _transfers_of(stages: Sequence[_Stage]) -> list[IDataTransfer]:
    """Each transfer of a plan once."""
    unique: dict[int, IDataTransfer] = {}
    for stage in stages:
        for group in stage:
            for transfer in group.transfers:
                unique.setdefault(id(transfer), transfer)
    return list(unique.values())


def _memory_range(tensor: Tensor) -> tuple[object, int, int]:
    """(memory key, first byte, end byte): host views compare by address."""
    storage = tensor.storage
    if isinstance(storage, HostStorage):
        start = storage.address + tensor.offset
        return ("host", start, start + tensor.nbytes)
    return (id(storage), tensor.offset, tensor.offset + tensor.nbytes)


def _stages(steps: Sequence[_Step]) -> list[_Stage]:
    """Group steps per lane (transfer and device), starting a new stage only where
    order matters.

    Step j must run after step i < j when they touch overlapping bytes, one of
    them writes, and they are in different lanes (one call keeps its own pairs
    in order). Each step goes to the earliest stage that respects that, so the
    lanes of one stage touch disjoint memory and may run at once.
    """
    if len({s.lane for s in steps}) <= 1:
        return [[_group_of(steps)]] if steps else []
    accesses: dict[object, list[tuple[int, int, int, bool]]] = defaultdict(list)
    for number, step in enumerate(steps):
        for tensor, writes in ((step.src, False), (step.dst, True)):
            key, start, end = _memory_range(tensor)
            if end > start:
                accesses[key].append((start, end, number, writes))
    after: dict[int, set[int]] = defaultdict(set)
    for spans in accesses.values():
        spans.sort()
        for i, (_, end, number, writes) in enumerate(spans):
            for other_start, _, other, other_writes in spans[i + 1 :]:
                if other_start >= end:
                    break
                if other != number and (writes or other_writes):
                    first, second = sorted((number, other))
                    after[second].add(first)
    stage_of: list[int] = []
    for number, step in enumerate(steps):
        stage_of.append(
            max(
                (
                    stage_of[first] + (steps[first].lane != step.lane)
                    for first in after.get(number, ())
                ),
                default=0,
            )
        )
    lanes: list[dict[object, list[_Step]]] = [{} for _ in range(max(stage_of) + 1)]
    for number, step in enumerate(steps):
        lanes[stage_of[number]].setdefault(step.lane, []).append(step)
    return [[_group_of(lane) for lane in stage.values()] for stage in lanes]


def _group_of(lane: Sequence[_Step]) -> _Group:
    """The call (or the stream) that runs the steps of one lane of one stage."""
    first = lane[0]
    if first.stream is not None:
        return first.stream
    return _Call(first.transfer, [(s.src, s.dst) for s in lane])
