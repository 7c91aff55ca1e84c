"""The memcpy floor: ``numpy.copyto`` of the same bytes, host to host."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._path import Case, FunctionCase
from ._workload import HostData, Op, Workload, poison

__all__ = ["NumpyPath"]


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
