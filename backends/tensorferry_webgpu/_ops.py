"""A batch's copies as data: one small immutable record per copy, planned by the transfer.

Records hold the storages, not only their buffers, so that a batch in flight
keeps its memory out of the pool even if the caller drops the tensors; an op
that the plan merged from neighbouring pairs (slab slots, rows of one array)
holds its first pieces' storages, and the batch's pairs hold the others.
Offsets are byte offsets into the storage's buffer. They are named tuples, not attrs
classes: a batch of 1000 small tensors builds 1000 of them, and a tuple is the
cheapest immutable record Python builds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tensorferry import HostStorage
from tensorferry_webgpu._storage import WebGPUStorage

__all__ = ["DeviceCopy", "Download", "Fill", "Op", "Upload"]

Bytes = npt.NDArray[np.uint8]


class Upload(NamedTuple):
    """``nbytes`` host bytes at byte ``first`` of the host storage's array ``flat`` into
    ``target`` at byte ``offset`` of its buffer (so that neighbouring rows of one array
    can be staged in one host copy, and a batch slices ``flat`` only where it needs a
    row alone: :attr:`host`)."""

    target: WebGPUStorage
    offset: int
    nbytes: int
    flat: Bytes
    first: int

    @property
    def host(self) -> Bytes:
        """The host bytes to upload (a view of ``flat``)."""
        return self.flat[self.first : self.first + self.nbytes]


class Download(NamedTuple):
    """``nbytes`` bytes at ``offset`` in ``source``'s buffer into byte ``first`` of the
    host storage ``target``, whose array is ``flat`` (so that neighbouring rows of one
    array can land in one host copy, and a batch slices ``flat`` only where it needs
    a row alone: :attr:`host`)."""

    source: WebGPUStorage
    offset: int
    nbytes: int
    target: HostStorage
    flat: Bytes
    first: int

    @property
    def host(self) -> Bytes:
        """The host bytes the download lands in (a view of ``flat``)."""
        return self.flat[self.first : self.first + self.nbytes]

    @property
    def address(self) -> int:
        """The host address the download lands at."""
        return self.target.address + self.first


class DeviceCopy(NamedTuple):
    """``nbytes`` bytes from ``source`` at ``src_offset`` to ``target`` at ``dst_offset``
    (one device; the two ranges may overlap)."""

    source: WebGPUStorage
    src_offset: int
    target: WebGPUStorage
    dst_offset: int
    nbytes: int


class Fill(NamedTuple):
    """``pattern`` repeated over ``nbytes`` bytes of ``target`` from ``offset``
    (``nbytes`` is a multiple of the pattern's length)."""

    target: WebGPUStorage
    offset: int
    nbytes: int
    pattern: bytes


Op = Upload | Download | DeviceCopy | Fill
"""Any op a batch executes."""
