"""Share tensors with torch and any DLPack library: zero-copy on the host, a copy
for device memory.

Run: ``python examples/torch_and_dlpack.py [DEVICE]`` (needs ``pip install torch``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import tensorferry as tf


def main(spec: str | None = None) -> None:
    """torch -> device -> torch (on ``spec`` if given), and zero-copy sharing of host memory."""
    with tf.Environment() as env:
        device = env.select_device() if spec is None else env.device(spec)
        source = torch.linspace(0, 1, 1000)
        on_device = env.from_dlpack(source, device=device)  # a copy on the device
        back = torch.from_dlpack(on_device.to("cpu"))  # a torch tensor again
        assert torch.equal(back, source)

        shared = env.from_dlpack(source)  # host memory: no copy
        source[0] = 42.0
        assert shared.host_array()[0] == 42.0
        view = torch.from_dlpack(shared)  # and back to torch, still no copy
        assert view.data_ptr() == source.data_ptr()

        print("DLPack device of the device tensor:", on_device.__dlpack_device__())
        print("numpy sees the same values:", np.asarray(on_device)[:3])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
