"""The batch: runs one context's ops in order, handing each to the collaborator of its kind.

Ops go to the upload stager, the download stager, the direct-mapped copier,
the device copier or the filler; they all record into one :class:`Queue`, so
a batch is one submit and, for downloads, one map per staging chunk. The
batch keeps the semantics of a loop: an upload whose source a pending
download writes waits for that download, a direct read lands after the
staged downloads before it, and streamed uploads land before any other op
after them is recorded. The batch is the one place wgpu failures are
translated (:meth:`Context.failure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tensorferry_webgpu._device_copy import DeviceCopier
from tensorferry_webgpu._direct import DirectCopier, maps_directly
from tensorferry_webgpu._download import DownloadStager
from tensorferry_webgpu._fill import Filler
from tensorferry_webgpu._ops import DeviceCopy, Download, Fill, Op, Upload
from tensorferry_webgpu._queue import Queue
from tensorferry_webgpu._upload import UploadStager

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._storage import WebGPUStorage

__all__ = ["FEW_OPS", "run_batch"]

FEW_OPS = 8
"""Batches of at most this many ops upload small tensors by ``write_buffer`` each:
packing them into a staging chunk costs a wait for the chunk's map (a blocking
poll until the device's queue is idle), which only pays across many pieces."""


def run_batch(context: Context, ops: Sequence[Op]) -> None:
    """Execute ``ops`` on ``context`` under its lock; return when every destination
    holds its data.

    Raises :class:`~tensorferry.ClosedError` or :class:`~tensorferry.DeviceLostError`
    for an unusable context, and tensorferry's errors for wgpu failures (see
    :func:`~tensorferry_webgpu._errors.translate`); staging in an unknown state
    is discarded.
    """
    with context.lock:
        context.check_usable()
        batch = _Batch(context, single=len(ops) <= FEW_OPS)
        try:
            batch.run(ops)
        except BaseException as exc:
            batch.abandon()
            error = context.failure(exc)
            if error is exc:
                raise
            raise error from exc


def _buffer(storage: WebGPUStorage) -> wgpu.GPUBuffer:
    assert storage.buffer is not None, "zero-byte storage is never copied"
    return storage.buffer


class _Batch:
    """One execution of ops; collaborators are made when an op of their kind comes."""

    def __init__(self, context: Context, *, single: bool) -> None:
        self._context = context
        self._single = single
        self._queue = Queue(context)
        self._uploads: UploadStager | None = None
        self._downloads: DownloadStager | None = None
        self._direct: DirectCopier | None = None
        self._copier: DeviceCopier | None = None

    def run(self, ops: Sequence[Op]) -> None:
        index, count = 0, len(ops)
        while index < count:
            op = ops[index]
            kind = type(op)
            if kind is not Upload and self._uploads is not None and self._uploads.streaming:
                self._uploads.settle()  # streamed uploads land before anything later
            if kind is Download:
                index = self._download(ops, index)
                continue
            if kind is Upload:
                # While uploads stream, every upload joins the stream in order.
                if self._uploads is not None and not self._uploads.streaming:
                    downloads = self._downloads
                    after = self._uploads.pack_run(
                        ops, index, None if downloads is None else downloads.overlaps
                    )
                    if after > index:
                        index = after
                        continue
                self._upload(op)  # type: ignore[arg-type]
            elif kind is DeviceCopy:
                if self._copier is None:
                    self._copier = DeviceCopier(self._context, self._queue)
                after = self._copier.pack_run(ops, index)
                if after == index:  # copies within one buffer (a slab): one bounce
                    after = self._copier.bounce_run(ops, index)
                if after > index:
                    index = after
                    continue
                self._device_copy(op)  # type: ignore[arg-type]
            else:
                assert kind is Fill, kind
                self._fill(op)  # type: ignore[arg-type]
            index += 1
        self.finish()

    def _upload(self, op: Upload) -> None:
        host, target, offset = op.host, op.target, op.offset
        downloads = self._downloads
        if downloads is not None and downloads.overlaps(host):
            downloads.complete()  # the source is a download target earlier in this batch
        buffer = _buffer(target)
        if maps_directly(self._context, buffer, host.nbytes):
            if self._uploads is not None and self._uploads.streaming:
                self._uploads.settle()  # the map waits for the streamed copies before it
            self._direct_copier().write(buffer, offset, host)
            return
        if self._uploads is None:
            self._uploads = UploadStager(self._context, self._queue, single=self._single)
        self._uploads.upload(host, buffer, offset)

    def _download(self, ops: Sequence[Op], index: int) -> int:
        if self._downloads is None:
            self._downloads = DownloadStager(self._context, self._queue)
        downloads = self._downloads
        op: Download = ops[index]  # type: ignore[assignment]
        if not downloads.fits(op):
            buffer, host = _buffer(op.source), op.host
            if maps_directly(self._context, buffer, op.nbytes):
                downloads.complete()  # earlier downloads land first, so later writes win
                self._direct_copier().read(buffer, op.offset, host)
                return index + 1
            downloads.download(buffer, op.offset, host, op.address)
            index += 1
        return downloads.pack_run(ops, index)

    def _device_copy(self, op: DeviceCopy) -> None:
        if self._copier is None:
            self._copier = DeviceCopier(self._context, self._queue)
        source, src_offset, target, dst_offset, nbytes = op
        self._copier.copy(_buffer(source), src_offset, _buffer(target), dst_offset, nbytes)

    def _fill(self, op: Fill) -> None:
        target, offset, nbytes, pattern = op
        Filler(self._queue).fill(_buffer(target), offset, nbytes, pattern)

    def _direct_copier(self) -> DirectCopier:
        if self._direct is None:
            self._direct = DirectCopier(self._context, self._queue)
        return self._direct

    def finish(self) -> None:
        """Submit everything and complete the downloads (the only step that waits)."""
        if self._uploads is not None and self._uploads.streaming:
            self._uploads.settle()
        if self._downloads is not None:
            self._downloads.complete()
        self._queue.submit()
        self._queue.release_scratch()
        self._context.pool.end_batch()

    def abandon(self) -> None:
        """Drop every staging buffer the batch holds, after an error."""
        if self._uploads is not None:
            self._uploads.abandon()
        if self._downloads is not None:
            self._downloads.abandon()
        self._queue.abandon()
