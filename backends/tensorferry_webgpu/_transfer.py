"""WebGPUDataTransfer: the IDataTransfer of the WebGPU backend.

It checks every pair and plans the batch as op records (no wgpu call), one
run of ops per context, then hands each run to :func:`run_batch`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from tensorferry import ClosedError, CopyPair, Device, HostStorage, Tensor
from tensorferry_webgpu._batch import run_batch
from tensorferry_webgpu._context import Context
from tensorferry_webgpu._ops import DeviceCopy, Download, Fill, Op, Upload
from tensorferry_webgpu._storage import WebGPUStorage
from tensorferry_webgpu._threads import AsyncBatch, BatchThread

__all__ = ["WebGPUDataTransfer"]

_NOT_MINE = (
    "{tensor!r} is neither WebGPU memory nor host memory; the webgpu transfer "
    "copies between its own devices and host memory"
)

_Run = tuple[Context, list[Op]]


class WebGPUDataTransfer:
    """Copies host <-> WebGPU device and within one WebGPU device.

    ``owner`` is the backend whose contexts it copies with, ``owns`` tells its
    devices. Claims no pair between two different WebGPU devices: the manager
    routes those through host memory. Each batch runs as one batch per context
    (usually one): one submit, and one map per staging chunk of downloads.
    Implements :class:`tensorferry.AsyncDataTransfer` with one batch thread.
    """

    def __init__(self, owner: object, owns: Callable[[Device], bool]) -> None:
        self._owner = owner
        self._owns = owns
        self._lock = threading.Lock()
        self._closed = False
        self._thread: BatchThread | None = None
        self._contexts: list[Context] = []

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        """Host <-> own device, or within one adapter's memory (its device memory
        and its host-accessible memory, which share one wgpu device)."""
        owns = self._owns
        if owns(src_device):
            return (
                dst_device == src_device
                or dst_device.is_host
                or (dst_device.index == src_device.index and owns(dst_device))
            )
        return src_device.is_host and owns(dst_device)

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        """Copy the pairs in order; returns when every destination holds its data.

        Raises :class:`ClosedError` (transfer or context closed),
        :class:`DeviceLostError`, :class:`OutOfDeviceMemoryError`,
        :class:`WebGPUError` for other wgpu failures, ``ValueError`` for a wrapped
        buffer that is mapped, ``TypeError`` for memory this transfer does not
        handle. Everything is checked before anything is copied.
        """
        if len(pairs) == 1 and self._copy_alone(pairs[0]):
            return
        self._execute(self._plan(pairs))

    def _copy_alone(self, pair: CopyPair) -> bool:
        """Copy one pair between host memory and plain device memory (no buffer a
        caller can map) as :meth:`_plan` and :meth:`_execute` would, without their
        batch machinery: the hot path of a decode loop's single copies.

        Returns False, having done nothing, for anything else, which the batch path
        then copies or rejects with its errors. Raises what :meth:`_usable` and
        :func:`run_batch` raise.
        """
        src, dst = pair
        source, target = src.storage, dst.storage
        op: Op
        if type(target) is WebGPUStorage and type(source) is HostStorage:
            tensor, memory = dst, target
            op = tuple.__new__(
                Upload, (target, target.base + dst.offset, src.nbytes, source.array, src.offset)
            )
        elif type(source) is WebGPUStorage and type(target) is HostStorage:
            tensor, memory = src, source
            op = tuple.__new__(
                Download,
                (source, source.base + src.offset, dst.nbytes, target, target.array, dst.offset),
            )
        else:
            return False
        if self._closed or not op.nbytes or memory.watch_map:
            return False
        context = self._usable(tensor, memory)  # raises as the plan would
        if context.maps_open or context not in self._contexts:
            return False
        run_batch(context, (op,))
        return True

    def copy_tensors_async(self, pairs: Sequence[CopyPair]) -> AsyncBatch:
        """Check the pairs, then copy them on the transfer's batch thread."""
        runs = self._plan(pairs)
        with self._lock:
            self._check_open()
            if self._thread is None:
                self._thread = BatchThread("tensorferry-webgpu")
            thread = self._thread
        # The lambda holds the pairs: a merged device copy names only its first
        # pieces' storages, and the others must stay out of the pool until it ran.
        return thread.submit(lambda: self._execute(runs) if pairs else None)

    def fill(self, tensor: Tensor, pattern: bytes) -> None:
        """Repeat ``pattern`` over ``tensor`` on the device (the backend's Filler).

        Raises as :meth:`copy_tensors` does.
        """
        self._check_open()
        storage = tensor.storage
        assert isinstance(storage, WebGPUStorage)
        context = self._usable(tensor, storage)
        if tensor.nbytes:
            self._execute(
                [(context, [Fill(storage, storage.base + tensor.offset, tensor.nbytes, pattern)])]
            )

    def close(self) -> None:
        """Finish copies in flight, then release the contexts it used. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            contexts, self._contexts = self._contexts, []
        if thread is not None:
            thread.close()
        for context in contexts:
            context.release()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the webgpu data transfer is closed")

    def _plan(self, pairs: Sequence[CopyPair]) -> list[_Run]:
        """Check every pair and turn the batch into runs of ops, one run per context change.

        A context is checked when it changes from one pair to the next, and a buffer
        that a caller could map once per run of pairs that read it (or write it).
        Device copies between neighbouring slots of two slabs become one op (see
        :func:`_close`), so the batch visits such a run once, not once per pair.
        """
        self._check_open()
        runs: list[_Run] = []
        ops: list[Op] = []
        current: Context | None = None
        checked: Context | None = None  # the context last found usable
        read: object = None  # the mappable buffer last found unmapped as a source
        written: object = None  # ... and as a destination
        usable, new = self._usable, tuple.__new__
        # The open device copy (see _close): the ops list it ends, its buffers, where
        # its next piece would start on each side, its bytes so far, and its limit.
        tail: list[Op] | None = None
        run_src: object = None
        run_dst: object = None
        open_src: object = None
        open_dst: object = None
        end_src = end_dst = -1
        total = cap = n = src_offset = dst_offset = 0
        opens = 0  # the limit of the run the op of this pair may open (0: none)
        for src, dst in pairs:
            op: Op
            source, target = src.storage, dst.storage
            if isinstance(source, WebGPUStorage):
                context = source.context
                buffer = source.buffer
                if source.watch_map and buffer is not read:
                    if context is not checked or buffer is None or buffer.map_state != "unmapped":
                        context = checked = usable(src, source)
                    read = buffer
                elif context is not checked:
                    context = checked = usable(src, source)
                if isinstance(target, WebGPUStorage):
                    other = target.context
                    buffer = target.buffer
                    if target.watch_map and buffer is not written:
                        if other is not checked or buffer is None or buffer.map_state != "unmapped":
                            other = usable(dst, target)
                        written = buffer
                    elif other is not checked:
                        other = usable(dst, target)
                    if other is not context:
                        raise ValueError(
                            f"{src!r} and {dst!r} are on different WebGPU devices; "
                            "expected one device (the manager routes others through host)"
                        )
                    src_offset, dst_offset, n = (
                        source.base + src.offset,
                        target.base + dst.offset,
                        src.nbytes,
                    )
                    if (
                        src_offset == end_src
                        and dst_offset == end_dst
                        and context is current
                        and buffer is run_dst
                        and source.buffer is run_src
                        and not n & 3
                        and total + n < cap
                    ):
                        # the next slots on both sides (slabs): the open copy grows
                        end_src, end_dst, total = end_src + n, end_dst + n, total + n
                        continue
                    op = new(DeviceCopy, (source, src_offset, target, dst_offset, n))
                    if (
                        n
                        and source.buffer is not target.buffer
                        and not (src_offset | dst_offset | n) & 3
                        and not (source.watch_map or target.watch_map)
                    ):
                        opens, open_src, open_dst = _merge_cap(context), source.buffer, buffer
                elif isinstance(target, HostStorage):
                    src_offset, dst_offset, n = source.base + src.offset, dst.offset, dst.nbytes
                    flat = target.array
                    if (
                        src_offset == end_src
                        and dst_offset == end_dst
                        and context is current
                        and buffer is run_src
                        and flat is run_dst
                        and not n & 3
                        and total + n < cap
                    ):
                        # the next slot into the next row of one array: the open op grows
                        end_src, end_dst, total = end_src + n, end_dst + n, total + n
                        continue
                    op = new(
                        Download,
                        (source, src_offset, n, target, flat, dst_offset),
                    )
                    if n and not (src_offset | n) & 3 and not source.watch_map:
                        opens, open_src, open_dst = _host_cap(context), buffer, flat
                else:
                    raise TypeError(_NOT_MINE.format(tensor=dst))
            else:
                if not isinstance(source, HostStorage):
                    raise TypeError(_NOT_MINE.format(tensor=src))
                if not isinstance(target, WebGPUStorage):
                    raise TypeError(f"the webgpu transfer does not copy {src!r} -> {dst!r}")
                context = target.context
                buffer = target.buffer
                if target.watch_map and buffer is not written:
                    if context is not checked or buffer is None or buffer.map_state != "unmapped":
                        context = checked = usable(dst, target)
                    written = buffer
                elif context is not checked:
                    context = checked = usable(dst, target)
                src_offset, dst_offset, n = src.offset, target.base + dst.offset, src.nbytes
                flat = source.array
                if (
                    src_offset == end_src
                    and dst_offset == end_dst
                    and context is current
                    and flat is run_src
                    and buffer is run_dst
                    and not n & 3
                    and total + n < cap
                ):
                    # the next row of one array into the next slot: the open op grows
                    end_src, end_dst, total = end_src + n, end_dst + n, total + n
                    continue
                op = new(Upload, (target, dst_offset, n, flat, src_offset))
                if n and not (dst_offset | n) & 3 and not target.watch_map:
                    opens, open_src, open_dst = _host_cap(context), flat, buffer
            if not src.nbytes:
                continue
            if context is not current:
                ops = []
                runs.append((context, ops))
                current = context
            if tail is not None:
                _close(tail, total)
                tail, end_src = None, -1
            if opens:
                if n < opens:
                    tail, run_src, run_dst, cap = ops, open_src, open_dst, opens
                    end_src, end_dst, total = src_offset + n, dst_offset + n, n
                opens = 0
            ops.append(op)
        if tail is not None:
            _close(tail, total)
        return runs

    def _usable(self, tensor: Tensor, storage: WebGPUStorage) -> Context:
        """The storage's context, when this transfer may copy with it now.

        Raises :class:`ClosedError` or :class:`DeviceLostError` for an unusable
        context, ``ValueError`` for another backend instance's memory or a
        wrapped buffer that a caller has mapped.
        """
        context = storage.context
        buffer = storage.buffer
        if not (
            context.closed
            or context.lost
            or context.backend is not self._owner
            or (storage.watch_map and buffer is not None and buffer.map_state != "unmapped")
        ):
            return context
        context.check_usable()
        if context.backend is not self._owner:
            raise ValueError(f"{tensor!r} belongs to another WebGPU backend instance")
        if storage.mapping is not None:
            storage.settle()  # raises while a scope or its arrays are alive, else unmaps
            return context
        assert buffer is not None
        with context.lock:
            # tensorferry maps buffers itself only under this lock, for the length of
            # one copy (host-accessible and directly mapped memory): another thread's
            # copy may have been mid-map when we looked.
            if buffer.map_state == "unmapped":
                return context
        raise ValueError(
            f"the wgpu buffer behind {tensor!r} is {buffer.map_state}; expected it unmapped "
            "(unmap it before tensorferry copies to or from it)"
        )

    def _hold(self, context: Context) -> None:
        with self._lock:
            if all(c is not context for c in self._contexts):
                self._contexts.append(context.acquire())

    def _execute(self, runs: list[_Run]) -> None:
        for context, ops in runs:
            if context not in self._contexts:
                self._hold(context)
            if context.maps_open:
                # A mapped() scope opened after this batch was planned (async copies):
                # check again under the lock that maps, before anything is submitted.
                with context.lock:
                    _check_unmapped(ops)
                    run_batch(context, ops)
            else:
                run_batch(context, ops)


def _merge_cap(context: Context) -> int:
    """Device copies merged in a plan stay below this many bytes: the copy kernel's
    minimum where the context uses the kernel (each piece would take the copy
    command, and so does the merged copy), else no limit."""
    return context.options.kernel_copy_min if context.kernel_copies else 1 << 62


def _host_cap(context: Context) -> int:
    """Uploads and downloads merged in a plan stay below this many bytes: a 16th of
    a staging chunk, and below ``direct_min`` where buffers may be mapped directly,
    so that a merged op stages through a chunk as each of its pieces would."""
    limit = context.options.staging_chunk >> 4
    return min(limit, context.options.direct_min) if context.mapped_storage else limit


def _close(ops: list[Op], total: int) -> None:
    """Give the open op, the last of ``ops``, its merged size ``total``.

    A plan merges a copy with the pairs after it of its kind whose ranges follow it
    on both sides: device copies between neighbouring slots of two slabs (buffers
    that differ), uploads from neighbouring rows of one host array into
    neighbouring slots, downloads the other way; whole 4-byte words, no buffer a
    caller can map. Copying one longer range is then the same as copying the
    pieces in order. A merged op names the first pieces' storages only: the
    batch's pairs keep the others alive until it ran.
    """
    first = ops[-1]
    assert type(first) is not Fill, first
    if first.nbytes != total:
        ops[-1] = first._replace(nbytes=total)


def _check_unmapped(ops: list[Op]) -> None:
    """Raise :class:`~tensorferry.MappedError` when an op's storage is kept mapped."""
    for op in ops:
        for storage in op:
            if isinstance(storage, WebGPUStorage) and storage.mapping is not None:
                storage.settle()
