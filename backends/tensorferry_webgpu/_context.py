"""Contexts: one wgpu device with its queue, buffer pools and staging, reference-counted."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import attrs

from tensorferry import ClosedError, Device, DeviceLostError, OutOfDeviceMemoryError
from tensorferry_webgpu._buffers import BufferPool, CacheMode, PoolStats, StagingPool
from tensorferry_webgpu._engine import WORKERS
from tensorferry_webgpu._patch import BytePatcher

if TYPE_CHECKING:
    import wgpu

__all__ = ["MAPPABLE", "Context", "ContextOptions", "wants_mapped_storage"]

MAPPABLE = "mappable-primary-buffers"
"""wgpu's native feature that lets buffers combine MAP_READ/MAP_WRITE with any usage."""


def wants_mapped_storage(options: ContextOptions, adapter: wgpu.GPUAdapter) -> bool:
    """Whether a context on ``adapter`` should request :data:`MAPPABLE`."""
    if MAPPABLE not in adapter.features:
        return False
    if options.map_storage is not None:
        return options.map_storage
    return str(adapter.info["adapter_type"]) in {"CPU", "IntegratedGPU"}


@attrs.frozen
class ContextOptions:
    """Tuning of a context's memory: cache mode and cap of the device buffer pool,
    size and count of staging chunks per direction, the largest lone upload
    sent through ``queue.write_buffer`` instead of pooled staging (measured as
    fast or faster up to 16 MiB on lavapipe and the H100), and whether tensor
    buffers are host-mappable (``map_storage``).

    ``map_storage=None`` (the default) maps tensor buffers directly on
    unified-memory adapters (CPU adapters such as lavapipe, integrated GPUs)
    that offer wgpu's ``mappable-primary-buffers`` feature: a large upload or
    download there is one host copy instead of two. Discrete GPUs keep staging,
    since mappable buffers would live in slower host-visible memory.
    """

    cache_mode: CacheMode = CacheMode.BUCKET
    max_cached_bytes: int = 256 << 20
    staging_chunk: int = attrs.field(default=16 << 20)
    staging_chunks: int = attrs.field(default=max(4, WORKERS + 2))
    small_upload: int = 16 << 20
    map_storage: bool | None = None
    direct_min: int = 1 << 20

    @staging_chunk.validator
    def _check_chunk(self, _attribute: object, value: int) -> None:
        if value < 4096 or value % 4096:
            raise ValueError(f"staging_chunk must be a positive multiple of 4096, got {value}")

    @staging_chunks.validator
    def _check_chunks(self, _attribute: object, value: int) -> None:
        if value < 2:
            raise ValueError(f"staging_chunks must be at least 2, got {value}")


class Context:
    """One wgpu device (created for an adapter, or adopted from the caller) and
    everything tensorferry keeps for it.

    Reference-counted: :meth:`acquire` and :meth:`release` pair up, and the
    context closes when the count drops to zero (or when its backend closes).
    ``lock`` serialises the batches submitted through it.
    """

    def __init__(
        self,
        device: Device,
        gpu: wgpu.GPUDevice,
        options: ContextOptions,
        *,
        backend: object,
        adopted: bool = False,
    ) -> None:
        import wgpu

        self.backend = backend
        self.device = device
        self.gpu = gpu
        self.queue = gpu.queue
        self.adopted = adopted
        self.options = options
        self.max_buffer_size = int(gpu.limits["max-buffer-size"])
        self.lock = threading.RLock()
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        self.mapped_storage = MAPPABLE in gpu.features
        if self.mapped_storage:
            usage |= wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.MAP_WRITE
        self.pool = BufferPool(
            gpu,
            usage,
            mode=options.cache_mode,
            max_cached_bytes=options.max_cached_bytes,
            max_buffer_size=self.max_buffer_size,
        )
        self.upload_staging = StagingPool(
            gpu, write=True, chunk=options.staging_chunk, limit=options.staging_chunks
        )
        self.download_staging = StagingPool(
            gpu, write=False, chunk=options.staging_chunk, limit=options.staging_chunks
        )
        self.patcher = BytePatcher(gpu)
        self._refs = 0
        self._state_lock = threading.Lock()
        self.closed = False
        self.lost = False

    # lifetime ---------------------------------------------------------------

    def acquire(self) -> Context:
        """Add a reference; raises :class:`ClosedError` on a closed context."""
        with self._state_lock:
            if self.closed:
                raise ClosedError(f"the WebGPU context of {self.device} is closed")
            self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the last one closes the context."""
        with self._state_lock:
            if self.closed:
                return
            self._refs -= 1
            last = self._refs <= 0
        if last:
            self.close()

    @property
    def references(self) -> int:
        """How many holders keep the context open."""
        return self._refs

    def close(self) -> None:
        """Release pools and staging; destroy tensorferry's own buffers. The wgpu
        device itself is left to the garbage collector (destroying it logs a
        device-lost message), and an adopted device stays the caller's."""
        with self._state_lock:
            if self.closed:
                return
            self.closed = True
            self._refs = 0
        with self.lock:
            self.upload_staging.close()
            self.download_staging.close()
            self.pool.close()

    def check_usable(self) -> None:
        """Raise :class:`ClosedError` or :class:`DeviceLostError` unless usable."""
        if self.lost:
            raise DeviceLostError(
                f"the WebGPU device behind {self.device} was lost; its tensors are gone "
                "(new tensors get a fresh context)"
            )
        if self.closed:
            raise ClosedError(f"the WebGPU context of {self.device} is closed")

    def translate(self, exc: Exception) -> Exception:
        """Map a wgpu error to tensorferry's: a lost device marks the context lost."""
        text = str(exc).lower()
        if "lost" in text or ("destroyed" in text and "device" in text):
            self.lost = True
            return DeviceLostError(f"the WebGPU device behind {self.device} was lost: {exc}")
        if "memory" in text:
            return OutOfDeviceMemoryError(f"{self.device} is out of memory: {exc}")
        return exc

    # memory -----------------------------------------------------------------

    def allocate(self, nbytes: int) -> wgpu.GPUBuffer:
        """A pooled storage buffer of at least ``nbytes`` bytes.

        Raises :class:`OutOfDeviceMemoryError` when ``nbytes`` exceeds the
        device's maximum buffer size or the device runs out of memory, and
        :class:`DeviceLostError` for a lost device.
        """
        self.check_usable()
        size = self.pool.capacity_for(nbytes)
        if size > self.max_buffer_size:
            raise OutOfDeviceMemoryError(
                f"cannot allocate {nbytes} bytes on {self.device}: its largest buffer is "
                f"{self.max_buffer_size} bytes"
            )
        try:
            return self.pool.acquire(nbytes)
        except Exception as exc:
            raise self.translate(exc) from exc

    def pool_stats(self) -> PoolStats:
        """Counters of the device buffer pool."""
        return self.pool.stats()
