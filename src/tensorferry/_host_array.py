"""New host arrays for downloads (``Tensor.numpy()`` without ``out``).

A large ``np.empty`` starts 16 bytes past a page boundary (the C allocator's
chunk header). A backend's copy threads fill a large destination in parts
aligned to the array's start, so every part then straddles the 2 MiB huge
pages that numpy asks the kernel for, and neighbouring threads fault the same
huge page. Arrays of at least :data:`ALIGNED_MIN` bytes therefore start on a
2 MiB boundary, inside an allocation 2 MiB larger whose spare bytes are never
touched (so never backed by memory).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ALIGNED_MIN", "new_array"]

HUGE_PAGE = 2 << 20
ALIGNED_MIN = 4 << 20
"""Arrays of at least this many bytes start on a :data:`HUGE_PAGE` boundary
(numpy advises huge pages from 4 MiB on)."""


def new_array(shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    """A new, uninitialised, C-contiguous writable array of ``shape`` and ``dtype``;
    one of at least :data:`ALIGNED_MIN` bytes starts on a 2 MiB boundary (its
    ``base`` is then the larger allocation)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < ALIGNED_MIN:
        return np.empty(shape, dtype)
    spare = np.empty(nbytes + HUGE_PAGE, np.uint8)
    skip = -spare.ctypes.data % HUGE_PAGE
    return spare[skip : skip + nbytes].view(dtype).reshape(shape)
