"""ContextOptions: every tuning knob of a WebGPU context, validated in one place."""

from __future__ import annotations

import os
from typing import Any

import attrs

from tensorferry_webgpu._buffers import CacheMode
from tensorferry_webgpu._slabs import SLAB_BYTES

__all__ = ["ContextOptions"]


def _at_least(minimum: float) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, got {value}")

    return check


def _multiple_of_4096(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 4096 or value % 4096:
        raise ValueError(f"{attribute.name} must be a positive multiple of 4096, got {value}")


def _power_of_two_from_8(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 8 or value & (value - 1):
        raise ValueError(f"{attribute.name} must be a power of two of at least 8, got {value}")


def _slab_max(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= SLAB_BYTES // 4:
        raise ValueError(
            f"{attribute.name} must be 0 (no slabs) to {SLAB_BYTES // 4} (a quarter slab), "
            f"got {value}"
        )


def _default_threads() -> int:
    cores = os.cpu_count() or 1
    return max(2, cores if cores <= 8 else min(14, cores - 2))


def _default_chunks(options: ContextOptions) -> int:
    return max(4, options.copy_threads + 2)


@attrs.frozen
class ContextOptions:
    """Tuning of a WebGPU context: its memory, its staging and its host-copy threads.

    Memory: ``cache_mode`` of the device buffer pool, which keeps at most
    ``max_cached_bytes`` and ``max_cached_buffers`` idle buffers (the count
    bounds the host memory that many tiny idle buffers cost). ``None`` (the
    default) bounds the bytes by adapter: no bound on a discrete GPU, whose
    pool destroys its idle buffers when it cannot make a new one, 256 MiB on
    other adapters, whose device memory is the host's
    (:func:`~tensorferry_webgpu._buffers.default_cached_bytes`).

    Slabs: device tensors of up to ``slab_max`` bytes (64 KiB by default; at
    most 1 MiB, a quarter of a 4 MiB slab) share slab buffers, back to back, so
    that copies of neighbours merge into one command (:mod:`._slabs`); ``0``
    gives every tensor a buffer of its own. Host-accessible and wrapped memory
    never goes into slabs.

    Staging: ``staging_chunk`` bytes per staging buffer and at most
    ``staging_chunks`` per direction; pieces packed into a chunk start at
    multiples of ``pack_alignment``; a lone upload of up to ``small_upload``
    bytes (4 MiB) goes through ``queue.write_buffer``, which copies it on the
    calling thread; a larger one is copied into a staging chunk by the copy
    threads (on the H200 a lone 16 MiB upload until landed took 1.06-1.24 ms by
    ``write_buffer`` and 0.80-0.92 ms staged, 4 MiB was level:
    ``benchmarks/probes/mid_sizes.py``); large downloads keep ``downloads_ahead``
    chunk copies in flight beyond those being drained (wgpu-native's blocking poll
    waits for the whole queue, so a short queue lets chunk k map while k+1 copies).

    Host-accessible memory: ``host_accessible=None`` (the default) offers a
    ``webgpu:i:host`` device on every Vulkan adapter with wgpu's
    ``mappable-primary-buffers`` feature, and on other unified-memory adapters
    (CPU adapters, integrated GPUs) with it; ``True`` offers it on every adapter
    with the feature, ``False`` on none. On Vulkan its buffers have ``MAP_READ``
    usage and no ``MAP_WRITE``, so wgpu places them in cached host memory, and
    the host writes them through read maps (mapped memory there is
    host-coherent): on the H200 the device copied into and out of such buffers
    at 42-46 GB/s and the host read them at memory speed, where buffers with
    ``MAP_WRITE`` usage sit in the GPU's BAR, which the host read at 0.03 GB/s
    (``benchmarks/probes/placement.py``).

    Direct mapping: ``map_storage=None`` (the default) makes tensor buffers
    host-mappable on unified-memory adapters (CPU adapters such as lavapipe,
    integrated GPUs) that offer wgpu's ``mappable-primary-buffers`` feature;
    copies of at least ``direct_min`` bytes then map the tensor's own buffer:
    one host copy instead of two. Discrete GPUs keep staging.

    Host copies: ``copy_threads`` threads copy into and out of mapped memory
    (numpy releases the GIL); copies below ``parallel_min`` bytes stay on the
    calling thread, larger ones are split into parts of at least 2 MiB
    (``_threads.PART_MIN``: waking a thread costs about what it copies in 1-2
    MiB); streams hand the threads parts of ``copy_part`` bytes. The
    default is one thread per core up to 8 cores, then all cores but two (the
    calling thread, which helps with every job, and the driver's), at most 14.
    On the 16-core H200 host, in one process with the counts taking turns
    (``benchmarks/probes/copy_threads.py``), 14 threads took a ``Tensor.numpy()``
    into a new array (page faults included) from 23.5 to 26.1 GB/s at 1 GiB and
    from 24.4 to 27.2 at 4000 MiB against 12, and left uploads (32.5 / 32.6),
    model loads (30.0 / 30.3) and downloads into touched arrays level; 16
    threads lost 1.2-2.0 GB/s on uploads and model loads. (12 was the default
    before arrays of at least 4 MiB started on a 2 MiB boundary.)

    Device copies: with ``kernel_copies`` set (``None``, the default, sets it
    for discrete and integrated GPUs and leaves it off on CPU adapters, where
    shaders run on the CPU) copies of at least ``kernel_copy_min`` bytes between
    two buffers run as a compute kernel instead of ``copy_buffer_to_buffer``
    (H200: 640-710 vs 325 GB/s at 256 MiB, 950-990 vs 381 at 1 GiB; the copy
    command wins below 64 MiB).

    Waiting: a wait polls the device without blocking for up to ``spin_wait``
    seconds (200 us by default; 0 blocks at once) before it blocks: a short wait
    then ends when the device does, not when the woken thread runs again (4 KiB
    download on the H200 85-101 -> 54-82 us, on lavapipe 82 -> 53 us). A map still
    unresolved ``lost_after`` seconds after the device's queue went idle means
    the device is lost.

    Raises ``ValueError`` for a value out of range (the message names the field).
    """

    cache_mode: CacheMode = CacheMode.BUCKET
    max_cached_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(0))
    )
    max_cached_buffers: int = attrs.field(default=4096, validator=_at_least(0))
    copy_threads: int = attrs.field(factory=_default_threads, validator=_at_least(1))
    staging_chunk: int = attrs.field(default=16 << 20, validator=_multiple_of_4096)
    staging_chunks: int = attrs.field(
        default=attrs.Factory(_default_chunks, takes_self=True), validator=_at_least(2)
    )
    pack_alignment: int = attrs.field(default=16, validator=_power_of_two_from_8)
    small_upload: int = attrs.field(default=4 << 20, validator=_at_least(0))
    downloads_ahead: int = attrs.field(default=2, validator=_at_least(1))
    map_storage: bool | None = None
    host_accessible: bool | None = None
    direct_min: int = attrs.field(default=1 << 20, validator=_at_least(1))
    parallel_min: int = attrs.field(default=2 << 20, validator=_at_least(0))
    copy_part: int = attrs.field(default=4 << 20, validator=_multiple_of_4096)
    lost_after: float = attrs.field(default=10.0, validator=_at_least(0.001))
    spin_wait: float = attrs.field(default=200e-6, validator=_at_least(0.0))
    kernel_copies: bool | None = None
    kernel_copy_min: int = attrs.field(default=64 << 20, validator=_at_least(16))
    slab_max: int = attrs.field(default=64 << 10, validator=_slab_max)
