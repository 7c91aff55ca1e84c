"""Contexts: one wgpu device with its queue, buffer pools, staging and copy threads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from tensorferry import ClosedError, Device, DeviceLostError, OutOfDeviceMemoryError
from tensorferry_webgpu._buffers import (
    UNIFIED_CACHED_BYTES,
    BufferPool,
    PoolStats,
    StagingPool,
    default_cached_bytes,
)
from tensorferry_webgpu._copy_kernel import CopyKernel, kernel_copies_pay
from tensorferry_webgpu._errors import translate
from tensorferry_webgpu._guards import guard_device, mark_host_accessible
from tensorferry_webgpu._native import MAP_READ, MAP_USAGE
from tensorferry_webgpu._options import ContextOptions
from tensorferry_webgpu._patch import BytePatcher
from tensorferry_webgpu._slabs import Slab, SlabAllocator
from tensorferry_webgpu._threads import CopyThreads
from tensorferry_webgpu._waits import wait_for_queue

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "DEFERRED_WRITES",
    "MAPPABLE",
    "Context",
    "host_reads_map_writes",
    "offers_host_accessible",
    "wants_mapped_storage",
]

DEFERRED_WRITES = 4 << 20
"""Bytes of ``write_buffer`` data batches may leave staged before one must submit."""

MAPPABLE = "mappable-primary-buffers"
"""wgpu's native feature that lets buffers combine MAP_READ/MAP_WRITE with any usage."""


def wants_mapped_storage(options: ContextOptions, adapter: wgpu.GPUAdapter) -> bool:
    """Whether a context on ``adapter`` makes its device memory mappable
    (``ContextOptions.map_storage``)."""
    return _mappable_where(options.map_storage, adapter)


def offers_host_accessible(options: ContextOptions, adapter: wgpu.GPUAdapter) -> bool:
    """Whether ``adapter`` gets a host-accessible device (``ContextOptions.host_accessible``):
    by default where host-accessible buffers sit in host memory (:func:`host_reads_map_writes`)
    or all memory is the host's."""
    if options.host_accessible is None and host_reads_map_writes(adapter):
        return MAPPABLE in adapter.features
    return _mappable_where(options.host_accessible, adapter)


def host_reads_map_writes(adapter: wgpu.GPUAdapter) -> bool:
    """Whether host-accessible buffers on ``adapter`` get ``MAP_READ`` usage only, and
    the host's writes go through read maps.

    With ``MAP_WRITE`` usage wgpu places a buffer in device memory the host can
    see (on a discrete GPU its BAR: the H200's host read such memory at 0.03
    GB/s), with ``MAP_READ`` alone in cached host memory (host reads at memory
    speed, the device's copies at the link's), ``benchmarks/probes/placement.py``.
    Writing through a read map is sound where mapped memory is host-coherent,
    so that unmapping (which flushes only write maps) has nothing to flush:
    wgpu-native's Vulkan backend allocates every mappable buffer so. Other
    backends keep both map usages.
    """
    return str(adapter.info["backend_type"]) == "Vulkan"


def _mappable_where(choice: bool | None, adapter: wgpu.GPUAdapter) -> bool:
    """``choice`` where the adapter offers :data:`MAPPABLE`; by default (``None``)
    only on unified memory (CPU adapters, integrated GPUs)."""
    if MAPPABLE not in adapter.features:
        return False
    if choice is not None:
        return choice
    return str(adapter.info["adapter_type"]) in {"CPU", "IntegratedGPU"}


class Context:
    """One wgpu device (created for an adapter, or adopted from the caller) and
    everything tensorferry keeps for it.

    Reference-counted: :meth:`acquire` and :meth:`release` pair up, and the
    context closes when the count drops to zero (or when its backend closes).
    ``lock`` serialises the batches submitted through it; no wait under it can
    last forever (a lost device ends every wait with :class:`DeviceLostError`).
    """

    def __init__(
        self,
        device: Device,
        gpu: wgpu.GPUDevice,
        options: ContextOptions,
        *,
        backend: object,
        adopted: bool = False,
        map_storage: bool | None = None,
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
        adapter_type = str(device.property("adapter_type"))
        cached, host_cached = options.max_cached_bytes, options.max_cached_bytes
        if cached is None:  # by adapter; host-accessible memory is the host's everywhere
            cached, host_cached = default_cached_bytes(adapter_type), UNIFIED_CACHED_BYTES
        mappable = MAPPABLE in gpu.features
        # Slabs hold many tensors: never mappable, so neither a caller nor direct
        # mapping can map one while other tensors in it are copied.
        self.slabs = (
            SlabAllocator(
                gpu,
                usage,
                cache_mode=options.cache_mode,
                max_cached_bytes=cached,
                max_cached_buffers=options.max_cached_buffers,
            )
            if options.slab_max
            else None
        )

        def pool(usage: int, cached: int | None) -> BufferPool:
            return BufferPool(
                gpu,
                usage,
                mode=options.cache_mode,
                max_cached_bytes=cached,
                max_cached_buffers=options.max_cached_buffers,
                max_buffer_size=self.max_buffer_size,
            )

        self.mapped_storage = mappable if map_storage is None else map_storage and mappable
        self.pool = pool(usage | MAP_USAGE if self.mapped_storage else usage, cached)
        # Host-accessible memory: buffers the host maps and the device copies with.
        host_maps = MAP_READ if host_reads_map_writes(gpu.adapter) else MAP_USAGE
        self.host_pool = pool(usage | host_maps, host_cached) if mappable else None
        self.maps_open = 0
        """Storages of this context whose buffer a ``mapped()`` scope keeps mapped."""
        self.spin_wait = options.spin_wait
        """Seconds a wait on this context polls without blocking first."""
        self.upload_staging, self.download_staging = (
            StagingPool(
                gpu,
                write=write,
                chunk=options.staging_chunk,
                limit=options.staging_chunks,
                lost_after=options.lost_after,
                spin=self.spin_wait,
            )
            for write in (True, False)
        )
        self.patcher = BytePatcher(gpu)
        self._copy_kernel: CopyKernel | None = None
        self.kernel_copies = (
            kernel_copies_pay(adapter_type)
            if options.kernel_copies is None
            else options.kernel_copies
        )
        self.threads = CopyThreads(options.copy_threads)
        self._refs = 0
        self._live_bytes = 0
        self._host_live_bytes = 0
        self._state_lock = threading.Lock()
        self.closed = False
        self.lost = False
        # Bytes of queue.write_buffer staged by batches that ended without a submit
        # (see flush_writes); read and written under the lock.
        self.unsubmitted_writes = 0
        guard_device(gpu, self.lock, self._destroyed)

    def _destroyed(self) -> None:
        self.lost = True

    def count_live(self, delta: int, *, host: bool = False) -> None:
        """Add ``delta`` to the bytes held by live pooled storage (negative when
        freed) of device memory, or of host-accessible memory with ``host``."""
        with self._state_lock:
            if host:
                self._host_live_bytes += delta
            else:
                self._live_bytes += delta

    @property
    def live_bytes(self) -> int:
        """Bytes of pooled storage that tensors still hold (idle pooled buffers excluded)."""
        return self._live_bytes

    @property
    def host_live_bytes(self) -> int:
        """Bytes of host-accessible storage that tensors still hold."""
        return self._host_live_bytes

    def copy_kernel(self) -> CopyKernel:
        """The device's copy kernel, built on first use (callers hold ``lock``)."""
        if self._copy_kernel is None:
            self._copy_kernel = CopyKernel(self.gpu)
        return self._copy_kernel

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
        """Release pools, staging and copy threads; destroy tensorferry's own buffers.
        The wgpu device itself is left to the garbage collector (destroying it logs
        a device-lost message), and an adopted device stays the caller's."""
        with self._state_lock:
            if self.closed:
                return
            self.closed = True
            self._refs = 0
        with self.lock:
            self.upload_staging.close()
            self.download_staging.close()
            self.pool.close()
            if self.slabs is not None:
                self.slabs.close()
            if self.host_pool is not None:
                self.host_pool.close()
            self.threads.close()

    def check_usable(self) -> None:
        """Raise :class:`ClosedError` or :class:`DeviceLostError` unless usable."""
        if self.lost:
            raise DeviceLostError(
                f"the WebGPU device behind {self.device} was lost; its tensors are gone "
                "(new tensors get a fresh context)"
            )
        if self.closed:
            raise ClosedError(f"the WebGPU context of {self.device} is closed")

    def defer_writes(self, nbytes: int) -> bool:
        """Count ``nbytes`` of ``write_buffer`` data that a batch leaves staged without
        a submit; True once the staged bytes reach :data:`DEFERRED_WRITES`, when the
        caller must submit (wgpu keeps staged data until a submit). Under the lock.

        A lone small upload then costs no submit: the data lands at the next
        submit, ahead of anything a later copy or kernel does on the device.
        """
        staged = self.unsubmitted_writes + nbytes
        if staged >= DEFERRED_WRITES:
            self.unsubmitted_writes = 0
            return True
        self.unsubmitted_writes = staged
        return False

    def flush_writes(self) -> None:
        """Submit the writes earlier batches left staged (an empty submit), so that a
        map of a buffer sees them: a map waits for submitted work only. Under the lock."""
        if self.unsubmitted_writes:
            self.unsubmitted_writes = 0
            self.queue.submit([])

    def synchronize(self) -> None:
        """Return once every copy submitted to this context's queue, and every queued
        write, has finished on the device (:func:`~tensorferry_webgpu._waits.wait_for_queue`,
        spinning first for ``spin_wait``).

        Raises :class:`ClosedError` or :class:`DeviceLostError` for an unusable
        context, tensorferry's errors for other wgpu failures.
        """
        with self.lock:
            self.check_usable()
            try:
                self.unsubmitted_writes = 0
                wait_for_queue(
                    self.gpu, self.queue, lost_after=self.options.lost_after, spin=self.spin_wait
                )
            except Exception as exc:
                error = self.failure(exc)
                if error is exc:
                    raise
                raise error from exc

    def failure(self, exc: BaseException, *, allocating: bool = False) -> BaseException:
        """The error to raise for ``exc`` (see :func:`~tensorferry_webgpu._errors.translate`);
        a lost device marks the context lost, so the next use gets a fresh one."""
        error = translate(exc, self.device, self.gpu, allocating=allocating)
        if isinstance(error, DeviceLostError):
            self.lost = True
        return error

    # memory -----------------------------------------------------------------

    def allocate(self, nbytes: int, *, host: bool = False) -> wgpu.GPUBuffer:
        """A pooled storage buffer of at least ``nbytes`` bytes (host-accessible
        with ``host``, on a device with :data:`MAPPABLE` only).

        Raises :class:`OutOfDeviceMemoryError` when ``nbytes`` exceeds the
        device's largest buffer (rounded down to whole 4-byte words) or the
        device runs out of memory, and :class:`DeviceLostError` for a lost device.
        """
        self.check_usable()
        if nbytes > self.pool.largest:
            raise OutOfDeviceMemoryError(
                f"cannot allocate {nbytes} bytes on {self.device}: its largest buffer holds "
                f"{self.pool.largest} bytes (the limit {self.max_buffer_size}, in whole "
                "4-byte words)"
            )
        try:
            if host:
                assert self.host_pool is not None, "only mappable devices have host memory"
                return mark_host_accessible(self.host_pool.acquire(nbytes))
            return self.pool.acquire(nbytes)
        except Exception as exc:
            raise self.failure(exc, allocating=True) from exc

    def allocate_slot(self, nbytes: int) -> tuple[Slab, int] | None:
        """A slot for ``nbytes`` device bytes in a slab and its byte offset there, or
        ``None`` when ``nbytes`` is over ``slab_max`` (or slabs are off).

        Raises :class:`ClosedError` or :class:`DeviceLostError` for an unusable
        context and :class:`OutOfDeviceMemoryError` when a new slab cannot be made.
        """
        slabs = self.slabs
        if slabs is None or nbytes > self.options.slab_max:
            return None
        self.check_usable()
        try:
            return slabs.acquire(nbytes)
        except Exception as exc:
            raise self.failure(exc, allocating=True) from exc

    def pool_stats(self) -> PoolStats:
        """Counters of the device buffer pool."""
        return self.pool.stats()

    def empty_cache(self) -> int:
        """Destroy the idle buffers the pools keep for reuse (device memory, slabs and
        host-accessible memory); return the bytes they held."""
        freed = self.pool.trim()
        if self.slabs is not None:
            freed += self.slabs.trim()
        if self.host_pool is not None:
            freed += self.host_pool.trim()
        return freed
