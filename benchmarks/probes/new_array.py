"""A download into memory the call allocates: where ``Tensor.numpy()``'s time goes.

On the first WebGPU device, for SIZE MiB (default 1024), GB/s as the median of
5 runs after one untimed run:

* ``Tensor.numpy()`` (a new numpy array each run, page faults included);
* ``Tensor.numpy(out=...)`` into an array touched before;
* one copy into a MAP_READ buffer made for the run, then mapped (the array
  could be the mapping itself: no host copy, no page faults); the buffer's
  creation timed apart;
* the same into one MAP_READ buffer reused every run;
* one thread's reads out of that mapping and out of an ordinary array.

Run: ``python benchmarks/probes/new_array.py [SIZE_MIB]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import wgpu
from _median import median_seconds

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _native, _waits


def main() -> None:
    """Print one ``what: GB/s`` line per measurement."""
    nbytes = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    usage = wgpu.BufferUsage
    with tf.Environment() as env:
        device = env.device("webgpu")
        gpu = tw.backend_of(env).context(device).gpu
        data = np.random.default_rng(0).integers(0, 255, nbytes, np.uint8)
        tensor = env.from_numpy(data, device)
        source = gpu.create_buffer(
            size=nbytes, usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST
        )
        gpu.queue.write_buffer(source, 0, data)
        env.synchronize(device)
        touched = np.ones(nbytes, np.uint8)
        print(f"# {device} {device.name}; {nbytes >> 20} MiB", flush=True)

        def rate(seconds: float) -> str:
            return f"{nbytes / seconds / 1e9:.2f} GB/s"

        def download_into(readback: wgpu.GPUBuffer) -> np.ndarray:
            encoder = gpu.create_command_encoder()
            encoder.copy_buffer_to_buffer(source, 0, readback, 0, nbytes)
            gpu.queue.submit([encoder.finish()])
            _waits.request_map(readback, _native.MAP_READ, 0, nbytes).wait(gpu, lost_after=30)
            return _native.mapped_array(readback, 0, nbytes)

        creations: list[float] = []

        def fresh_mapping() -> None:
            start = time.perf_counter()
            readback = gpu.create_buffer(size=nbytes, usage=usage.MAP_READ | usage.COPY_DST)
            creations.append(time.perf_counter() - start)
            view = download_into(readback)
            del view
            readback.unmap()
            readback.destroy()

        kept = gpu.create_buffer(size=nbytes, usage=usage.MAP_READ | usage.COPY_DST)

        def reused_mapping() -> None:
            view = download_into(kept)
            del view
            kept.unmap()

        for name, work in (
            ("Tensor.numpy() (new array)", tensor.numpy),
            ("Tensor.numpy(out=touched)", lambda: tensor.numpy(out=touched)),
            ("copy + map into a new MAP_READ buffer", fresh_mapping),
            ("copy + map into a reused MAP_READ buffer", reused_mapping),
        ):
            print(f"{name}: {rate(median_seconds(work, 5))}", flush=True)
        print(f"  (creating the MAP_READ buffer: median {np.median(creations) * 1e3:.2f} ms)")

        def reads(source: np.ndarray) -> str:
            return rate(median_seconds(lambda: np.copyto(touched, source), 3))

        mapping = download_into(kept)
        assert np.array_equal(mapping[:: 1 << 20], data[:: 1 << 20])
        print(f"one thread reads the mapping: {reads(mapping)}")
        print(f"one thread reads an array: {reads(data)}")
        del mapping
        kept.unmap()


if __name__ == "__main__":
    main()
