"""Routing through host memory, exercised with the backend's own transfers.

A backend whose transfer connects all its devices directly never sees the
manager route a copy. Here the suite registers a *filtered view* of each of the
backend's transfers, claiming only pairs with a host side, so every copy between
two of the backend's devices (even on one device) goes device -> host -> device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import tensorferry as tf
from tensorferry.conformance._support import assert_tensor_bytes, random_array


class HostSideOnly:
    """An :class:`tensorferry.IDataTransfer` that forwards to ``inner`` but claims
    only the pairs of ``inner`` that have a host side."""

    def __init__(self, inner: tf.IDataTransfer) -> None:
        self.inner = inner

    def can_copy(self, src_device: tf.Device, dst_device: tf.Device) -> bool:
        """``inner``'s answer, for pairs with a host side only."""
        return (src_device.is_host or dst_device.is_host) and self.inner.can_copy(
            src_device, dst_device
        )

    def copy_tensors(self, pairs: Sequence[tf.CopyPair]) -> None:
        """Forward to ``inner``."""
        self.inner.copy_tensors(pairs)

    def close(self) -> None:
        """Leave ``inner`` to its backend."""


def test_copies_between_devices_routed_through_host(
    tensorferry_new_env: Callable[[], tf.Environment], tensorferry_backend: str
) -> None:
    """With only host-side pairs registered, copies between any two devices of the
    backend (one device to itself included) go through host memory, in a batch
    with dependencies, and arrive exactly."""
    env = tensorferry_new_env()
    devices = list(env.backend(tensorferry_backend).devices())
    manager = env.data_transfer_manager
    for transfer in env.backend(tensorferry_backend).data_transfers():
        if any(t is transfer for t in manager.data_transfers):
            manager.unregister_data_transfer(transfer, wait=True)
        manager.register_data_transfer(HostSideOnly(transfer))
    for src_device in devices:
        for dst_device in devices:
            if src_device.is_host or dst_device.is_host:
                continue
            assert isinstance(manager.get_data_transfer(src_device, dst_device), type(None)), (
                f"{src_device}->{dst_device} still has a direct transfer"
            )
            data = random_array((5, 7), np.float32, seed=700)
            src = env.from_numpy(data, src_device)
            dst = env.zeros(data.shape, data.dtype, dst_device)
            back = env.zeros(data.shape, data.dtype, src_device)
            env.copy_tensors([src, dst[1:3]], [dst, back[3:5]])  # the second reads the first
            expected = np.zeros_like(data)
            expected[3:5] = data[1:3]
            assert_tensor_bytes(dst, data, f"{src_device}->{dst_device} routed")
            assert_tensor_bytes(back, expected, f"{dst_device}->{src_device} routed")
