"""Byte-exact writes to device buffers, for what WebGPU's copy commands cannot do.

``copy_buffer_to_buffer`` and ``clear_buffer`` work on whole 4-byte words, so a
destination view whose offset or size is not a multiple of 4 cannot be written
with them without clobbering its neighbours. A small compute kernel rewrites
the affected words one invocation per word, keeping every byte outside the
view: byte ``r`` of the view (``0 <= r < count``) becomes byte
``src_base + r % period`` of the source binding. A copy uses ``period = count``,
a fill uses the pattern's length.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import wgpu

__all__ = ["MAX_INLINE", "BytePatcher"]

_SHADER = """
@group(0) @binding(0) var<storage, read_write> dst: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

// p: [first word, word count, shift (window start - view start, mod 2^32),
//     view byte count, period, src base]
fn src_byte(pos: u32) -> u32 {
    return (src[pos >> 2u] >> ((pos & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = id.x + id.y * 4194240u;
    if (k >= p[1]) {
        return;
    }
    let word = p[0] + k;
    var value = dst[word];
    for (var b = 0u; b < 4u; b = b + 1u) {
        let r = word * 4u + b + p[2];
        if (r < p[3]) {
            let shift = b * 8u;
            value = (value & ~(0xffu << shift)) | (src_byte(p[5] + r % p[4]) << shift);
        }
    }
    dst[word] = value;
}
"""

_WORKGROUP = 64
_GROUPS_X = 65535
_WORDS_PER_ROW = _WORKGROUP * _GROUPS_X  # 4194240, as in the shader
_SLOT = 256  # bytes per op slot in the parameter buffer
_DATA = 128  # offset of inline source bytes within a slot
MAX_INLINE = _SLOT - _DATA
"""The most host bytes :meth:`BytePatcher.write_inline` carries."""


def _down(value: int, align: int) -> int:
    return value - value % align


class BytePatcher:
    """Encodes byte-exact copies and fills into a command encoder.

    Each op's parameters take a slot of a parameter buffer, written with
    ``queue.write_buffer`` by :meth:`flush`, which must run before the encoder
    is submitted. Not thread-safe: the owning context serialises batches.
    """

    def __init__(self, device: wgpu.GPUDevice) -> None:
        import wgpu

        self._wgpu = wgpu
        self._device = device
        limits = device.limits
        self._align = int(limits["min-storage-buffer-offset-alignment"])
        self._max_binding = _down(int(limits["max-storage-buffer-binding-size"]), 4)
        self._pipeline: wgpu.GPUComputePipeline | None = None
        self._params: wgpu.GPUBuffer | None = None
        self._slots: list[bytes] = []

    @property
    def pending(self) -> bool:
        """True when encoded ops still need :meth:`flush`."""
        return bool(self._slots)

    def _ensure_pipeline(self) -> wgpu.GPUComputePipeline:
        if self._pipeline is None:
            module = self._device.create_shader_module(code=_SHADER)
            self._pipeline = self._device.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main"}
            )
        return self._pipeline

    def _slot(self, params: tuple[int, ...], data: bytes) -> tuple[wgpu.GPUBuffer, int]:
        if self._params is None or (len(self._slots) + 1) * _SLOT > self._params.size:
            # Bind groups already encoded keep the old buffer alive; its pending
            # slots are written before it is replaced.
            self.flush()
            size = max(64 * _SLOT, 2 * (self._params.size if self._params else 0))
            usage = self._wgpu.BufferUsage.STORAGE | self._wgpu.BufferUsage.COPY_DST
            self._params = self._device.create_buffer(size=size, usage=usage)
        blob = struct.pack(f"<{len(params)}I", *(v & 0xFFFFFFFF for v in params))
        self._slots.append(blob.ljust(_DATA, b"\0") + data.ljust(MAX_INLINE, b"\0"))
        return self._params, (len(self._slots) - 1) * _SLOT

    def discard(self) -> None:
        """Forget the ops encoded since the last flush (their encoder was dropped)."""
        self._slots = []

    def flush(self) -> None:
        """Write the parameters of the ops encoded since the last flush."""
        if self._slots and self._params is not None:
            self._device.queue.write_buffer(self._params, 0, b"".join(self._slots))
        self._slots = []

    def copy(
        self,
        encoder: wgpu.GPUCommandEncoder,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        src: wgpu.GPUBuffer,
        src_offset: int,
        count: int,
    ) -> None:
        """Copy ``count`` bytes ``src[src_offset:] -> dst[dst_offset:]``, byte-exact.

        ``src`` must not be ``dst`` (WebGPU forbids binding one buffer both ways).
        """
        self._encode(encoder, dst, dst_offset, count, src, src_offset, count, b"")

    def write_inline(
        self,
        encoder: wgpu.GPUCommandEncoder,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        data: bytes,
        *,
        count: int | None = None,
    ) -> None:
        """Write host bytes (at most 128) byte-exact at ``dst_offset``: ``data``
        itself, or ``data`` repeated over ``count`` bytes (a fill)."""
        if not 0 < len(data) <= MAX_INLINE:
            raise ValueError(f"inline data holds 1 to {MAX_INLINE} bytes, got {len(data)}")
        total = len(data) if count is None else count
        self._encode(encoder, dst, dst_offset, total, None, 0, len(data), data)

    def repeat(
        self,
        encoder: wgpu.GPUCommandEncoder,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        count: int,
        src: wgpu.GPUBuffer,
        period: int,
    ) -> None:
        """Write ``src``'s first ``period`` bytes repeated over ``count`` bytes at
        ``dst_offset``, byte-exact (a fill whose pattern is too long to go inline)."""
        self._encode(encoder, dst, dst_offset, count, src, 0, period, b"")

    def _encode(
        self,
        encoder: wgpu.GPUCommandEncoder,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        count: int,
        src: wgpu.GPUBuffer | None,
        src_offset: int,
        period: int,
        inline: bytes,
    ) -> None:
        if count <= 0:
            return
        pipeline = self._ensure_pipeline()
        layout = pipeline.get_bind_group_layout(0)
        first, end = dst_offset // 4, (dst_offset + count + 3) // 4
        # Windows keep each binding under the device's binding-size limit.
        span = max(1, min(_WORDS_PER_ROW * 16, (self._max_binding - 2 * self._align) // 8))
        while first < end:
            last = min(end, first + span)
            win_start = _down(first * 4, self._align)
            if src is None:
                src_base = _DATA
                src_window: tuple[int, int] | None = None
            else:
                if period == count:  # a copy: bind the part of the source this window reads
                    lo = max(src_offset, src_offset + first * 4 - dst_offset)
                    hi = min(src_offset + count, src_offset + last * 4 - dst_offset)
                else:  # a repeated pattern: every window reads all of it
                    lo, hi = src_offset, src_offset + period
                s_start = _down(lo, self._align)
                s_end = min(src.size, (hi + 3) & ~3)
                src_window = (s_start, max(4, s_end - s_start))
                src_base = src_offset - s_start
            params = (
                first - win_start // 4,
                last - first,
                win_start - dst_offset,
                count,
                period,
                src_base,
            )
            params_buffer, slot = self._slot(params, inline)
            slot_entry = {"buffer": params_buffer, "offset": slot, "size": _SLOT}
            src_entry = (
                slot_entry
                if src is None or src_window is None
                else {"buffer": src, "offset": src_window[0], "size": src_window[1]}
            )
            dst_entry = {"buffer": dst, "offset": win_start, "size": last * 4 - win_start}
            bind_group = self._device.create_bind_group(
                layout=layout,
                entries=[
                    {"binding": 0, "resource": dst_entry},
                    {"binding": 1, "resource": src_entry},
                    {"binding": 2, "resource": slot_entry},
                ],
            )
            nwords = last - first
            rows = -(-nwords // _WORDS_PER_ROW)
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, bind_group)
            compute.dispatch_workgroups(
                _GROUPS_X if rows > 1 else -(-nwords // _WORKGROUP), rows, 1
            )
            compute.end()
            first = last
