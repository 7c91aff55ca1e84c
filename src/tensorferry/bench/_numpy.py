"""The memcpy floor: ``numpy.copyto`` of the same bytes, host to host, on one thread
and on one thread per core."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from .._host_array import new_array
from ._path import Case, FunctionCase
from ._workload import HostData, Op, Workload, poison

__all__ = ["NumpyPath", "ThreadedNumpyPath"]


class NumpyPath:
    """``numpy.copyto`` between host arrays: what any host <-> device copy is bounded by
    on a machine whose device memory is host memory (lavapipe), and the reference for
    tensorferry's host -> host copies."""

    name = "numpy.copyto"

    def describe(self, op: Op) -> str | None:
        """Every op is one memcpy per tensor (a round trip two); a decode step is not
        a copy of host memory, so it is not measured."""
        match op:
            case Op.DECODE_STEP | Op.DECODE_STEP_BATCHED:
                return None
            case Op.ROUNDTRIP:
                return "two numpy.copyto (there and back)"
            case Op.DOWNLOAD_NEW:
                return "ndarray.copy() (a new array each run)"
            case Op.MODEL_LOAD:
                return "ndarray.copy() of each tensor"
            case Op.MODEL_LOAD_EXISTING:
                return "numpy.copyto of each tensor"
        if op.is_batch:
            return "a loop of numpy.copyto, one per tensor"
        return "numpy.copyto(destination, source)"

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Copies from ``data.source`` into ``data.destination`` (through a scratch
        array for a round trip), or into new arrays."""
        source, destination = data.source, data.destination
        if workload.op is Op.DOWNLOAD_NEW:
            return FunctionCase(
                run=source.copy, verify=lambda: data.check(source.copy(), self.name)
            )
        if workload.op is Op.MODEL_LOAD:
            views = workload.split(source[0])

            def copies() -> list[npt.NDArray[np.uint8]]:
                return [view.copy() for view in views]

            return FunctionCase(
                run=copies, verify=lambda: data.check(np.concatenate(copies()), self.name)
            )
        if workload.op is Op.ROUNDTRIP:
            scratch = np.empty_like(source)

            def run() -> None:
                np.copyto(scratch, source)
                np.copyto(destination, scratch)

        elif workload.op.is_batch or workload.op is Op.MODEL_LOAD_EXISTING:
            if workload.parts:
                pairs = list(
                    zip(workload.split(source[0]), workload.split(destination[0]), strict=True)
                )
            else:
                pairs = list(zip(source, destination, strict=True))

            def run() -> None:
                for row_source, row_destination in pairs:
                    np.copyto(row_destination, row_source)

        else:

            def run() -> None:
                np.copyto(destination, source)

        def verify() -> None:
            poison(destination)
            run()
            data.check(destination, self.name)

        return FunctionCase(run=run, verify=verify)

    def close(self) -> None:
        """Nothing to release."""


PART = 4 << 20
"""The bytes one thread of :class:`ThreadedNumpyPath` copies at a time."""


class ThreadedNumpyPath:
    """The host's own copy rate, the reference for every transfer through pageable
    memory: ``numpy.copyto`` in :data:`PART`-byte parts on one thread per core, and
    for a download into a new array a new array allocated as ``Tensor.numpy()``
    allocates it (2 MiB-aligned, numpy's huge-page advice), filled that way.

    A download into a new array makes the same writes into new memory, after the
    kernel has zeroed each page, that this path makes with no device involved; it
    reads a staging chunk the device has just written (which may sit in the host's
    last-level cache) where this path reads its source from memory, so the two are
    close but this is not a strict bound."""

    name = "numpy.copyto-threads"
    groups = frozenset({"sustained"})
    """Only the GiB-sized ``sustained`` workload, whose targets it is printed beside."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bench-host-copy")

    def describe(self, op: Op) -> str | None:
        """Single host copies only (upload, download, download-new), in the
        ``sustained`` workload (:attr:`groups`): the host's own rate for the copy
        threads' work. Device copies, round trips, batches, decode steps and model
        loads are not measured."""
        how = f"numpy.copyto in {PART >> 20} MiB parts on {self.threads} threads"
        match op:
            case Op.DOWNLOAD_NEW:
                return f"a new array as Tensor.numpy() allocates it, filled by {how}"
            case Op.UPLOAD | Op.DOWNLOAD:
                return how
        return None

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Copies from ``data.source`` into ``data.destination``, or into new arrays."""
        if self.describe(workload.op) is None:
            raise ValueError(f"{self.name} does not measure {workload.op}")
        source = data.source[0]
        if workload.op is Op.DOWNLOAD_NEW:

            def fresh() -> npt.NDArray[np.uint8]:
                return self.copy(new_array(source.shape, source.dtype).view(np.uint8), source)

            return FunctionCase(run=fresh, verify=lambda: data.check(fresh(), self.name))
        destination = data.destination[0]

        def verify() -> None:
            poison(data.destination)
            self.copy(destination, source)
            data.check(data.destination, self.name)

        return FunctionCase(run=lambda: self.copy(destination, source), verify=verify)

    def copy(
        self, destination: npt.NDArray[np.uint8], source: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.uint8]:
        """``destination[...] = source`` in parts over the pool; returns ``destination``."""
        n = source.nbytes
        if n <= PART:
            np.copyto(destination, source)
            return destination
        parts = self._pool.map(
            lambda i: np.copyto(destination[i : i + PART], source[i : i + PART]), range(0, n, PART)
        )
        for _ in parts:  # re-raises a part's error
            pass
        return destination

    def close(self) -> None:
        """Stop the pool's threads."""
        self._pool.shutdown()
