"""Raw access to WebGPU storage for the conformance suite: bytes read and written
with plain queue calls, bypassing the transfer and its engine entirely.

Slow on purpose (a staging buffer per call, whole-word read-modify-write): it
exists so that a bug shared by the engine's uploads and downloads cannot hide
behind a round trip. Reads copy into a fresh ``MAP_READ`` buffer and map it
with :func:`~tensorferry_webgpu._waits.request_map`, not ``queue.read_buffer``:
that hands the wait to wgpu-py's poll thread, and a device finalized on its own
poll thread fails in wgpu-py's ``__del__``.
"""

from __future__ import annotations

from tensorferry import ClosedError
from tensorferry_webgpu._align import down4, up4
from tensorferry_webgpu._native import MAP_READ, mapped_array
from tensorferry_webgpu._storage import WebGPUStorage
from tensorferry_webgpu._waits import request_map

__all__ = ["read_raw", "write_raw"]


def _check(storage: object, offset: int, nbytes: int) -> WebGPUStorage:
    if not isinstance(storage, WebGPUStorage):
        raise TypeError(f"expected WebGPU storage, got {type(storage).__name__}")
    if offset < 0 or nbytes < 0 or offset + nbytes > storage.nbytes:
        raise ValueError(
            f"{nbytes} bytes at offset {offset} do not fit storage of {storage.nbytes} bytes"
        )
    if storage.closed:
        raise ClosedError(f"the storage on {storage.device} is released")
    storage.settle()  # a buffer a mapped() scope keeps mapped must not be copied
    return storage


def read_raw(storage: object, offset: int, nbytes: int) -> bytes:
    """The ``nbytes`` bytes at ``offset`` in ``storage``, through ``queue.read_buffer``.

    Raises ``TypeError`` for storage of another backend, ``ValueError`` for a
    range outside it, :class:`ClosedError` for released storage,
    :class:`~tensorferry.MappedError` for storage a ``mapped()`` scope keeps mapped.
    """
    checked = _check(storage, offset, nbytes)
    if nbytes == 0 or checked.buffer is None:
        return b""
    start = checked.base + offset
    lo, hi = down4(start), up4(start + nbytes)
    with checked.context.lock:
        words = _read_words(checked, lo, hi - lo)
    return words[start - lo : start - lo + nbytes]


def _read_words(storage: WebGPUStorage, offset: int, size: int) -> bytes:
    """``size`` bytes (whole words) at byte ``offset`` of the storage's buffer."""
    import wgpu

    context, source = storage.context, storage.buffer
    assert source is not None
    usage = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
    readback = context.gpu.create_buffer(size=size, usage=usage)
    try:
        encoder = context.gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(source, offset, readback, 0, size)
        context.queue.submit([encoder.finish()])
        request_map(readback, MAP_READ, 0, size).wait(
            context.gpu, lost_after=context.options.lost_after
        )
        words = bytes(mapped_array(readback, 0, size))
        readback.unmap()
    finally:
        readback.destroy()
    return words


def write_raw(storage: object, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` in ``storage`` through ``queue.write_buffer``,
    keeping every other byte (the ragged words are read, patched and written back).

    Raises as :func:`read_raw`.
    """
    checked = _check(storage, offset, len(data))
    if not data or checked.buffer is None:
        return
    start = checked.base + offset
    lo, hi = down4(start), up4(start + len(data))
    context = checked.context
    with context.lock:
        words = bytearray(_read_words(checked, lo, hi - lo))
        words[start - lo : start - lo + len(data)] = data
        context.queue.write_buffer(checked.buffer, lo, bytes(words))
        context.queue.submit([])
