"""The memcpy floor: ``numpy.copyto`` of the same bytes, host to host."""

from __future__ import annotations

import numpy as np

from ._path import Case, FunctionCase
from ._workload import HostData, Op, Workload, poison

__all__ = ["NumpyPath"]


class NumpyPath:
    """``numpy.copyto`` between host arrays: what any host <-> device copy is bounded by
    on a machine whose device memory is host memory (lavapipe), and the reference for
    tensorferry's host -> host copies."""

    name = "numpy.copyto"

    def describe(self, op: Op) -> str | None:
        """Every op is one memcpy per tensor (a round trip two)."""
        if op is Op.ROUNDTRIP:
            return "two numpy.copyto (there and back)"
        if op.is_batch:
            return "a loop of numpy.copyto, one per tensor"
        return "numpy.copyto(destination, source)"

    def prepare(self, workload: Workload, data: HostData) -> Case:
        """Copies from ``data.source`` into ``data.destination`` (through a scratch
        array for a round trip)."""
        source, destination = data.source, data.destination
        if workload.op is Op.ROUNDTRIP:
            scratch = np.empty_like(source)

            def run() -> None:
                np.copyto(scratch, source)
                np.copyto(destination, scratch)

        elif workload.op.is_batch:
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
