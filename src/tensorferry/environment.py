"""Environment: the process-level owner of backends and of one DataTransferManager."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self, SupportsIndex

import numpy as np
import numpy.typing as npt

from tensorferry._fill import element_bytes
from tensorferry._host_array import new_array
from tensorferry._spec import normalize_backend_name, parse_device_spec
from tensorferry.backend import Backend, BackendFactory, Filler, Synchronizer
from tensorferry.device import HOST, Device, DeviceType, MemoryKind
from tensorferry.errors import (
    BackendUnavailableError,
    ClosedError,
    ForeignTensorError,
    InvalidArrayError,
    OutOfDeviceMemoryError,
    UnknownDeviceError,
)
from tensorferry.handle import CopyHandle
from tensorferry.manager import DataTransferManager
from tensorferry.policy import (
    DevicePolicy,
    DevicePolicyDelegate,
    apply_policy,
    default_spec,
    match_device,
    no_match_message,
)
from tensorferry.registry import ENTRY_POINT_GROUP, HOST_BACKEND, BackendRegistry
from tensorferry.storage import HostStorage, Storage
from tensorferry.tensor import Tensor, as_dtype, as_shape, check_out_array
from tensorferry.transfer import IDataTransfer

__all__ = ["ENTRY_POINT_GROUP", "HOST_BACKEND", "Environment"]

logger = logging.getLogger(__name__)

_live: weakref.WeakSet[Environment] = weakref.WeakSet()


@atexit.register
def _close_live_environments() -> None:
    # Close while every module is still importable: backends release device
    # objects in a safe order instead of leaving it to interpreter teardown.
    for env in list(_live):
        env.close()


class Environment:
    """Owns the loaded backends and the :class:`DataTransferManager` their transfers live in.

    Backends are discovered through the ``tensorferry.backends`` entry points and
    loaded lazily, on first need. ``backends`` restricts which of them may load
    (the host backend ``"cpu"`` is always allowed). A backend that fails to
    load is reported through :attr:`backend_errors` and by the exception raised
    when it is asked for; the others keep working.

    Use it as a context manager or call :meth:`close`; live environments are
    also closed at interpreter exit.
    """

    def __init__(self, backends: Iterable[str] | None = None) -> None:
        self._lock = threading.RLock()
        self._closed = False
        self._registry = BackendRegistry(backends)
        self._loaded: dict[str, Backend] = {}
        self._transfers: dict[str, tuple[IDataTransfer, ...]] = {}
        self._manager = DataTransferManager(owner=self)
        _live.add(self)

    # lifetime ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def close(self) -> None:
        """Close the manager (and with it every transfer), then every backend,
        last loaded first. Idempotent; tensors of a closed environment raise
        :class:`ClosedError` when used."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            backends = list(self._loaded.values())
            self._loaded.clear()
            self._transfers.clear()
        self._manager.close()
        for backend in reversed(backends):
            backend.close()
        _live.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Environment is closed; expected an open environment")

    # backends ---------------------------------------------------------------

    @property
    def data_transfer_manager(self) -> DataTransferManager:
        """The manager every loaded backend's transfers are registered with."""
        return self._manager

    @property
    def backend_names(self) -> list[str]:
        """Names of the backends this environment may load, host backend first."""
        return self._registry.names

    @property
    def backend_errors(self) -> dict[str, str]:
        """Why each backend that failed to load did so, by name."""
        return self._registry.errors

    def backend(self, name: str) -> Backend:
        """The loaded backend ``name``, loading it on first use.

        Raises :class:`BackendUnavailableError` if it failed to load (the
        message says why and what to install), :class:`UnknownDeviceError` if no
        backend has that name, ``TypeError`` if ``name`` is not a string.
        """
        self._check_open()
        name = normalize_backend_name(name)
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None:
                return loaded
            backend = self._registry.load(name)
            self._adopt(name, backend)
            return backend

    def _adopt(self, name: str, backend: Backend) -> None:
        # Remember the very objects registered: data_transfers() may build new ones.
        transfers = tuple(backend.data_transfers())
        for transfer in transfers:
            self._manager.register_data_transfer(transfer)
        self._transfers[name] = transfers
        self._loaded[name] = backend

    def load_all(self) -> list[str]:
        """Load every backend that is not loaded yet; return the names that loaded."""
        for name in self.backend_names:
            if not self._registry.failed(name):
                with contextlib.suppress(BackendUnavailableError):
                    self.backend(name)
        return [n for n in self.backend_names if n in self._loaded]

    def register_backend(self, name: str, backend: Backend | BackendFactory) -> Backend:
        """Add a backend at run time (an instance or a factory) and register its transfers.

        Raises ``ValueError`` if a loaded backend already has that name or the
        backend's own ``name`` differs, ``TypeError`` if a factory returns no Backend.
        """
        self._check_open()
        name = normalize_backend_name(name)
        with self._lock:
            if name in self._loaded:
                raise ValueError(f"a backend named {name!r} is loaded already")
            instance = self._registry.add(name, backend)
            self._adopt(name, instance)
            return instance

    def unregister_backend(self, name: str) -> None:
        """Unregister and close a loaded backend's transfers, then close the backend.

        Its tensors raise :class:`ClosedError` afterwards. Raises ``LookupError``
        if no loaded backend has that name.
        """
        self._check_open()
        name = normalize_backend_name(name)
        with self._lock:
            if name not in self._loaded:
                raise LookupError(
                    f"no loaded backend named {name!r}; loaded: {sorted(self._loaded)}"
                )
            backend = self._loaded.pop(name)
            transfers = self._transfers.pop(name)
            self._registry.remove(name)
        for transfer in transfers:
            if any(t is transfer for t in self._manager.data_transfers):
                self._manager.unregister_data_transfer(transfer, wait=True)
            transfer.close()
        backend.close()

    # devices ----------------------------------------------------------------

    def devices(self, *, type: DeviceType | None = None) -> list[Device]:
        """Every device of every backend that loads, host first, each backend's best first.

        ``type`` keeps only devices of that :class:`DeviceType`.
        """
        self._check_open()
        self.load_all()
        found = [
            d
            for name in self.backend_names
            if name in self._loaded
            for d in self._loaded[name].devices()
        ]
        return [d for d in found if type is None or d.type == type]

    def device(self, spec: str | Device, *, memory: MemoryKind | None = None) -> Device:
        """Resolve a device spec or a :class:`Device` to a device of this environment.

        A spec is, in this order of precedence: a backend name, ``"cpu"`` (host
        memory) or ``"webgpu"`` (that backend's best device), optionally with
        an index (``"webgpu:1"``) and, after the index, ``":host"`` for that
        device's host-accessible memory (``"webgpu:0:host"``); a device type,
        ``"gpu"`` or ``"npu"`` (the first device of that type, see
        :meth:`devices`); or text contained in a device's name (``"llvmpipe"``,
        ``"NVIDIA"``, ``"via OpenGL"``, the first such device). Software adapters
        such as llvmpipe are devices of type CPU: ``"gpu"`` never means one.

        ``memory`` picks the memory kind: ``env.device("webgpu:0",
        memory=MemoryKind.HOST_ACCESSIBLE)`` is ``env.device("webgpu:0:host")``.
        Without it a spec means the default memory unless it ends in ``":host"``.

        An index is written in plain digits (no sign, no leading zeros), and an
        indexed spec has no whitespace inside; surrounding whitespace and letter
        case are ignored (see ``tensorferry._spec`` for the grammar). Raises
        :class:`UnknownDeviceError` (a ``LookupError``) for a spec that does not
        parse or names no device (the message lists the devices there are),
        :class:`BackendUnavailableError` with the reason a backend did not load,
        ``TypeError`` for anything but a ``str`` or a ``Device`` (or a
        ``memory`` that is not a :class:`MemoryKind`) and ``ValueError`` when
        ``memory`` contradicts the spec.
        """
        if memory is not None and not isinstance(memory, MemoryKind):
            raise TypeError(
                f"memory must be a tensorferry.MemoryKind or None, got {type(memory).__name__}"
            )
        if isinstance(spec, Device):
            if memory is not None and spec.memory is not memory:
                raise ValueError(f"{spec} has {spec.memory.name} memory, not {memory.name}")
            if spec in self.backend(spec.backend).devices():
                return spec
            raise UnknownDeviceError(f"{spec} is not a device of this environment")
        parsed = parse_device_spec(spec)
        if memory is not None and parsed.memory not in (MemoryKind.DEFAULT, memory):
            raise ValueError(
                f"the device spec {spec!r} names {parsed.memory.name} memory but "
                f"memory={memory.name} was given; expected one of them, or both the same"
            )
        wanted = parsed.memory if memory is None else memory
        if parsed.index is None and parsed.backend not in self.backend_names:
            return self._match_device(spec, wanted)
        backend_devices = list(self.backend(parsed.backend).devices())
        kind_devices = [d for d in backend_devices if d.memory is wanted]
        if parsed.index is None:
            if not kind_devices:
                raise UnknownDeviceError(
                    f"backend {parsed.backend!r} has no devices with {wanted.name} memory; "
                    f"it has {[str(d) for d in backend_devices]}"
                )
            return kind_devices[0]
        match = [d for d in kind_devices if d.index == parsed.index]
        if not match:
            shown = repr(spec) if memory is None else f"{spec!r} with {memory.name} memory"
            raise UnknownDeviceError(
                f"no device {shown}; backend {parsed.backend!r} has "
                f"{[str(d) for d in backend_devices]}"
            )
        return match[0]

    def _match_device(self, spec: str, memory: MemoryKind) -> Device:
        devices = [d for d in self.devices() if d.memory is memory]
        found = match_device(devices, spec)
        if found is None:
            raise UnknownDeviceError(
                no_match_message(spec, devices, self.backend_names, self.backend_errors)
            )
        return found

    def select_device(self, policy: DevicePolicy | DevicePolicyDelegate | None = None) -> Device:
        """The device ``policy`` picks (see :class:`DevicePolicy`), or a delegate's choice.

        Without a policy, the device named by the ``TENSORFERRY_DEVICE``
        environment variable when it is set (any spec :meth:`device` takes),
        else the choice of ``DevicePolicy.DEFAULT``. Raises what :meth:`device`
        raises for a bad ``TENSORFERRY_DEVICE``, ``TypeError``/``ValueError``
        for a bad policy or delegate result, :class:`UnknownDeviceError` when
        nothing fits.
        """
        self._check_open()
        if policy is None:
            spec = default_spec()
            if spec is not None:
                chosen = self.device(spec)
                logger.info("TENSORFERRY_DEVICE=%s chose %s (%s)", spec, chosen, chosen.name)
                return chosen
            policy = DevicePolicy.DEFAULT
        return apply_policy(self.devices(), policy)

    # tensors ----------------------------------------------------------------

    def empty(
        self,
        shape: SupportsIndex | Sequence[SupportsIndex],
        dtype: npt.DTypeLike,
        device: str | Device = HOST_BACKEND,
    ) -> Tensor:
        """An uninitialised tensor on ``device``.

        Raises ``TypeError`` (not integers) or ``ValueError`` (negative, or more
        elements than numpy can index) for a bad shape,
        :class:`UnsupportedDtypeError` for a dtype without fixed size,
        :class:`OutOfDeviceMemoryError` (a ``MemoryError``) when the device
        cannot hold it, whatever the backend, and the errors of :meth:`device`.
        """
        self._check_open()
        dims, kind = as_shape(shape), as_dtype(dtype)
        target = self.device(device)
        nbytes = math.prod(dims) * kind.itemsize
        if nbytes > sys.maxsize:
            raise OutOfDeviceMemoryError(
                f"a tensor of shape {dims} and dtype {kind} needs {nbytes} bytes, more than "
                f"any device can address (at most {sys.maxsize})"
            )
        backend = self.backend(target.backend)
        try:
            storage = backend.allocate(target, nbytes)
        except OutOfDeviceMemoryError:
            raise
        except MemoryError as exc:
            raise OutOfDeviceMemoryError(
                f"{target} cannot hold {nbytes} bytes (shape {dims}, dtype {kind}): {exc}"
            ) from exc
        return Tensor(storage, dims, kind, 0, self)

    def zeros(
        self,
        shape: SupportsIndex | Sequence[SupportsIndex],
        dtype: npt.DTypeLike,
        device: str | Device = HOST_BACKEND,
    ) -> Tensor:
        """A tensor of zeros (every byte 0) on ``device``; raises as :meth:`empty`."""
        tensor = self.empty(shape, dtype, device)
        self._fill(tensor, bytes(tensor.dtype.itemsize))
        return tensor

    def fill(self, tensor: Tensor, value: object) -> None:
        """Set every element of ``tensor`` (or of a view) to ``value``.

        One rule decides on every backend whether ``value`` fits the dtype: the
        conversion may round floating-point precision but lose nothing else (no
        overflow, no truncation, no strings for numbers; see the README). Uses
        the backend's :class:`Filler` capability when it has one, else an
        upload. Raises ``ValueError`` naming the value and dtype when the value
        does not fit, before anything is written, and what :meth:`copy_tensor`
        raises for the destination.
        """
        self._check_tensor(tensor, "tensor")
        self._fill(tensor, element_bytes(value, tensor.dtype))

    def _fill(self, tensor: Tensor, pattern: bytes) -> None:
        backend = self.backend(tensor.device.backend)
        if isinstance(backend, Filler) and tensor.writable:
            backend.fill(tensor, pattern)
            return
        logger.debug("backend %r has no fill; uploading %r instead", backend.name, tensor)
        element = np.frombuffer(pattern, np.uint8)
        source = np.tile(element, tensor.size).view(tensor.dtype).reshape(tensor.shape)
        self.copy_tensor(self._wrap(source, writable=False), tensor)

    def wrap_storage(
        self,
        storage: Storage,
        shape: SupportsIndex | Sequence[SupportsIndex],
        dtype: npt.DTypeLike,
        offset: int = 0,
    ) -> Tensor:
        """A tensor of this environment over storage a backend made outside
        :meth:`empty` (for example around a caller's device buffer).

        Raises :class:`UnknownDeviceError` when no loaded backend owns the
        storage's device, ``ValueError`` when the view does not fit the storage.
        """
        self._check_open()
        self.device(storage.device)
        return Tensor(storage, as_shape(shape), as_dtype(dtype), offset, self)

    def from_numpy(
        self,
        array: npt.ArrayLike,
        device: str | Device = HOST_BACKEND,
        *,
        copy: bool = True,
    ) -> Tensor:
        """A tensor on ``device`` holding the array's data.

        With ``copy=True`` (the default) the tensor owns new memory. With
        ``copy=False`` the tensor *shares* the array's memory: only on the host
        device, only for a C-contiguous array (:class:`InvalidArrayError`
        otherwise), and a read-only array makes a read-only tensor.
        """
        self._check_open()
        target = self.device(device)
        if copy:
            source = np.asarray(array, order="C")
            as_dtype(source.dtype)
            tensor = self.empty(source.shape, source.dtype, target)
            self.copy_tensor(self._wrap(source, writable=False), tensor)
            return tensor
        if not target.is_host:
            raise ValueError(
                f"copy=False shares the array's memory, which only the host can; got device "
                f"{target}, expected {HOST}"
            )
        if not isinstance(array, np.ndarray):
            raise InvalidArrayError(
                f"copy=False needs a numpy.ndarray to share, got {type(array).__name__}"
            )
        return self._wrap(array, writable=None)

    def to_numpy(
        self, tensor: Tensor, out: npt.NDArray[np.generic] | None = None
    ) -> npt.NDArray[np.generic]:
        """Copy ``tensor`` to host memory: into ``out`` (which must be writable,
        C-contiguous and of the tensor's shape and dtype) or a new array (one of
        4 MiB or more starts on a 2 MiB boundary, see :mod:`tensorferry._host_array`)."""
        self._check_tensor(tensor, "tensor")
        if out is None:
            out = new_array(tensor.shape, tensor.dtype)
        else:
            check_out_array(out, tensor.shape, tensor.dtype)
        # Writable, C-contiguous, the tensor's shape and dtype: wrapped without the
        # checks of _wrap (a lone small download's hot path).
        flat = out.ravel().view(np.uint8)
        host = Tensor._whole(HostStorage(flat), tensor.shape, tensor.dtype, self)
        self._manager.copy_tensor(tensor, host)
        return out

    def to_device(self, tensor: Tensor, device: str | Device, *, copy: bool = False) -> Tensor:
        """``tensor`` on ``device`` (what :meth:`Tensor.to` does): the tensor itself
        when it is there already and ``copy`` is false, else a new tensor holding
        a copy. Raises what :meth:`device`, :meth:`empty` and :meth:`copy_tensor` raise."""
        self._check_tensor(tensor, "tensor")
        target = self.device(device)
        if target == tensor.device and not copy:
            return tensor
        result = self.empty(tensor.shape, tensor.dtype, target)
        self.copy_tensor(tensor, result)
        return result

    def from_dlpack(self, producer: object, device: str | Device | None = None) -> Tensor:
        """A tensor from any DLPack producer in host memory (numpy, torch, JAX...).

        Without ``device`` the tensor shares the producer's memory (no copy; a
        read-only producer gives a read-only tensor); with one, it is a copy on
        that device (``"cpu"`` included). Raises ``TypeError`` for an object without the DLPack
        protocol, :class:`InvalidArrayError` for a producer outside host memory
        (move it to the CPU with its own library first) or one numpy cannot
        import, and what :meth:`device` raises.
        """
        from tensorferry.dlpack import host_array_from

        self._check_open()
        target = None if device is None else self.device(device)
        array = host_array_from(producer)
        if target is None:
            return self.from_numpy(array, copy=False)
        return self.from_numpy(array, target)

    def _wrap(self, array: npt.NDArray[np.generic], *, writable: bool | None) -> Tensor:
        dtype = as_dtype(array.dtype)  # raises for a dtype tensors cannot hold
        # The whole array, of a numpy shape and a checked dtype: nothing left to check.
        return Tensor._whole(HostStorage.wrap(array, writable=writable), array.shape, dtype, self)

    def _check_tensor(self, tensor: Tensor, role: str) -> None:
        self._check_open()
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{role} must be a tensorferry.Tensor, got {type(tensor).__name__}")
        if tensor.owner is not self:
            raise ForeignTensorError(
                f"{role} {tensor!r} belongs to another environment; "
                "expected a tensor of this environment"
            )

    # copies -----------------------------------------------------------------

    def copy_tensor(self, src: Tensor, dst: Tensor) -> None:
        """Copy ``src`` into ``dst``; see :meth:`DataTransferManager.copy_tensors`."""
        self._manager.copy_tensor(src, dst)

    def copy_tensors(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> None:
        """Copy a batch, any mix of device pairs, with the order semantics of a loop.

        See :meth:`DataTransferManager.copy_tensors` for what it raises.
        """
        self._manager.copy_tensors(srcs, dsts)

    def synchronize(self, device: str | Device) -> None:
        """Return once every copy submitted to ``device`` has finished on the device
        (``torch.cuda.synchronize`` for one device).

        A copy into device memory may return while the device is still copying:
        the data is already what every later copy or kernel on that device sees,
        but the device is busy. Call this to time a transfer, or before handing a
        device buffer to code outside the device's queue. Copies started by
        :meth:`copy_tensors_async` and not yet run are not waited for: wait on
        their handles. Devices whose backend has no
        :class:`~tensorferry.Synchronizer` capability finish every copy before it
        returns, so there is nothing to wait for. Raises what :meth:`device`
        raises for the spec, :class:`ClosedError` and :class:`DeviceLostError`.
        """
        self._check_open()
        resolved = self.device(device)
        if resolved.is_host:
            return
        backend = self.backend(resolved.backend)
        if isinstance(backend, Synchronizer):
            backend.synchronize(resolved)

    def copy_tensors_async(self, srcs: Sequence[Tensor], dsts: Sequence[Tensor]) -> CopyHandle:
        """Start a batch and return a :class:`~tensorferry.CopyHandle` (``wait()``,
        ``done()``, ``await``, ``add_done_callback``); see
        :meth:`DataTransferManager.copy_tensors_async`."""
        return self._manager.copy_tensors_async(srcs, dsts)
