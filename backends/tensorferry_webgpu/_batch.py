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

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._device_copy import DeviceCopier
from tensorferry_webgpu._direct import DirectCopier, maps_directly
from tensorferry_webgpu._download import DownloadStager
from tensorferry_webgpu._fill import Filler
from tensorferry_webgpu._native import MAP_READ, copy_out_and_unmap, submit_copies, write_buffer
from tensorferry_webgpu._ops import DeviceCopy, Download, Fill, Op, Upload
from tensorferry_webgpu._queue import Queue
from tensorferry_webgpu._slabs import SLOT_ALIGN
from tensorferry_webgpu._upload import UploadStager
from tensorferry_webgpu._waits import request_map

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context
    from tensorferry_webgpu._storage import WebGPUStorage

__all__ = ["FEW_OPS", "download_alone", "run_batch", "uploads_alone"]

FEW_OPS = 8
"""Batches of at most this many ops upload small tensors by ``write_buffer``:
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
        batch: _Batch | None = None
        try:
            if len(ops) == 1:
                alone = type(ops[0]) in (Download, Upload) and _alone(context, ops[0])
            else:  # a lone op that _alone declined is no more welcome here
                alone = len(ops) <= FEW_OPS and uploads_alone(context, ops)
            if alone:
                context.pool.end_batch()
                return
            batch = _Batch(context, few=len(ops) <= FEW_OPS)
            batch.run(ops)
        except BaseException as exc:
            if batch is not None:
                batch.abandon()
            error = context.failure(exc)
            if error is exc:
                raise
            raise error from exc


def _alone(context: Context, op: Op) -> bool:
    if type(op) is Download:
        return download_alone(context, op)
    return upload_alone(context, op)  # type: ignore[arg-type]


def upload_alone(context: Context, op: Upload) -> bool:
    """Write ``op`` by one native ``write_buffer`` as a batch of its own when it is small and
    whole 4-byte words (what a batch does for such a lone upload): the data lands
    at the next submit, made now only once enough written bytes are left staged.

    Returns False, having done nothing, when ``op`` needs more. Call under the
    context's lock. Raises wgpu's errors untranslated (the caller translates them).
    """
    buffer = _written_alone(context, op)
    if buffer is None:
        return False
    first, n = op.first, op.nbytes
    write_buffer(context.queue, buffer, op.offset, op.flat[first : first + n])
    if context.defer_writes(n):
        context.queue.submit([])
    return True


def _written_alone(context: Context, op: Upload) -> wgpu.GPUBuffer | None:
    """The destination buffer when ``op`` is small, whole 4-byte words and not mapped
    directly (one ``write_buffer`` does it), else None."""
    offset, n, buffer = op.offset, op.nbytes, op.target.buffer
    if (offset | n) & 3 or n > context.options.small_upload or buffer is None:
        return None
    return None if maps_directly(context, buffer, n) else buffer


def uploads_alone(context: Context, ops: Sequence[Op]) -> bool:
    """Write a few uploads by one native ``write_buffer`` each when every one is what
    :func:`upload_alone` takes, in order, as the batch would, without the batch,
    queue and stager around them (a decode step's inputs in one ``copy_tensors``).
    A run of them into neighbouring slab slots, each filled to its end, is one
    ``write_buffer`` of the pieces gathered (:data:`GATHER_MAX`).

    Returns False, having done nothing, when an op is not such an upload. Call
    under the context's lock. Raises wgpu's errors untranslated.
    """
    uploads: list[Upload] = []
    for op in ops:
        if type(op) is not Upload or _written_alone(context, op) is None:
            return False
        uploads.append(op)
    queue, written, index, count = context.queue, 0, 0, len(uploads)
    while index < count:
        upload, end = uploads[index], index + 1
        while (
            end < count
            and _next_slot(uploads[end - 1], uploads[end])
            and uploads[end].offset + uploads[end].nbytes - upload.offset <= GATHER_MAX
        ):
            end += 1
        if end - index > 1:
            data = _gathered(uploads[index:end])
        else:
            data = upload.flat[upload.first : upload.first + upload.nbytes]
        write_buffer(queue, _buffer(upload.target), upload.offset, data)
        written += data.nbytes
        index = end
    if context.defer_writes(written):
        queue.submit([])
    return True


GATHER_MAX = 16 << 10
"""Uploads into neighbouring slab slots are written by one ``write_buffer`` while their
span stays within this many bytes. Each call costs wgpu a staging buffer: on
lavapipe, in a loop, three 8-byte writes took 10.6-12.7 us and one write of the
three 4.6 us, while gathering three pieces on the host took 2.1 us (8 bytes each)
to 3.2 us (4 KiB each)."""


def _next_slot(prev: Upload, upload: Upload) -> bool:
    """Whether ``upload`` fills the slab slot right after the one ``prev`` fills to its
    end: the bytes between them are the padding of ``prev``'s slot (slots start at
    multiples of 16), which no tensor uses."""
    before, after = prev.target, upload.target
    end = before.base + before.nbytes
    return (
        after.buffer is before.buffer
        and before.in_slab
        and after.in_slab
        and prev.offset + prev.nbytes == end
        and upload.offset == after.base
        and 0 <= after.base - end < SLOT_ALIGN
    )


def _gathered(uploads: list[Upload]) -> npt.NDArray[np.uint8]:
    """The bytes of ``uploads`` (neighbouring slots, in order) as one range, zeros in
    the padding between them."""
    start = uploads[0].offset
    data = np.zeros(uploads[-1].offset + uploads[-1].nbytes - start, np.uint8)
    for upload in uploads:
        first, n = upload.first, upload.nbytes
        data[upload.offset - start : upload.offset - start + n] = upload.flat[first : first + n]
    return data


def download_alone(context: Context, op: Download) -> bool:
    """Run ``op`` as a batch of its own when it fits one staging chunk: one copy into
    a pooled ``MAP_READ`` chunk, one native submit, one map and a copy out, as a
    batch would do for this one op, without the batch, queue and stager around them.

    Returns False, having done nothing, when ``op`` needs more (a range larger than a
    chunk, memory that maps directly, a host copy big enough for the copy threads).
    Call under the context's lock. Raises wgpu's errors untranslated (the caller
    translates them); the staging chunk is discarded after any error.
    """
    offset, n, buffer = op.offset, op.nbytes, op.source.buffer
    start = offset & ~3
    size = ((offset + n + 3) & ~3) - start
    options = context.options
    if size > options.staging_chunk or n >= options.parallel_min or buffer is None:
        return False
    if maps_directly(context, buffer, n):
        return False
    staging, gpu = context.download_staging, context.gpu
    chunk = staging.acquire()
    try:
        context.patcher.flush()
        submit_copies(gpu, context.queue, [(buffer, start, chunk, 0, size)])
        context.unsubmitted_writes = 0  # a submit carries every staged write
        request = request_map(chunk, MAP_READ, 0, size)
        request.wait(gpu, lost_after=options.lost_after, spin=context.spin_wait)
        first = op.first
        copy_out_and_unmap(chunk, 0, size, offset - start, op.flat[first : first + n])
    except BaseException:
        staging.discard(chunk)
        raise
    staging.give_back(chunk)
    return True


def _buffer(storage: WebGPUStorage) -> wgpu.GPUBuffer:
    assert storage.buffer is not None, "zero-byte storage is never copied"
    return storage.buffer


class _Batch:
    """One execution of ops; collaborators are made when an op of their kind comes."""

    def __init__(self, context: Context, *, few: bool) -> None:
        self._context = context
        self._few = few
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
            self._uploads = UploadStager(self._context, self._queue, few=self._few)
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
