"""The batch's queue: one command encoder, submits, the byte-exact patch flush, and waits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._native import encode_copies, submit_copies, write_buffer
from tensorferry_webgpu._waits import MapRequest, request_map

if TYPE_CHECKING:
    import wgpu

    from tensorferry_webgpu._context import Context

__all__ = ["Queue"]


class Queue:
    """Records a batch's commands in one encoder and submits them in order.

    Work reaches the device in the order it was recorded: ``write_buffer``
    calls only while nothing is encoded (they land at the next submit, ahead
    of its command buffer), everything else into :meth:`encoder`. Staging
    chunks that the encoder copies from are *attached*: the queue unmaps them
    before the submit that needs them and hands them back to the staging pool
    after it. :attr:`epoch` counts submits, so a stager can tell whether its
    copies have been submitted (:meth:`submit_through`).
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        self._gpu = context.gpu
        self._queue = context.queue
        self._encoder: wgpu.GPUCommandEncoder | None = None
        # Copies recorded by :meth:`copy`, not yet in the encoder: the last one
        # grows while the next copy continues it in both buffers.
        self._copies: list[list[Any]] = []
        self._pending_writes = 0  # bytes of write_buffer data since the last submit
        self._attached: list[wgpu.GPUBuffer] = []
        self._scratch: list[wgpu.GPUBuffer] = []
        self.epoch = 0

    @property
    def idle(self) -> bool:
        """True while nothing is recorded since the last submit."""
        return self._encoder is None and not self._copies and not self._pending_writes

    @property
    def unencoded(self) -> bool:
        """True while nothing but ``write_buffer`` data is recorded since the last
        submit: a further ``write_buffer`` still lands in the batch's order."""
        return self._encoder is None and not self._copies

    def encoder(self) -> wgpu.GPUCommandEncoder:
        """The open command encoder (made on first use after a submit), holding every
        copy recorded by :meth:`copy` so far."""
        if self._encoder is None:
            self._encoder = self._gpu.create_command_encoder()
        if self._copies:
            copies, self._copies = self._copies, []
            encode_copies(self._encoder, copies)  # type: ignore[arg-type]
        return self._encoder

    def copy(
        self, src: wgpu.GPUBuffer, src_offset: int, dst: wgpu.GPUBuffer, dst_offset: int, n: int
    ) -> None:
        """Record ``copy_buffer_to_buffer`` of ``n`` bytes (offsets and ``n`` multiples
        of 4, two distinct buffers). A copy that continues the previous one in both
        buffers extends it: neighbouring pieces become one command."""
        copies = self._copies
        if copies:
            last = copies[-1]
            if (
                last[2] is dst
                and last[0] is src
                and last[1] + last[4] == src_offset
                and last[3] + last[4] == dst_offset
            ):
                last[4] += n
                return
        copies.append([src, src_offset, dst, dst_offset, n])

    def recorded(self) -> list[list[Any]]:
        """The copies recorded by :meth:`copy` and not yet in the encoder, each
        ``[source, source offset, destination, destination offset, bytes]``.

        For a stager's tight loop, which appends to it as :meth:`copy` would
        (extending the last copy where the new one continues it in both buffers)
        without a call per copy; valid until the next :meth:`encoder` or :meth:`submit`.
        """
        return self._copies

    def write_buffer(
        self, buffer: wgpu.GPUBuffer, offset: int, data: npt.NDArray[np.uint8]
    ) -> None:
        """``queue.write_buffer`` of C-contiguous bytes (4-byte aligned, non-empty), by
        one native call; only while nothing is encoded, so that the write keeps its
        place in the batch's order."""
        assert self.unencoded, "a write_buffer would overtake encoded commands"
        write_buffer(self._queue, buffer, offset, data)
        self._pending_writes += data.nbytes

    def write_fresh(self, buffer: wgpu.GPUBuffer, data: bytes) -> None:
        """``queue.write_buffer`` of ``data`` (a multiple of 4 bytes) at the start of a
        :meth:`scratch` buffer, at any time: no earlier command touches a fresh
        buffer, so landing ahead of the encoded commands changes nothing."""
        self._queue.write_buffer(buffer, 0, data)
        self._pending_writes += len(data)

    def write_inline(
        self, buffer: wgpu.GPUBuffer, offset: int, data: bytes, *, count: int | None = None
    ) -> None:
        """Write up to 128 host bytes at any byte offset, byte-exact (the patch kernel):
        ``data`` itself, or ``data`` repeated over ``count`` bytes."""
        self._context.patcher.write_inline(self.encoder(), buffer, offset, data, count=count)

    def patch_copy(
        self, dst: wgpu.GPUBuffer, dst_offset: int, src: wgpu.GPUBuffer, src_offset: int, n: int
    ) -> None:
        """Copy ``n`` bytes between two distinct buffers at any byte offsets, byte-exact."""
        self._context.patcher.copy(self.encoder(), dst, dst_offset, src, src_offset, n)

    def patch_repeat(
        self, dst: wgpu.GPUBuffer, offset: int, count: int, src: wgpu.GPUBuffer, period: int
    ) -> None:
        """Repeat ``src``'s first ``period`` bytes over ``count`` bytes at ``offset``."""
        self._context.patcher.repeat(self.encoder(), dst, offset, count, src, period)

    def scratch(self, nbytes: int) -> wgpu.GPUBuffer:
        """A pooled device buffer of at least ``nbytes`` for this batch, given back to
        the pool by :meth:`release_scratch` (queue order keeps later users safe)."""
        buffer = self._context.pool.acquire(nbytes)
        self._scratch.append(buffer)
        return buffer

    def release_scratch(self) -> None:
        """Give the batch's scratch buffers back to the pool."""
        scratch, self._scratch = self._scratch, []
        for buffer in scratch:
            self._context.pool.release(buffer)

    def attach(self, chunk: wgpu.GPUBuffer) -> None:
        """Take a mapped upload staging chunk that encoded copies read from: unmapped
        before the next submit, given back to the upload staging pool after it."""
        self._attached.append(chunk)

    def submit(self) -> None:
        """Submit what is recorded, without waiting for it."""
        context = self._context
        attached, self._attached = self._attached, []
        try:
            for chunk in attached:
                chunk.unmap()  # submitting work on a mapped buffer aborts the process
            context.patcher.flush()
            if self._copies and self._encoder is None:
                # Copies alone (a small download, a batch of uploads): one native submit.
                copies, self._copies = self._copies, []
                submit_copies(self._gpu, self._queue, copies)  # type: ignore[arg-type]
                context.unsubmitted_writes = 0  # a submit carries every staged write
            else:
                if self._copies:
                    self.encoder()
                if self._encoder is not None:
                    encoder, self._encoder = self._encoder, None
                    self._queue.submit([encoder.finish()])
                    context.unsubmitted_writes = 0
                elif self._pending_writes and context.defer_writes(self._pending_writes):
                    self._queue.submit([])
        except BaseException:
            for chunk in attached:
                context.upload_staging.discard(chunk)
            raise
        finally:
            self._pending_writes = 0
            self.epoch += 1
        for chunk in attached:
            context.upload_staging.give_back(chunk)

    def submit_through(self, epoch: int) -> None:
        """Make sure what was recorded during ``epoch`` is submitted."""
        if epoch >= self.epoch:
            self.submit()

    def map(self, buffer: wgpu.GPUBuffer, mode: int, offset: int, size: int) -> None:
        """Submit, then map ``size`` bytes at ``offset`` of ``buffer`` and wait for it
        (polls on this thread, spinning first; the map waits for every submitted command
        that uses the buffer)."""
        self.submit()
        self._context.flush_writes()  # writes that earlier batches left staged
        self.wait(request_map(buffer, mode, offset, size))

    def wait(self, request: MapRequest) -> None:
        """Wait for a map requested earlier."""
        context = self._context
        request.wait(self._gpu, lost_after=context.options.lost_after, spin=context.spin_wait)

    def abandon(self) -> None:
        """Drop what is recorded and not submitted, after an error: attached chunks
        are discarded, since their state is unknown."""
        self._encoder = None
        self._copies = []
        self._pending_writes = 0
        self._context.patcher.discard()
        attached, self._attached = self._attached, []
        for chunk in attached:
            self._context.upload_staging.discard(chunk)
        self.release_scratch()
