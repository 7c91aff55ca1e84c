"""Which WGSL copy kernel moves device memory fastest: shapes of one 16-byte-word copy.

On the first adapter whose summary contains ``argv[1]`` (default: the first),
for 64 MiB, 256 MiB and 1 GiB, median GB/s of one copy per submit, timed until a
blocking poll says the queue is idle (tensorferry's ``synchronize``):

* ``copy_buffer_to_buffer`` (the copy engine);
* ``loop(groups<=N)``: tensorferry's kernel, N workgroups looping over the range;
* ``flat``: one word per invocation, a 2-D grid of workgroups, no loop;
* ``unrollK``: K words per invocation, 256 words apart (coalesced), 2-D grid.

Run: ``python benchmarks/probes/copy_kernels.py [adapter-substring]``.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import wgpu
from _median import large_device

from tensorferry_webgpu import _waits

SIZES = (64 << 20, 256 << 20, 1 << 30)
_HEAD = """
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> p: vec4<u32>;
"""
_LOOP = (
    _HEAD
    + """
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) g: vec3<u32>) {
    let stride = g.x * 256u;
    for (var i = id.x; i < p.x; i = i + stride) { dst[i] = src[i]; }
}
"""
)
_GRID = (
    _HEAD
    + """
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) l: u32,
        @builtin(num_workgroups) g: vec3<u32>) {{
    let base = (w.x + w.y * g.x) * {span}u + l;
    for (var k = 0u; k < {unroll}u; k = k + 1u) {{
        let i = base + k * 256u;
        if (i < p.x) {{ dst[i] = src[i]; }}
    }}
}}
"""
)


def main() -> None:
    """Print ``size kernel GB/s`` lines."""
    token = sys.argv[1] if len(sys.argv) > 1 else ""
    adapter, gpu = large_device(token)
    print(f"# {adapter.summary}")
    usage = wgpu.BufferUsage
    flags = usage.STORAGE | usage.COPY_SRC | usage.COPY_DST
    params = gpu.create_buffer(size=16, usage=usage.UNIFORM | usage.COPY_DST)
    kernels: dict[str, tuple[wgpu.GPUComputePipeline, int, int]] = {}
    for cap in (4096, 16384, 65535):
        kernels[f"loop(groups<={cap})"] = (_pipeline(gpu, _LOOP), 0, cap)
    for unroll in (1, 2, 4, 8):
        name = "flat" if unroll == 1 else f"unroll{unroll}"
        code = _GRID.format(span=256 * unroll, unroll=unroll)
        kernels[name] = (_pipeline(gpu, code), unroll, 0)
    for size in SIZES:
        src = gpu.create_buffer(size=size, usage=flags)
        dst = gpu.create_buffer(size=size, usage=flags)
        words = size // 16
        gpu.queue.write_buffer(params, 0, struct.pack("<4I", words, 0, 0, 0))

        runs: dict[str, Callable[[wgpu.GPUCommandEncoder], None]] = {
            "copy_buffer_to_buffer": partial(_engine, src, dst, size)
        }
        for name, (pipeline, unroll, cap) in kernels.items():
            group = gpu.create_bind_group(
                layout=pipeline.get_bind_group_layout(0),
                entries=[
                    {"binding": 0, "resource": {"buffer": src, "offset": 0, "size": size}},
                    {"binding": 1, "resource": {"buffer": dst, "offset": 0, "size": size}},
                    {"binding": 2, "resource": {"buffer": params, "offset": 0, "size": 16}},
                ],
            )
            if unroll:
                groups = -(-words // (256 * unroll))
                grid = (min(groups, 65535), -(-groups // 65535))
            else:
                grid = (min(cap, -(-words // 256)), 1)
            runs[name] = _dispatch(pipeline, group, grid)
        for name, encode in runs.items():
            seconds = _median(gpu, encode)
            print(f"{size >> 20} MiB {name} {size / seconds / 1e9:.1f}")
        src.destroy()
        dst.destroy()


def _engine(
    src: wgpu.GPUBuffer, dst: wgpu.GPUBuffer, size: int, encoder: wgpu.GPUCommandEncoder
) -> None:
    encoder.copy_buffer_to_buffer(src, 0, dst, 0, size)


def _pipeline(gpu: wgpu.GPUDevice, code: str) -> wgpu.GPUComputePipeline:
    module = gpu.create_shader_module(code=code)
    return gpu.create_compute_pipeline(
        layout="auto", compute={"module": module, "entry_point": "main"}
    )


def _dispatch(
    pipeline: wgpu.GPUComputePipeline, group: wgpu.GPUBindGroup, grid: tuple[int, int]
) -> Callable[[wgpu.GPUCommandEncoder], None]:
    def encode(encoder: wgpu.GPUCommandEncoder) -> None:
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(pipeline)
        compute.set_bind_group(0, group)
        compute.dispatch_workgroups(grid[0], grid[1], 1)
        compute.end()

    return encode


def _median(gpu: wgpu.GPUDevice, encode: Callable[[wgpu.GPUCommandEncoder], None]) -> float:
    times = []
    for run in range(9):
        start = time.perf_counter()
        encoder = gpu.create_command_encoder()
        encode(encoder)
        gpu.queue.submit([encoder.finish()])
        _waits.wait_idle(gpu)
        if run >= 2:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()
