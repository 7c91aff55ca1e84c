"""The WebGPU backend of tensorferry, on wgpu-py: the reference accelerator backend.

Registered under the ``tensorferry.backends`` entry point ``webgpu``. Importing
this package is cheap; wgpu is imported when the backend is created. It uses
only tensorferry's public API, as a third-party backend would.

Beyond the backend contract it offers, for wgpu users::

    backend = env.backend("webgpu")
    device = adopt_device(env, my_gpu_device)          # copy with *your* device
    tensor = wrap_buffer(env, device, my_buffer, (n,), "float32")   # no copy
    buffer, offset = buffer_of(tensor)                  # the GPUBuffer behind a tensor
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, SupportsIndex

import numpy.typing as npt

from tensorferry import Device, Environment, Tensor
from tensorferry_webgpu._adapters import ADAPTERS_ENV, BACKEND_NAME, adapters
from tensorferry_webgpu._backend import WebGPUBackend, buffer_of, create_backend
from tensorferry_webgpu._buffers import CacheMode, PoolStats, StagingStats
from tensorferry_webgpu._context import Context
from tensorferry_webgpu._errors import WebGPUError
from tensorferry_webgpu._options import ContextOptions
from tensorferry_webgpu._storage import WebGPUStorage
from tensorferry_webgpu._transfer import WebGPUDataTransfer

if TYPE_CHECKING:
    import wgpu

__all__ = [
    "ADAPTERS_ENV",
    "BACKEND_NAME",
    "CacheMode",
    "Context",
    "ContextOptions",
    "PoolStats",
    "StagingStats",
    "WebGPUBackend",
    "WebGPUDataTransfer",
    "WebGPUError",
    "WebGPUStorage",
    "adapters",
    "adopt_device",
    "backend_of",
    "buffer_of",
    "create_backend",
    "wrap_buffer",
]


def backend_of(env: Environment) -> WebGPUBackend:
    """The environment's WebGPU backend (loading it if needed)."""
    backend = env.backend(BACKEND_NAME)
    assert isinstance(backend, WebGPUBackend)
    return backend


def adopt_device(env: Environment, gpu: wgpu.GPUDevice, *, label: str = "adopted") -> Device:
    """Register a caller's ``wgpu.GPUDevice`` as a new WebGPU device of ``env``."""
    return backend_of(env).adopt_device(gpu, label=label)


def wrap_buffer(
    env: Environment,
    device: Device,
    buffer: wgpu.GPUBuffer,
    shape: SupportsIndex | Sequence[SupportsIndex],
    dtype: npt.DTypeLike,
    *,
    offset: int = 0,
) -> Tensor:
    """A tensor of ``env`` over a caller's ``GPUBuffer`` (no copy), starting at byte ``offset``.

    Raises ``ValueError`` when the buffer is of another device, lacks
    COPY_SRC | COPY_DST usage, or is too small for ``shape`` and ``dtype``.
    """
    storage = backend_of(env).wrap_buffer(device, buffer, offset=offset)
    return env.wrap_storage(storage, shape, dtype)
