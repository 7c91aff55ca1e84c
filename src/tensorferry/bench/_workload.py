"""What is measured: operations, workloads, sizes, and the host data they copy."""

from __future__ import annotations

import enum
import itertools
import re

import attrs
import numpy as np
import numpy.typing as npt

__all__ = [
    "BATCH_OPS",
    "POISON_BYTE",
    "SIZE_OPS",
    "HostData",
    "Op",
    "VerificationError",
    "Workload",
    "approx_size",
    "format_size",
    "parse_size",
    "poison",
]


class Op(enum.Enum):
    """One kind of transfer. Size ops copy one buffer; batch ops copy many small ones at once."""

    UPLOAD = "upload"
    DOWNLOAD = "download"
    D2D = "d2d"
    ROUNDTRIP = "roundtrip"
    H2H = "h2h"
    BATCH_UPLOAD = "batch-upload"
    BATCH_DOWNLOAD = "batch-download"
    BATCH_D2D = "batch-d2d"
    DOWNLOAD_NEW = "download-new"
    DECODE_STEP = "decode-step"
    DECODE_STEP_BATCHED = "decode-step-batched"
    MODEL_LOAD = "model-load"
    MODEL_LOAD_EXISTING = "model-load-existing"

    @property
    def is_batch(self) -> bool:
        """True for the ops that copy a batch of small tensors."""
        return self in BATCH_OPS

    @property
    def title(self) -> str:
        """What the op copies, for table headers."""
        return _TITLES[self]


SIZE_OPS = (Op.UPLOAD, Op.DOWNLOAD, Op.D2D, Op.ROUNDTRIP, Op.H2H)
"""Ops measured over the list of sizes, in report order."""

BATCH_OPS = (Op.BATCH_UPLOAD, Op.BATCH_DOWNLOAD, Op.BATCH_D2D)
"""Ops measured once, on a batch of ``count`` tensors of ``nbytes`` each."""

_TITLES = {
    Op.UPLOAD: "upload, host -> device",
    Op.DOWNLOAD: "download, device -> host",
    Op.D2D: "device -> device, one device",
    Op.ROUNDTRIP: "upload + download round trip (GB/s of the payload, one way)",
    Op.H2H: "host -> host (cpu -> cpu)",
    Op.BATCH_UPLOAD: "batch upload, host -> device",
    Op.BATCH_DOWNLOAD: "batch download, device -> host",
    Op.BATCH_D2D: "batch device -> device",
    Op.DOWNLOAD_NEW: "download into an array the call allocates (first-touch page faults included)",
    Op.DECODE_STEP: "decode step: three int64[1,1] uploads, one call each, then the logits down",
    Op.DECODE_STEP_BATCHED: "decode step: the three uploads in one batch call, then the logits",
    Op.MODEL_LOAD: "model load into new device tensors (allocation included)",
    Op.MODEL_LOAD_EXISTING: "model load into existing device tensors",
}


@attrs.frozen
class Workload:
    """``count`` tensors of ``nbytes`` bytes each, copied by one ``op``.

    ``group`` names the workload a case belongs to when it is not the size
    sweep or the batch (``"latency"``, ``"sustained"``...), so a 4 KiB upload
    timed for its latency is a case apart from the sweep's. ``parts`` splits
    one tensor of ``nbytes`` into tensors of those sizes (a model's weights):
    its host data is one array, each tensor a view of it.
    """

    op: Op
    nbytes: int
    count: int = 1
    group: str = ""
    parts: tuple[int, ...] = ()

    @property
    def total_bytes(self) -> int:
        """Bytes moved one way by one run of the workload."""
        return self.nbytes * self.count

    @property
    def label(self) -> str:
        """``"64 MiB"``, ``"1000 x 1 KiB"`` or ``"300 tensors, 4 KiB to 64 MiB (1.93 GiB)"``."""
        if self.parts:
            return (
                f"{len(self.parts)} tensors, {approx_size(min(self.parts))} to "
                f"{approx_size(max(self.parts))} ({approx_size(self.nbytes)})"
            )
        size = format_size(self.nbytes)
        return size if self.count == 1 else f"{self.count} x {size}"

    def split(self, array: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.uint8]]:
        """Views of ``array`` (one row of the workload's host data), one per part."""
        ends = np.cumsum(self.parts).tolist()
        return [array[end - size : end] for size, end in zip(self.parts, ends, strict=True)]


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse ``"4096"``, ``"4K"``, ``"64MiB"``, ``"1G"`` (binary units) to a byte count.

    Raises ``ValueError`` for anything else, and for sizes that are not a
    positive multiple of 4 (WebGPU copies whole 4-byte words).
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"cannot parse size {text!r}; expected e.g. 4096, 4K, 64MiB or 1G")
    value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0 or value % 4:
        raise ValueError(f"size {text!r} is {value} bytes; expected a positive multiple of 4")
    return value


def format_size(nbytes: int) -> str:
    """``4096`` -> ``"4 KiB"``; sizes that are not a whole number of units stay in bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor} {unit}"
    return f"{nbytes} B"


def approx_size(nbytes: int) -> str:
    """``4352`` -> ``"4.25 KiB"``: about three significant figures in the largest unit
    that fits."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor:
            value = nbytes / factor
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{nbytes} B"


_salts = itertools.count(1)


@attrs.frozen(eq=False)
class HostData:
    """The host arrays of one workload, shared by every path to keep memory bounded.

    ``source`` holds a position-dependent pattern (an offset or truncated copy
    does not match it); ``destination`` is where downloads land. Both have
    shape ``(count, nbytes)``, so row ``i`` is tensor ``i`` of a batch.
    """

    source: npt.NDArray[np.uint8]
    destination: npt.NDArray[np.uint8]

    @classmethod
    def for_workload(cls, workload: Workload) -> HostData:
        """Fresh arrays for ``workload``; ``destination`` starts out poisoned.

        Each call salts the pattern differently, so memory left over from an
        earlier workload never passes for a copy of this one.
        """
        salt = np.uint32(next(_salts) * 0x9E3779B9 & 0xFFFFFFFF)
        words = np.arange(workload.total_bytes // 4, dtype=np.uint32)
        words += salt
        words *= np.uint32(2654435761)  # a multiplicative hash: no two nearby words agree
        source = words.view(np.uint8).reshape(workload.count, workload.nbytes)
        destination = np.empty_like(source)
        poison(destination)
        return cls(source, destination)

    def check(self, received: npt.NDArray[np.uint8], what: str) -> None:
        """Raise ``VerificationError`` unless ``received`` equals :attr:`source` byte for byte."""
        expected = self.source
        got = np.asarray(received, dtype=np.uint8).reshape(expected.shape)
        if not np.array_equal(got, expected):
            wrong = np.flatnonzero(got.reshape(-1) != expected.reshape(-1))
            raise VerificationError(
                f"{what}: {wrong.size} of {expected.size} bytes differ from the source, "
                f"first at byte {int(wrong[0])}"
            )


POISON_BYTE = 0xCD
"""What destinations are filled with before a verification run."""


def poison(array: npt.NDArray[np.uint8]) -> None:
    """Overwrite ``array`` with :data:`POISON_BYTE`, so a copy that writes nothing is caught."""
    array.fill(POISON_BYTE)


class VerificationError(AssertionError):
    """A transfer returned data that differs from what it was given."""
