"""List devices and choose one: by backend, type, name, policy or your own rule.

Run: ``python examples/choosing_a_device.py`` (``TENSORFERRY_DEVICE=webgpu:1`` changes
the default; ``python -m tensorferry -v devices`` shows the same choices with logs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import tensorferry as tf


def most_memory(devices: Sequence[tf.Device]) -> tf.Device:
    """A policy of our own: the device with the largest buffer size, host memory last."""

    def largest(device: tf.Device) -> int:
        size = device.property("max_buffer_size", 0)
        return size if isinstance(size, int) else 0

    return max(devices, key=largest)


def main() -> None:
    """Print every device and the choice of each policy."""
    logging.basicConfig(level=logging.INFO, format="log: %(name)s: %(message)s")
    with tf.Environment() as env:
        for device in env.devices():
            print(f"{device}: {device.type.name}, {device.name}")
        for name, reason in env.backend_errors.items():
            print(f"backend {name} did not load: {reason}")
        print("by backend:", env.device("webgpu") if "webgpu" in env.load_all() else "-")
        if env.devices(type=tf.DeviceType.GPU):
            print("by type:", env.device("gpu"))
        else:
            print("no hardware GPU here (software adapters are CPU devices)")
        for policy in tf.DevicePolicy:
            print(f"{policy.name}: {env.select_device(policy)}")
        print("own rule:", env.select_device(most_memory))


if __name__ == "__main__":
    main()
