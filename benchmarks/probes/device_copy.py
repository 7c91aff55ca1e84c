"""Device-to-device copies, without tensorferry: the copy engine against the copy kernel.

For each size, on the first adapter (or the one whose summary contains argv[1]):
``copy_buffer_to_buffer`` and tensorferry's 16-byte-word copy kernel with several
workgroup caps, one copy per submit and eight copies in one submit, each timed
until a tiny map of the destination returns. Prints one line per measurement in
GB/s. Run: ``python benchmarks/probes/device_copy.py [adapter-substring]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import wgpu
from _median import large_device, median_seconds

from tensorferry_webgpu._copy_kernel import CopyKernel

SIZES = [1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30]
GROUP_CAPS = (1024, 4096, 16384, 65535)
Encode = Callable[[wgpu.GPUCommandEncoder], None]


def main() -> None:
    """Print ``size path GB/s`` lines."""
    token = sys.argv[1] if len(sys.argv) > 1 else ""
    adapter, gpu = large_device(token)
    limits = adapter.limits
    print(f"# {adapter.summary}; binding limit {limits['max-storage-buffer-binding-size']}")
    usage = wgpu.BufferUsage
    flags = usage.STORAGE | usage.COPY_SRC | usage.COPY_DST
    probe = gpu.create_buffer(size=16, usage=usage.MAP_READ | usage.COPY_DST)
    kernels = {cap: CopyKernel(gpu, max_groups=cap) for cap in GROUP_CAPS}
    for size in SIZES:
        src = gpu.create_buffer(size=size, usage=flags)
        dst = gpu.create_buffer(size=size, usage=flags)
        for copies in (1, 8):
            paths: dict[str, Encode] = {
                "copy_buffer_to_buffer": partial(_engine_copy, src, dst, size),
            }
            for cap, kernel in kernels.items():
                paths[f"kernel(groups<={cap})"] = partial(
                    kernel.encode, src=src, src_offset=0, dst=dst, dst_offset=0, nbytes=size
                )
            for name, encode in paths.items():
                rate = copies * size / _seconds(gpu, probe, dst, encode, copies) / 1e9
                print(f"{size >> 20} MiB x{copies} {name} {rate:.1f}")
        src.destroy()
        dst.destroy()


def _engine_copy(
    src: wgpu.GPUBuffer, dst: wgpu.GPUBuffer, size: int, encoder: wgpu.GPUCommandEncoder
) -> None:
    encoder.copy_buffer_to_buffer(src, 0, dst, 0, size)


def _seconds(
    gpu: wgpu.GPUDevice, probe: wgpu.GPUBuffer, dst: wgpu.GPUBuffer, encode: Encode, copies: int
) -> float:
    """Median seconds of ``copies`` encoded copies in one submit, until a tiny map returns."""

    def work() -> None:
        encoder = gpu.create_command_encoder()
        for _ in range(copies):
            encode(encoder)
        encoder.copy_buffer_to_buffer(dst, 0, probe, 0, 16)
        gpu.queue.submit([encoder.finish()])
        probe.map_sync(wgpu.MapMode.READ)
        probe.unmap()

    return median_seconds(work, 5)


if __name__ == "__main__":
    main()
