"""Move a numpy array to the best device and back, in one batch and with views.

Run: ``python examples/numpy_round_trip.py [DEVICE]`` (default: ``env.select_device()``;
try ``webgpu`` or ``webgpu:1``).
"""

from __future__ import annotations

import sys

import numpy as np

import tensorferry as tf


def main(spec: str | None = None) -> None:
    """Upload, copy on the device, download, and check every byte (on ``spec`` if given)."""
    data = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
    with tf.Environment() as env:
        device = (
            env.select_device() if spec is None else env.device(spec)
        )  # a GPU if there is one, else host memory
        print(f"device: {device} ({device.name})")
        on_device = env.from_numpy(data, device)
        copy = env.empty(data.shape, data.dtype, device)
        env.copy_tensor(on_device, copy)
        # One batch: swap the two halves of the rows.
        swapped = env.empty(data.shape, data.dtype, device)
        env.copy_tensors([copy[:128], copy[128:]], [swapped[128:], swapped[:128]])
        result = np.asarray(swapped)  # a download
        np.testing.assert_array_equal(result[:128], data[128:])
        np.testing.assert_array_equal(result[128:], data[:128])
        out = np.empty_like(data)
        copy.numpy(out=out)  # download into an array you own
        np.testing.assert_array_equal(out, data)
        print(f"round trip of {data.nbytes} bytes: identical")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
