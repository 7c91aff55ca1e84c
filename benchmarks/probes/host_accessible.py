"""Host-accessible memory end to end: the host's side of it as well as the copy.

On the best WebGPU device with host-accessible memory, for 256 MiB (GB/s, median
of 5 after one untimed run):

* host writes: ``numpy.copyto`` into ``t.mapped()`` (one thread);
* host reads: ``numpy.copyto`` out of ``t.mapped()`` (one thread);
* the copy host-accessible -> device and device -> host-accessible, each until
  a 4-byte download of the destination returns;
* for reference, a pageable upload and download of the same size.

Where the adapter places mappable buffers in device memory the host can see (a
discrete GPU's BAR), the copies run at device speed and the host's reads crawl:
this probe shows which. Run: ``python benchmarks/probes/host_accessible.py``.
"""

from __future__ import annotations

import numpy as np
from _median import median_seconds

import tensorferry as tf

SIZE = 256 << 20


def main() -> None:
    """Print one ``what GB/s`` line per measurement."""
    with tf.Environment() as env:
        device = env.device("webgpu")
        pinned = env.device(f"webgpu:{device.index}", memory=tf.MemoryKind.HOST_ACCESSIBLE)
        print(f"# {device} {device.name}; host-accessible {pinned}")
        data = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8)
        out = np.empty_like(data)
        on_device = env.from_numpy(data, device)
        host_side = env.empty(SIZE, np.uint8, pinned)
        landed = np.empty(4, np.uint8)

        def write() -> None:
            with host_side.mapped() as view:
                np.copyto(view, data)
                del view

        def read() -> None:
            with host_side.mapped() as view:
                np.copyto(out, view)
                del view

        def up() -> None:
            env.copy_tensor(host_side, on_device)
            on_device[0:4].numpy(out=landed)

        def down() -> None:
            env.copy_tensor(on_device, host_side)
            host_side[0:4].numpy(out=landed)

        source = env.from_numpy(data, copy=False)
        target = env.from_numpy(out, copy=False)

        def pageable_up() -> None:
            env.copy_tensor(source, on_device)
            on_device[0:4].numpy(out=landed)

        def pageable_down() -> None:
            env.copy_tensor(on_device, target)

        for name, work in (
            ("host writes into mapped host-accessible memory", write),
            ("host reads out of mapped host-accessible memory", read),
            ("host-accessible -> device copy", up),
            ("device -> host-accessible copy", down),
            ("pageable upload (numpy -> device)", pageable_up),
            ("pageable download (device -> numpy)", pageable_down),
        ):
            print(f"{name}: {SIZE / median_seconds(work, 5) / 1e9:.2f} GB/s", flush=True)
        read()
        down()
        read()
        assert np.array_equal(out, data), "host-accessible round trip changed the data"


if __name__ == "__main__":
    main()
