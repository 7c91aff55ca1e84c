"""What one lone small copy costs in Python, layer by layer.

On the first WebGPU device of default memory: the best of 5 x 2000 calls of an
8-byte upload through ``Environment.copy_tensor``, the manager, the transfer and
its planning, beside raw wgpu-py's ``queue.write_buffer`` of the same bytes; and
the best of 5 x 300 4 KiB ``Tensor.numpy(out=...)`` downloads. Microseconds a call.
Run: ``python benchmarks/probes/call_costs.py`` (with an older tree first on
``PYTHONPATH`` to compare two versions).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import numpy as np

import tensorferry as tf
import tensorferry_webgpu as tw


def main() -> None:
    """Print one line per layer."""
    with tf.Environment() as env:
        device = next(
            d for d in env.devices() if d.backend == "webgpu" and d.memory is tf.MemoryKind.DEFAULT
        )
        value = np.array([[7]], np.int64)
        host = env.from_numpy(value, copy=False)
        target = env.empty((1, 1), np.int64, device)
        storage = target.storage
        assert isinstance(storage, tw.WebGPUStorage)
        buffer = storage.buffer
        assert buffer is not None
        queue = tw.backend_of(env).context(device).queue
        manager = env.data_transfer_manager
        transfer = manager.get_data_transfer(tf.HOST, device)
        assert transfer is not None
        out = np.empty(1024, np.float32)
        small = env.from_numpy(np.ones(1024, np.float32), device)
        print(f"# {device} {device.name}; best of 5, us a call")
        cases: dict[str, tuple[Callable[[], object], int]] = {
            "env.copy_tensor, 8 B up": (lambda: env.copy_tensor(host, target), 2000),
            "manager.copy_tensor": (lambda: manager.copy_tensor(host, target), 2000),
            "transfer.copy_tensors": (lambda: transfer.copy_tensors(((host, target),)), 2000),
            "raw queue.write_buffer": (
                lambda: queue.write_buffer(buffer, storage.base, value),
                2000,
            ),
            "4 KiB Tensor.numpy(out=)": (lambda: small.numpy(out=out), 300),
        }
        for name, (work, number) in cases.items():
            for _ in range(min(number, 500)):
                work()
            best = min(timeit.repeat(work, number=number, repeat=5)) / number
            print(f"{name:28} {best * 1e6:7.2f}", flush=True)
        queue.submit([])


if __name__ == "__main__":
    main()
