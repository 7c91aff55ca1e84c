"""The contract every measured path (tensorferry and each peer) implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs

from ._workload import HostData, Op, Workload

__all__ = ["Case", "FunctionCase", "PathUnavailableError", "TransferPath"]


class PathUnavailableError(RuntimeError):
    """A path cannot be measured here; the message says why and what would enable it."""


class Case(Protocol):
    """One path set up for one workload: its buffers exist, its data is in place."""

    def run(self) -> object:
        """Make the transfer once, and return only when its data has landed.

        The return value is released after the run's time is taken: a run that
        allocates its destination returns it, so freeing it is not timed.
        """
        ...

    def verify(self) -> None:
        """Poison the destination, run once, and compare it with the source.

        Raises :class:`~tensorferry.bench._workload.VerificationError` on a mismatch.
        """
        ...

    def close(self) -> None:
        """Release the buffers of this case."""
        ...


class TransferPath(Protocol):
    """One way of moving bytes (tensorferry, raw wgpu-py, numpy.copyto...), opened once.

    A path may also have a ``groups`` attribute, a frozenset of the workload groups
    it measures (``"sustained"``...; ``""`` for the sweep); without one it measures
    every workload whose op it describes.
    """

    @property
    def name(self) -> str:
        """Short name used in tables, JSON and ``--paths``."""
        ...

    def describe(self, op: Op) -> str | None:
        """What this path does for ``op``, or None when it does not measure it."""
        ...

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Allocate and fill what ``workload`` needs; raise on failure."""
        ...

    def close(self) -> None:
        """Release the path's device and everything it holds; idempotent."""
        ...


def _nothing() -> None:
    """Default :attr:`FunctionCase.close`: the case holds only garbage-collected memory."""


@attrs.frozen
class FunctionCase:
    """A :class:`Case` made of three callables, for paths whose cases are a few lines each."""

    run: Callable[[], object]
    verify: Callable[[], None]
    close: Callable[[], None] = _nothing
