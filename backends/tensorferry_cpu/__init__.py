"""The host-memory backend of tensorferry: device ``cpu``, memory held by numpy.

Registered under the ``tensorferry.backends`` entry point ``cpu``. It uses only
tensorferry's public API, as a third-party backend would.
"""

from tensorferry_cpu._backend import CpuBackend, CpuDataTransfer, create_backend

__all__ = ["CpuBackend", "CpuDataTransfer", "create_backend"]
