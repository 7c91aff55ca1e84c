"""A batch's copies as data: one small immutable record per copy, planned by the transfer.

Records hold the storages, not only their buffers, so that a batch in flight
keeps its memory out of the pool even if the caller drops the tensors. Offsets
are byte offsets into the storage's buffer. They are named tuples, not attrs
classes: a batch of 1000 small tensors builds 1000 of them, and a tuple is the
cheapest immutable record Python builds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tensorferry_webgpu._storage import WebGPUStorage

__all__ = ["DeviceCopy", "Download", "Fill", "Op", "Upload"]

Bytes = npt.NDArray[np.uint8]


class Upload(NamedTuple):
    """Host bytes ``host`` into ``target`` at byte ``offset`` of its buffer."""

    host: Bytes
    target: WebGPUStorage
    offset: int


class Download(NamedTuple):
    """Bytes at ``offset`` in ``source``'s buffer into host bytes ``host``, which start
    at host ``address`` and at byte ``first`` of their host storage's array ``flat``
    (so that neighbouring rows of one array can land in one host copy)."""

    source: WebGPUStorage
    offset: int
    host: Bytes
    address: int
    flat: Bytes
    first: int


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
