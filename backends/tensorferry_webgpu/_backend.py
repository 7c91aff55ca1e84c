"""WebGPUBackend: devices, contexts and memory of the WebGPU backend."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import attrs

from tensorferry import (
    BackendUnavailableError,
    ClosedError,
    Device,
    DeviceLostError,
    MemoryKind,
    Storage,
    Tensor,
    UnknownDeviceError,
)
from tensorferry_webgpu._adapters import (
    BACKEND_NAME,
    describe,
    no_adapter_message,
    order_adapters,
)
from tensorferry_webgpu._adapters import adapters as all_adapters
from tensorferry_webgpu._buffers import PoolStats, StagingStats
from tensorferry_webgpu._context import Context, offers_host_accessible, wants_mapped_storage
from tensorferry_webgpu._native import device_of
from tensorferry_webgpu._opening import open_device
from tensorferry_webgpu._options import ContextOptions
from tensorferry_webgpu._raw import read_raw, write_raw
from tensorferry_webgpu._storage import WebGPUStorage, allocate_storage
from tensorferry_webgpu._transfer import WebGPUDataTransfer

if TYPE_CHECKING:
    import wgpu

__all__ = ["WebGPUBackend", "create_backend"]

_INSTALL_HINT = (
    "install a WebGPU-capable driver: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` "
    "(lavapipe, a CPU Vulkan driver) or your GPU vendor's Vulkan driver"
)


class WebGPUBackend:
    """One tensorferry device per wgpu adapter, best first, plus adopted devices,
    then one host-accessible device (``"webgpu:i:host"``) per adapter that offers
    wgpu's ``mappable-primary-buffers`` feature (adapters without it, such as
    Mesa's OpenGL one, have none: their buffers cannot be both mapped and copied
    by the device). A host-accessible device shares its adapter's index and
    context, so copies between the two are one ``copy_buffer_to_buffer``.

    Each device gets a :class:`Context` lazily, on first use; concurrent first
    uses create exactly one (double-checked locking). A context whose device is
    lost is replaced on next use. ``options`` tunes every context's pools.
    """

    name = BACKEND_NAME

    def __init__(self, options: ContextOptions | None = None) -> None:

        self.options = options or ContextOptions()
        found = all_adapters()
        adapters = order_adapters(found)
        if not adapters:
            raise BackendUnavailableError(no_adapter_message(found, _INSTALL_HINT))
        self._adapters: list[wgpu.GPUAdapter] = adapters
        self._devices = [describe(a, i) for i, a in enumerate(adapters)]
        self._host_devices = {
            i: attrs.evolve(
                d, memory=MemoryKind.HOST_ACCESSIBLE, name=f"{d.name} (host-accessible)"
            )
            for i, (a, d) in enumerate(zip(adapters, self._devices, strict=True))
            if offers_host_accessible(self.options, a)
        }
        self._contexts: dict[int, Context] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.contexts_created = 0
        self._transfer = WebGPUDataTransfer(self, self.owns)

    # the Backend protocol ---------------------------------------------------

    def devices(self) -> list[Device]:
        """Adapters best first (discrete, integrated, CPU fallbacks), then adopted
        devices, then the adapters' host-accessible devices."""
        return [*self._devices, *self._host_devices.values()]

    def owns(self, device: Device) -> bool:
        """True for a device of this backend instance."""
        if device.backend != BACKEND_NAME:
            return False
        if device.memory is MemoryKind.HOST_ACCESSIBLE:
            return self._host_devices.get(device.index) == device
        devices = self._devices
        return device.index < len(devices) and devices[device.index] == device

    def allocate(self, device: Device, nbytes: int) -> WebGPUStorage:
        """Storage of ``nbytes`` on ``device`` (a slot in a slab up to ``slab_max``
        bytes of device memory, else a pooled buffer); raises OutOfDeviceMemoryError
        past the device's maximum buffer size or when memory runs out. A device
        found lost here is replaced by a fresh context (an adopted device cannot
        be: DeviceLostError). Raises ``ValueError`` for a negative size, before
        any context is made."""
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes on {device}; expected nbytes >= 0")
        context = self.context(device)
        host = device.memory is MemoryKind.HOST_ACCESSIBLE
        tag = self._host_devices[device.index] if host else None
        if not nbytes:
            return WebGPUStorage(context, None, 0, device=tag)
        try:
            return allocate_storage(context, nbytes, device=tag)
        except DeviceLostError:
            if context.adopted or not context.lost:
                raise
            # The loss was found just now; new memory goes to a fresh context.
            return allocate_storage(self.context(device), nbytes, device=tag)

    def read_raw(self, storage: Storage, offset: int, nbytes: int) -> bytes:
        """Bytes of ``storage`` read with plain wgpu-py calls, bypassing the transfer
        (the suite's raw-access capability); raises as :func:`._raw.read_raw`."""
        return read_raw(storage, offset, nbytes)

    def write_raw(self, storage: Storage, offset: int, data: bytes) -> None:
        """Bytes written into ``storage`` with plain wgpu-py calls, bypassing the
        transfer; raises as :func:`._raw.write_raw`."""
        write_raw(storage, offset, data)

    def bytes_in_use(self, device: Device) -> int:
        """Bytes that live tensors' pooled storage holds on ``device`` (the suite's
        memory-usage capability); raises ``LookupError`` for a foreign device."""
        if not self.owns(device):
            raise UnknownDeviceError(f"{device} is not a device of this webgpu backend")
        context = self._contexts.get(device.index)
        if context is None:
            return 0
        if device.memory is MemoryKind.HOST_ACCESSIBLE:
            return context.host_live_bytes
        return context.live_bytes

    def synchronize(self, device: Device) -> None:
        """Wait until every copy submitted to ``device`` has finished on it (the
        :class:`tensorferry.Synchronizer` capability). Returns at once for a device
        nothing was copied with yet. Raises ``LookupError`` for a foreign device,
        :class:`ClosedError` after close, :class:`DeviceLostError` for a lost device.
        """
        if not self.owns(device):
            raise UnknownDeviceError(f"{device} is not a device of this webgpu backend")
        if self._closed:
            raise ClosedError("the webgpu backend is closed")
        context = self._contexts.get(device.index)
        if context is not None:
            context.synchronize()

    def data_transfers(self) -> list[WebGPUDataTransfer]:
        """The one WebGPU transfer."""
        return [self._transfer]

    def fill(self, tensor: Tensor, pattern: bytes) -> None:
        """Fill on the device: ``clear_buffer`` for zeros, a small kernel otherwise."""
        self._transfer.fill(tensor, pattern)

    def close(self) -> None:
        """Close the transfer, then every context (references held elsewhere
        included: their tensors raise ClosedError from now on); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            contexts, self._contexts = list(self._contexts.values()), {}
        self._transfer.close()
        for context in contexts:
            context.close()

    # contexts ---------------------------------------------------------------

    def context(self, device: Device) -> Context:
        """The live context of ``device``, created on first use.

        Raises :class:`UnknownDeviceError`-like ``LookupError`` for a foreign
        device, :class:`ClosedError` after close, :class:`DeviceLostError` for a
        lost adopted device (tensorferry cannot recreate a caller's device).
        """
        index = device.index
        context = self._contexts.get(index)
        if context is not None and not context.lost and context.device is device:
            return context  # the common case: the very Device object this backend made
        with self._lock:
            if self._closed:
                raise ClosedError("the webgpu backend is closed")
            if not self.owns(device):
                raise UnknownDeviceError(f"{device} is not a device of this webgpu backend")
            context = self._contexts.get(index)
            if context is not None and not context.lost:
                return context
            if context is not None and context.adopted:
                raise DeviceLostError(f"the adopted wgpu device behind {device} was lost")
            adapter = self._adapters[index]
            gpu = open_device(adapter, device, self.options)
            fresh = Context(
                self._devices[index],
                gpu,
                self.options,
                backend=self,
                map_storage=wants_mapped_storage(self.options, adapter),
            ).acquire()
            self._contexts[index] = fresh
            self.contexts_created += 1
        if context is not None:
            context.release()  # the lost one
        return fresh

    def acquire_context(self, device: Device) -> Context:
        """The device's context with a reference the caller must :meth:`Context.release`."""
        return self.context(device).acquire()

    def pool_stats(self, device: Device) -> PoolStats:
        """Counters of the device buffer pool of ``device``'s context."""
        return self.context(device).pool_stats()

    def empty_cache(self, device: Device) -> int:
        """Destroy the idle buffers that ``device``'s context keeps for reuse (its
        device memory, slabs and host-accessible memory), as ``torch.cuda.empty_cache``
        does; tensors in use keep theirs. Returns the bytes released (0 where no
        context is open: nothing is opened for it). Raises
        :class:`~tensorferry.UnknownDeviceError` for a device of another backend.
        """
        if not self.owns(device):
            raise UnknownDeviceError(f"{device} is not a device of this webgpu backend")
        context = self._contexts.get(device.index)
        if context is None or context.closed or context.lost:
            return 0
        return context.empty_cache()

    def staging_stats(self, device: Device) -> tuple[StagingStats, StagingStats]:
        """Counters of ``device``'s upload and download staging pools."""
        context = self.context(device)
        return context.upload_staging.stats(), context.download_staging.stats()

    def adopt_device(self, gpu: wgpu.GPUDevice, *, label: str = "adopted") -> Device:
        """Make a caller's ``wgpu.GPUDevice`` a tensorferry device (a new index).

        tensorferry then allocates from it and copies with its queue, so the
        caller's compute code can use the tensors' buffers; the caller keeps
        ownership of the device (tensorferry never destroys it).

        Raises ``ValueError`` for a device made from an OpenGL adapter of another
        enumeration than :func:`tensorferry_webgpu.adapters`: two enumerations of
        Mesa's GL adapter abort the process once devices of both are polled, so
        such a device is refused before it is ever used.
        """
        _check_same_enumeration(gpu.adapter)
        with self._lock:
            if self._closed:
                raise ClosedError("the webgpu backend is closed")
            for context in self._contexts.values():
                if context.gpu is gpu:
                    return context.device
            index = len(self._devices)
            device = describe(gpu.adapter, index, label=label)
            self._devices.append(device)
            self._contexts[index] = Context(
                device, gpu, self.options, backend=self, adopted=True
            ).acquire()
            self.contexts_created += 1
            return device

    def wrap_buffer(
        self, device: Device, buffer: wgpu.GPUBuffer, *, offset: int = 0, nbytes: int | None = None
    ) -> WebGPUStorage:
        """Storage over ``nbytes`` of a caller's buffer from ``offset``, without copying.

        The buffer must belong to ``device``'s wgpu device, have STORAGE, COPY_SRC
        and COPY_DST usage and a size that is a multiple of 4 (``ValueError``
        otherwise); it stays the caller's, who must
        not destroy it while tensors over it are used.
        """
        import wgpu

        context = self.context(device)
        owner = device_of(buffer)
        if owner is not None and owner is not context.gpu:
            raise ValueError(
                f"the buffer belongs to another wgpu device than {device}'s; "
                "adopt that device first (adopt_device) and wrap with the device it returns"
            )
        needed = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        if (buffer.usage & needed) != needed:
            raise ValueError(
                f"the buffer's usage {buffer.usage} lacks some of STORAGE | COPY_SRC | COPY_DST, "
                "which tensorferry needs to copy to and from it byte-exactly"
            )
        if buffer.size % 4:
            raise ValueError(
                f"the buffer is {buffer.size} bytes, not a multiple of 4; WebGPU copies whole "
                "4-byte words, so expected a buffer size rounded up to 4"
            )
        size = buffer.size - offset if nbytes is None else nbytes
        if offset < 0 or size < 0 or offset + size > buffer.size:
            raise ValueError(
                f"{size} bytes at offset {offset} do not fit a buffer of {buffer.size} bytes"
            )
        return WebGPUStorage(context, buffer, size, base=offset, external=True)


_GL_BACKENDS = frozenset({"OpenGL", "OpenGLES"})


def _check_same_enumeration(adapter: wgpu.GPUAdapter) -> None:
    if str(adapter.info["backend_type"]) not in _GL_BACKENDS:
        return
    if any(adapter is shared for shared in all_adapters()):
        return
    raise ValueError(
        f"the device's adapter ({adapter.summary}) comes from another wgpu adapter "
        "enumeration than tensorferry's; devices of two enumerations of an OpenGL adapter "
        "abort the process once both are used. Expected a device requested from "
        "tensorferry_webgpu.adapters(), e.g. tensorferry_webgpu.adapters()[i].request_device_sync()"
    )


def buffer_of(tensor: Tensor) -> tuple[wgpu.GPUBuffer, int]:
    """The ``GPUBuffer`` behind a WebGPU tensor and the tensor's byte offset in it.

    A small tensor (up to ``ContextOptions.slab_max`` bytes) shares its buffer
    with others (a slab); its offset is a multiple of 16, not of the device's
    storage-binding offset alignment. A pooled tensor's buffer stays
    tensorferry's: its ``destroy()`` raises
    ``RuntimeError`` (work on a destroyed buffer would abort the process); let
    the tensor go instead. Raises ``TypeError`` for a tensor of another
    backend, ``ValueError`` for a zero-byte tensor (which holds no buffer).
    """
    storage = tensor.storage
    if not isinstance(storage, WebGPUStorage):
        raise TypeError(f"{tensor!r} is not a WebGPU tensor")
    if storage.buffer is None:
        raise ValueError(f"{tensor!r} holds no bytes and so no buffer")
    return storage.buffer, storage.base + tensor.offset


def create_backend() -> WebGPUBackend:
    """The entry point's factory; raises BackendUnavailableError with what to install."""
    try:
        import wgpu  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the webgpu backend needs the wgpu package ({exc}); "
            "install it with: pip install 'tensorferry[webgpu]'"
        ) from exc
    return WebGPUBackend()
