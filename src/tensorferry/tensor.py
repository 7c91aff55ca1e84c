"""Tensor: a typed, shaped view of backend-owned storage."""

from __future__ import annotations

import contextlib
import math
import operator
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, SupportsIndex, cast

import attrs
import numpy as np
import numpy.typing as npt

from tensorferry.errors import InvalidArrayError, UnsupportedDtypeError
from tensorferry.storage import HostStorage, MappableStorage, Storage

if TYPE_CHECKING:
    from tensorferry.device import Device

__all__ = ["Tensor", "TensorOwner", "as_dtype", "as_shape"]


def as_dtype(dtype: npt.DTypeLike) -> np.dtype[np.generic]:
    """Normalise ``dtype`` to a numpy dtype with a fixed item size.

    Raises :class:`UnsupportedDtypeError` (a ``TypeError``) for object dtypes,
    dtypes that contain objects, unsized flexible dtypes such as ``"S"``, and
    subarray dtypes such as ``("f4", (2,))``.
    """
    try:
        result = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    except TypeError as exc:
        raise UnsupportedDtypeError(f"{dtype!r} is not a numpy dtype: {exc}") from None
    if result.hasobject or result.itemsize == 0:
        raise UnsupportedDtypeError(
            f"dtype {result} has no fixed item size; expected a fixed-size numpy dtype "
            "(bool, integer, float, complex, datetime, sized bytes or structured)"
        )
    if result.subdtype is not None:
        base, dims = result.subdtype
        raise UnsupportedDtypeError(
            f"dtype {result} is a subarray dtype, which numpy expands into the shape; "
            f"expected its base dtype {base} with {dims} appended to the tensor's shape"
        )
    return result


def _is_index(value: object) -> bool:
    # hasattr, not isinstance(value, SupportsIndex): a runtime Protocol check
    # costs microseconds, and this runs for every tensor made.
    return hasattr(value, "__index__")


def _dims(shape: SupportsIndex | Sequence[SupportsIndex]) -> tuple[SupportsIndex, ...]:
    if _is_index(shape):
        return (cast("SupportsIndex", shape),)
    return tuple(cast("Sequence[SupportsIndex]", shape))


_MAX_DIM = sys.maxsize
"""The largest dimension numpy can describe (``numpy.intp``)."""


def as_shape(shape: SupportsIndex | Sequence[SupportsIndex]) -> tuple[int, ...]:
    """Normalise ``shape`` to a tuple of non-negative ints.

    Raises ``TypeError`` for anything but integers (``bool`` included) and
    ``ValueError`` for a negative dimension or a shape numpy cannot describe
    (more than ``sys.maxsize`` elements).
    """
    if (
        type(shape) is tuple
        and all(type(d) is int and 0 < d <= _MAX_DIM for d in shape)
        and (len(shape) < 2 or math.prod(shape) <= _MAX_DIM)
    ):
        return shape  # already normal: the common case
    dims = _dims(shape)
    if any(isinstance(d, bool | np.bool_) for d in dims):
        raise TypeError(f"shape must be integers, got {shape!r}; a bool is not a dimension")
    try:
        result = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise TypeError(f"shape must be a sequence of integers, got {shape!r}") from None
    if any(d < 0 for d in result):
        raise ValueError(f"shape must not have negative dimensions, got {result}")
    if any(d > _MAX_DIM for d in result) or math.prod(d for d in result if d) > _MAX_DIM:
        raise ValueError(
            f"shape {result} has more elements than numpy can index (at most {_MAX_DIM}); "
            "expected a smaller shape"
        )
    return result


class TensorOwner(Protocol):
    """What a tensor needs from the environment that made it.

    Implemented by :class:`tensorferry.Environment`; a manager built alone uses
    ``None`` as owner.
    """

    @property
    def closed(self) -> bool:
        """True once the owner has been closed."""
        ...

    def to_numpy(
        self, tensor: Tensor, out: npt.NDArray[np.generic] | None = None
    ) -> npt.NDArray[np.generic]:
        """Copy ``tensor`` into host memory and return it as a numpy array."""
        ...

    def to_device(self, tensor: Tensor, device: str | Device, *, copy: bool = False) -> Tensor:
        """``tensor`` on ``device``: itself when it is there already (unless ``copy``),
        else a new tensor holding a copy."""
        ...


@attrs.frozen(eq=False, repr=False)
class Tensor:
    """``shape`` elements of ``dtype`` at byte ``offset`` into ``storage``, C order.

    Tensors are cheap views: indexing along the first axis, :meth:`reshape` and
    :meth:`view` return new tensors over the same storage. Create them through
    :class:`tensorferry.Environment` (``empty``, ``from_numpy``), which sets the
    owner; backends build them directly from storage they allocated.

    Raises ``ValueError`` when the view would reach past the end of the storage.
    """

    storage: Storage
    shape: tuple[int, ...] = attrs.field(converter=as_shape)
    dtype: np.dtype[np.generic] = attrs.field(converter=as_dtype)
    offset: int = 0
    owner: TensorOwner | None = None
    nbytes: int = attrs.field(init=False)
    """Number of bytes the tensor covers."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "nbytes", math.prod(self.shape) * self.dtype.itemsize)
        if self.offset < 0 or self.offset + self.nbytes > self.storage.nbytes:
            raise ValueError(
                f"a view of {self.nbytes} bytes at offset {self.offset} does not fit in "
                f"storage of {self.storage.nbytes} bytes"
            )

    @classmethod
    def _whole(
        cls,
        storage: Storage,
        shape: tuple[int, ...],
        dtype: np.dtype[np.generic],
        owner: TensorOwner | None,
    ) -> Tensor:
        """A tensor over all of ``storage``, built without the checks of ``__init__``.

        For the core's hot paths only, where the caller knows what those checks
        would find: ``shape`` and ``dtype`` already normal (a numpy array's own, the
        dtype accepted by :func:`as_dtype`) and ``storage`` exactly the tensor's
        bytes (a host array wrapped whole). Raises nothing.
        """
        tensor = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(tensor, "storage", storage)
        setattr_(tensor, "shape", shape)
        setattr_(tensor, "dtype", dtype)
        setattr_(tensor, "offset", 0)
        setattr_(tensor, "owner", owner)
        setattr_(tensor, "nbytes", math.prod(shape) * dtype.itemsize)
        return tensor

    @property
    def device(self) -> Device:
        """The device whose memory holds this tensor."""
        return self.storage.device

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def writable(self) -> bool:
        """False when the storage must not be a copy's destination."""
        return self.storage.writable

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def _row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def __getitem__(self, key: SupportsIndex | slice) -> Tensor:
        """A view along the first axis: ``t[i]`` drops it, ``t[i:j]`` keeps it.

        Only contiguous slices (step 1) are allowed; anything else raises
        ``IndexError`` or ``TypeError``.
        """
        if not self.shape:
            raise IndexError("a 0-d tensor cannot be indexed")
        rows = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(rows)
            if step != 1:
                raise IndexError(f"only contiguous slices are views; got step {step}, expected 1")
            count = max(0, stop - start)
            return attrs.evolve(
                self, shape=(count, *self.shape[1:]), offset=self.offset + start * self._row_bytes()
            )
        if not _is_index(key) or isinstance(key, bool | np.bool_):
            raise TypeError(
                f"tensors index along the first axis with an int or a slice, got {key!r}"
                + (" (a bool is not an index)" if isinstance(key, bool | np.bool_) else "")
            )
        index = operator.index(key)
        if not -rows <= index < rows:
            raise IndexError(f"index {index} is out of range for a first axis of length {rows}")
        index %= rows
        return attrs.evolve(
            self, shape=self.shape[1:], offset=self.offset + index * self._row_bytes()
        )

    def reshape(self, *shape: SupportsIndex | Sequence[SupportsIndex]) -> Tensor:
        """The same bytes with another shape; one dimension may be ``-1``.

        Raises ``ValueError`` when the element counts differ.
        """
        dims = list(as_shape_with_wildcard(shape[0] if len(shape) == 1 else shape))  # type: ignore[arg-type]
        if dims.count(-1) > 1:
            raise ValueError(f"only one dimension may be -1, got {tuple(dims)}")
        if -1 in dims:
            known = math.prod(d for d in dims if d != -1)
            if known == 0 or self.size % known:
                raise ValueError(
                    f"cannot reshape a tensor of {self.size} elements to {tuple(dims)}"
                )
            dims[dims.index(-1)] = self.size // known
        if math.prod(dims) != self.size:
            raise ValueError(
                f"cannot reshape a tensor of shape {self.shape} ({self.size} elements) "
                f"to {tuple(dims)}; expected a shape of {self.size} elements"
            )
        return attrs.evolve(self, shape=tuple(dims))

    def view(self, dtype: npt.DTypeLike) -> Tensor:
        """The same bytes read as another dtype, as ``numpy.ndarray.view``.

        The last axis is rescaled by the ratio of item sizes; raises
        ``ValueError`` when its byte length does not divide evenly (or, for a
        0-d tensor, when the item sizes differ).
        """
        new = as_dtype(dtype)
        if new.itemsize == self.dtype.itemsize:
            return attrs.evolve(self, dtype=new)
        if not self.shape:
            raise ValueError(
                f"a 0-d tensor of {self.dtype} can only be viewed as a dtype of "
                f"{self.dtype.itemsize} bytes, got {new} ({new.itemsize} bytes)"
            )
        last_bytes = self.shape[-1] * self.dtype.itemsize
        if last_bytes % new.itemsize:
            raise ValueError(
                f"the last axis holds {last_bytes} bytes, not a multiple of {new}'s "
                f"item size {new.itemsize}"
            )
        return attrs.evolve(self, dtype=new, shape=(*self.shape[:-1], last_bytes // new.itemsize))

    def host_array(self) -> npt.NDArray[np.generic]:
        """The numpy array that *is* this tensor's memory, for host storage only.

        Writes to the array change the tensor. Raises ``TypeError`` for a tensor
        whose memory is not host memory (use :meth:`numpy` for a copy).
        """
        if not isinstance(self.storage, HostStorage):
            raise TypeError(
                f"host_array() needs a tensor in host memory, got one on {self.device}; "
                "use tensor.numpy() for a host copy"
            )
        raw = self.storage.array[self.offset : self.offset + self.nbytes]
        array = raw.view(self.dtype).reshape(self.shape)
        if not self.storage.writable:
            array.flags.writeable = False
        return array

    def mapped(self) -> AbstractContextManager[npt.NDArray[np.generic]]:
        """``with t.mapped() as a:``, a numpy array that *is* the tensor's memory, zero-copy.

        For host-accessible memory (``MemoryKind.HOST_ACCESSIBLE``, storage with
        the :class:`~tensorferry.MappableStorage` capability) and for host
        memory (where it is :meth:`host_array`). The array is writable unless
        the tensor is read-only. While the scope is open, copies to or from the
        tensor's memory raise; after it, an array (or a view of it) that is
        still referenced keeps the memory mapped, so no array can ever point at
        memory the host lost access to. Raises ``TypeError`` for a tensor whose
        memory the host cannot address (use :meth:`numpy` for a copy), and what
        the backend raises for memory that is mapped already or released.
        """
        storage = self.storage
        if isinstance(storage, HostStorage):
            return contextlib.nullcontext(self.host_array())
        if not isinstance(storage, MappableStorage):
            raise TypeError(
                f"mapped() needs host-accessible memory, got a tensor on {self.device}; "
                "allocate it on a device's host-accessible memory (such as 'webgpu:0:host') "
                "or use tensor.numpy() for a copy"
            )
        return storage.map_range(
            self.offset, self.nbytes, self.shape, self.dtype, writable=storage.writable
        )

    def numpy(self, out: npt.NDArray[np.generic] | None = None) -> npt.NDArray[np.generic]:
        """A host copy of the tensor as a numpy array (written into ``out`` if given).

        ``out`` must be writable, C-contiguous and of the tensor's shape and dtype
        (:class:`InvalidArrayError` otherwise). Raises ``RuntimeError`` for a
        tensor that no environment owns.
        """
        if self.owner is None:
            if isinstance(self.storage, HostStorage):
                array = self.host_array()
                if out is None:
                    return array.copy()
                check_out_array(out, self.shape, self.dtype)
                np.copyto(out, array)
                return out
            raise RuntimeError("this tensor has no owning environment to copy it to the host")
        return self.owner.to_numpy(self, out)

    def to(self, device: str | Device, *, copy: bool = False) -> Tensor:
        """This tensor on ``device`` (``"webgpu"``, ``"cpu"``, a :class:`Device`...).

        Returns the tensor itself when it is on that device already, unless
        ``copy=True``; otherwise a new tensor of the same shape and dtype holding
        a copy. Raises ``RuntimeError`` for a tensor no environment owns, and
        what :meth:`tensorferry.Environment.device` and
        :meth:`tensorferry.Environment.copy_tensor` raise.
        """
        if self.owner is None:
            raise RuntimeError(
                "this tensor has no owning environment to copy it with; create tensors "
                "through an Environment (empty, from_numpy) to move them"
            )
        return self.owner.to_device(self, device, copy=copy)

    def to_device(self, device: str | Device, /, *, stream: object = None) -> Tensor:
        """The array API's spelling of :meth:`to`; ``stream`` must be ``None``
        (tensorferry's copies are complete when they return), ``ValueError`` otherwise."""
        if stream is not None:
            raise ValueError(f"stream must be None; tensorferry has no streams, got {stream!r}")
        return self.to(device)

    # numpy, buffer protocol, DLPack, pickle ---------------------------------

    def __array__(
        self, dtype: npt.DTypeLike | None = None, copy: bool | None = None
    ) -> npt.NDArray[Any]:
        """The tensor as a numpy array, for ``numpy.asarray(t)`` and ``numpy.array(t)``.

        A host tensor gives a view of its memory (no copy) unless ``copy=True``
        or a ``dtype`` conversion needs one; a device tensor is downloaded.
        With ``copy=False`` (numpy 2) a needed copy raises ``ValueError``, as
        numpy's protocol asks.
        """
        if not self.device.is_host and copy is False:
            raise ValueError(
                f"{self!r} is in {self.device} memory: a numpy array of it needs a download "
                "(a copy), but copy=False was asked"
            )
        if self.device.is_host:
            array: npt.NDArray[Any] = self.host_array()
            copied = False
        else:
            array, copied = self.numpy(), True
        if dtype is not None and np.dtype(dtype) != array.dtype:
            if copy is False:
                raise ValueError(
                    f"converting {self.dtype} to {np.dtype(dtype)} needs a copy, "
                    "but copy=False was asked"
                )
            return array.astype(dtype)
        return array.copy() if copy and not copied else array

    def __buffer__(self, flags: int, /) -> memoryview:
        """The buffer protocol (Python 3.12+; ``memoryview(t)``): the memory of a
        host tensor, without a copy.

        Raises ``BufferError`` for a tensor in device memory (which has no host
        address; use ``numpy.asarray(t)`` for a host copy) and, through
        ``memoryview``, for a writable buffer of a read-only tensor. On Python
        3.11 classes written in Python cannot offer buffers: use
        ``memoryview(t.host_array())`` there.
        """
        if not self.device.is_host:
            raise BufferError(
                f"{self!r} lives in {self.device} memory, which has no host address; "
                "use numpy.asarray(t) or t.numpy() for a host copy"
            )
        return self.host_array().data

    def __release_buffer__(self, view: memoryview, /) -> None:
        """Release a buffer from :meth:`__buffer__` (Python 3.12+)."""
        view.release()

    def __dlpack__(
        self,
        *,
        stream: object = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any:
        """The DLPack 1.x export: a capsule for ``numpy.from_dlpack``,
        ``torch.from_dlpack`` and other consumers.

        Host tensors are shared without a copy; a device tensor is copied to
        the host when asked for ``dl_device=(1, 0)``. See
        :func:`tensorferry.dlpack.export` for what it raises.
        """
        from tensorferry.dlpack import export

        return export(self, stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        """``(DLPack device type, index)``: ``(1, 0)`` for host memory, ``(15, i)``
        (``kDLWebGPU``) for a WebGPU device, as its backend declares."""
        from tensorferry.dlpack import dlpack_device

        return dlpack_device(self.device)

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        """Tensors cannot be pickled (nor deep-copied): raises ``TypeError``.

        A tensor is a view of memory an :class:`~tensorferry.Environment` owns
        (often device memory), which no other process or unpickled copy could
        own. Pickle ``numpy.asarray(t)`` and re-create the tensor with
        ``env.from_numpy(array, device)`` on the other side.
        """
        raise TypeError(
            f"cannot pickle or deep-copy {self!r}: a tensor is a view of memory that its "
            "Environment owns, which does not travel to another process; pickle "
            "numpy.asarray(tensor) instead and re-create it there with "
            "env.from_numpy(array, device)"
        )

    def __copy__(self) -> Tensor:
        """A tensor is an immutable view: ``copy.copy`` returns it unchanged."""
        return self

    def __repr__(self) -> str:
        return (
            f"Tensor(device={self.device}, shape={self.shape}, dtype={self.dtype}, "
            f"offset={self.offset})"
        )


def as_shape_with_wildcard(shape: SupportsIndex | Sequence[SupportsIndex]) -> tuple[int, ...]:
    """Like :func:`as_shape` but allows ``-1`` (for :meth:`Tensor.reshape`)."""
    result = tuple(operator.index(d) for d in _dims(shape))
    if any(d < -1 for d in result):
        raise ValueError(f"shape must not have negative dimensions, got {result}")
    return result


def check_out_array(
    out: npt.NDArray[np.generic], shape: tuple[int, ...], dtype: np.dtype[np.generic]
) -> None:
    """Raise :class:`InvalidArrayError` unless ``out`` can receive ``shape``/``dtype`` in place."""
    if not isinstance(out, np.ndarray):
        raise InvalidArrayError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise InvalidArrayError(
            f"out has shape {out.shape} and dtype {out.dtype}; expected shape {shape} "
            f"and dtype {dtype}"
        )
    if not out.flags.writeable:
        raise InvalidArrayError("out is read-only; expected a writable numpy array")
    if not out.flags.c_contiguous:
        raise InvalidArrayError(
            f"out is not C-contiguous (strides {out.strides}); expected a C-contiguous array"
        )
