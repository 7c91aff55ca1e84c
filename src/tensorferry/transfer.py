"""The data-transfer contract: what a backend implements to move tensors.

The counterpart of ONNX Runtime's ``IDataTransfer``. A transfer claims the
device pairs it can copy between (``can_copy``) and copies a batch of
``(src, dst)`` pairs (``copy_tensors``). Callers normally go through
:class:`tensorferry.DataTransferManager`, which validates every pair, so a
transfer may assume that each pair it receives has equal shapes and dtypes, a
writable destination, and devices it said it can copy between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from tensorferry.device import Device
    from tensorferry.tensor import Tensor

__all__ = [
    "AsyncDataTransfer",
    "CompletedTransfer",
    "CopyPair",
    "IDataTransfer",
    "TransferHandle",
]

CopyPair: TypeAlias = "tuple[Tensor, Tensor]"
"""A ``(source, destination)`` pair of tensors of equal shape and dtype."""


@runtime_checkable
class IDataTransfer(Protocol):
    """Copies tensors between the devices it claims.

    Contract for implementers:

    * ``can_copy`` is pure and fast; it only claims pairs where every
      non-host side is a device of the implementer's own backend.
    * ``copy_tensors`` has synchronous semantics: when it returns, every
      destination holds its data. The result equals copying the pairs one after
      another in order, even when views in the batch overlap. A backend submits
      one batch as one unit of device work.
    * Only the bytes of each destination view change, whatever its offset or size.
    * It is safe to call from several threads at once.
    * ``close`` releases what the transfer holds; it is idempotent, and later
      copies raise :class:`tensorferry.errors.ClosedError`.
    """

    def can_copy(self, src_device: Device, dst_device: Device) -> bool:
        """Whether this transfer copies from ``src_device`` to ``dst_device``."""
        ...

    def copy_tensors(self, pairs: Sequence[CopyPair]) -> None:
        """Copy each pair's source into its destination, in order."""
        ...

    def close(self) -> None:
        """Release the transfer's resources; idempotent."""
        ...


@runtime_checkable
class TransferHandle(Protocol):
    """A batch of copies in flight, returned by the asynchronous copy calls."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every copy has landed; raise what the copy raised.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        ...

    def done(self) -> bool:
        """True once every copy has landed (``wait`` then returns at once)."""
        ...


@runtime_checkable
class AsyncDataTransfer(IDataTransfer, Protocol):
    """An optional capability: a transfer that can start a batch and return at once."""

    def copy_tensors_async(self, pairs: Sequence[CopyPair]) -> TransferHandle:
        """Start copying the pairs; sources must stay unchanged and destinations
        unread until the returned handle's ``wait()`` returns."""
        ...


class CompletedTransfer:
    """A handle for work that already finished (or failed) when it was returned."""

    def __init__(self, error: BaseException | None = None) -> None:
        self._error = error

    def wait(self, timeout: float | None = None) -> None:
        """Return at once, or raise the error the work ended with."""
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        """Always True."""
        return True
