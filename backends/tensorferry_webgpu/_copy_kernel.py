"""Device-to-device copies by a compute kernel, for adapters where that beats the copy engine.

``copy_buffer_to_buffer`` runs on a GPU's copy engine, which on the H200 moves
311 GB/s at 256 MiB; a kernel that loads and stores 16-byte words on the
shader cores moves 803 GB/s there (1279 at 1 GiB). On a CPU adapter such as
lavapipe the kernel is about five times *slower*, so the caller decides per
adapter (:func:`kernel_copies_pay`).

The kernel copies whole 16-byte words: the caller hands it ranges whose
offsets and size are multiples of 16 and copies any ragged edges itself.
Ranges larger than the adapter's storage-binding limit are split into windows,
one dispatch each, all encoded in one compute pass.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import TYPE_CHECKING

from tensorferry_webgpu._guards import is_live_and_guarded

if TYPE_CHECKING:
    import wgpu

__all__ = ["WORD", "CopyKernel", "kernel_copies_pay"]

WORD = 16
"""Bytes each invocation moves per step: offsets and sizes given to the kernel are multiples."""

_WORKGROUP = 256
_SHADER = f"""
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> p: vec4<u32>;  // words, src first word, dst first word

@compute @workgroup_size({_WORKGROUP})
fn main(@builtin(global_invocation_id) id: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {{
    let stride = groups.x * {_WORKGROUP}u;
    for (var i = id.x; i < p.x; i = i + stride) {{
        dst[p.z + i] = src[p.y + i];
    }}
}}
"""
_PARAMS = 256  # bytes between two dispatches' parameters (the uniform offset alignment)
_CACHED = 8
"""Copies whose bind groups a kernel keeps: on the H200 a new uniform buffer and
bind group cost ~50 us of a 256 MiB copy's ~400, and repeated copies between the
same buffers (double buffers, caches) find theirs here."""


def kernel_copies_pay(adapter_type: str) -> bool:
    """Whether device copies should use the kernel on an adapter of this type.

    Measured: discrete GPUs (H100, H200) copy 2.5-4x faster with the kernel; a
    CPU adapter (lavapipe, llvmpipe) runs shaders on the CPU, about 5x slower.
    """
    return adapter_type in {"DiscreteGPU", "IntegratedGPU"}


class CopyKernel:
    """Encodes 16-byte-word copies between two distinct storage buffers of one device.

    ``max_groups`` bounds the workgroups of one dispatch (each invocation then
    loops over the range; on the H200 65535, one word per invocation up to
    256 MiB, moved 1084 GB/s at 256 MiB where 4096 moved 947); ``window`` is
    the most bytes bound per dispatch, at most the device's
    ``max-storage-buffer-binding-size``.
    """

    def __init__(self, gpu: wgpu.GPUDevice, *, max_groups: int = 65535) -> None:
        import wgpu

        self._wgpu = wgpu
        self._gpu = gpu
        limits = gpu.limits
        align = int(limits["min-storage-buffer-offset-alignment"])
        self._align = max(align, WORD)
        binding = int(limits["max-storage-buffer-binding-size"])
        # Leave room for the alignment slack in front of a window's first word.
        self.window = max(WORD, (min(binding, 1 << 30) - self._align) // WORD * WORD)
        self._max_groups = max(
            1, min(max_groups, int(limits["max-compute-workgroups-per-dimension"]))
        )
        module = gpu.create_shader_module(code=_SHADER)
        self._pipeline = gpu.create_compute_pipeline(
            layout="auto", compute={"module": module, "entry_point": "main"}
        )
        self._layout = self._pipeline.get_bind_group_layout(0)
        # Bind groups of recent copies between tensorferry's own (guarded) buffers,
        # by (source, offset, destination, offset, size); checked live at each use.
        self._cache: OrderedDict[
            tuple[int, int, int, int, int],
            tuple[wgpu.GPUBuffer, wgpu.GPUBuffer, list[tuple[object, int]]],
        ] = OrderedDict()

    def encode(
        self,
        encoder: wgpu.GPUCommandEncoder,
        src: wgpu.GPUBuffer,
        src_offset: int,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        nbytes: int,
    ) -> None:
        """Encode a copy of ``nbytes`` from ``src`` at ``src_offset`` to ``dst`` at ``dst_offset``.

        Raises ``ValueError`` when an offset or the size is not a multiple of
        :data:`WORD`, or when ``src`` is ``dst`` (WebGPU forbids binding one
        buffer for reading and writing in one dispatch).
        """
        if (src_offset | dst_offset | nbytes) % WORD:
            raise ValueError(
                f"kernel copies move {WORD}-byte words; got offsets {src_offset}, {dst_offset} "
                f"and size {nbytes}, expected multiples of {WORD}"
            )
        if src is dst:
            raise ValueError("a kernel copy needs two distinct buffers")
        if nbytes == 0:
            return
        key = (id(src), src_offset, id(dst), dst_offset, nbytes)
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached[0] is src
            and cached[1] is dst
            and is_live_and_guarded(src)
            and is_live_and_guarded(dst)
        ):
            self._cache.move_to_end(key)
            groups_of = cached[2]
        else:
            groups_of = self._bind(src, src_offset, dst, dst_offset, nbytes)
            if is_live_and_guarded(src) and is_live_and_guarded(dst):
                self._cache[key] = (src, dst, groups_of)
                if len(self._cache) > _CACHED:
                    self._cache.popitem(last=False)
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(self._pipeline)
        for group, count in groups_of:
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(count)
        compute.end()

    def _bind(
        self,
        src: wgpu.GPUBuffer,
        src_offset: int,
        dst: wgpu.GPUBuffer,
        dst_offset: int,
        nbytes: int,
    ) -> list[tuple[object, int]]:
        """The bind groups (with their workgroup counts) of one copy, a window each."""
        windows = [
            (src_offset + pos, dst_offset + pos, min(self.window, nbytes - pos))
            for pos in range(0, nbytes, self.window)
        ]
        params = bytearray(_PARAMS * len(windows))
        groups_of: list[tuple[object, int]] = []
        bindings: list[tuple[int, int, int, int, int]] = []
        for k, (at_src, at_dst, size) in enumerate(windows):
            src_bind, dst_bind = (
                at_src // self._align * self._align,
                at_dst // self._align * self._align,
            )
            words = size // WORD
            struct.pack_into(
                "<4I",
                params,
                k * _PARAMS,
                words,
                (at_src - src_bind) // WORD,
                (at_dst - dst_bind) // WORD,
                0,
            )
            bindings.append(
                (src_bind, at_src + size - src_bind, dst_bind, at_dst + size - dst_bind, words)
            )
        usage = self._wgpu.BufferUsage.UNIFORM
        uniform = self._gpu.create_buffer_with_data(data=bytes(params), usage=usage)
        for k, (src_bind, src_size, dst_bind, dst_size, words) in enumerate(bindings):
            group = self._gpu.create_bind_group(
                layout=self._layout,
                entries=[
                    {
                        "binding": 0,
                        "resource": {"buffer": src, "offset": src_bind, "size": src_size},
                    },
                    {
                        "binding": 1,
                        "resource": {"buffer": dst, "offset": dst_bind, "size": dst_size},
                    },
                    {
                        "binding": 2,
                        "resource": {"buffer": uniform, "offset": k * _PARAMS, "size": 16},
                    },
                ],
            )
            groups_of.append((group, min(self._max_groups, -(-words // _WORKGROUP))))
        return groups_of
