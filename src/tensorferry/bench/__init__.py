"""tensorferry's benchmark harness: tensorferry's transfers next to their peers.

Run it as ``tensorferry bench`` (``python -m tensorferry bench``) or
``python -m tensorferry.bench``; ``--help`` lists the options. It measures, in
one process, uploads, downloads, device-to-device copies, round trips,
host-to-host copies over a range of sizes and batches of small tensors, for
tensorferry and, where available, raw wgpu-py, ``numpy.copyto``, torch CUDA
(pageable and pinned) and ONNX Runtime's WebGPU EP. It prints GB/s tables,
ratios against every peer and the performance targets for the kind of device,
writes JSON and draws a PNG plot (with matplotlib); tqdm adds a progress bar.
Benchmarks are not tests: nothing here fails on a slow number, only on a wrong copy.
"""

from ._cli import build_parser, main

__all__ = ["build_parser", "main"]
