"""What tensorferry's own Python adds to a decode step: the step through the public
API beside the same ops handed straight to the backend's ``run_batch``.

A decode step uploads three int64[1,1] inputs and downloads float32[1,128256]
logits (501 KiB). On the first adapter whose summary holds TOKEN (default: the
first), RUNS rounds (default 1000, after 50 unrecorded) of, interleaved:

* ``direct``: the four ops, planned once beforehand, each given to ``run_batch``
  (the backend's execution without the core, the transfer's planning or the
  wrapping of the output array);
* ``step``: three ``Environment.copy_tensor`` calls and ``logits.numpy(out=...)``
  (the bench's ``decode-step``);
* ``batched``: one ``Environment.copy_tensors`` of the inputs and
  ``logits.numpy(out=...)`` (the bench's ``decode-step-batched``).

Prints one line of p50s in microseconds. To compare two trees, run it in
alternating processes with each tree on PYTHONPATH; ``step - direct`` is the
Python that the core and the transfer add.

Run: ``python benchmarks/probes/decode_overhead.py [TOKEN] [RUNS]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from _median import webgpu_device
from decode_parts import Step

import tensorferry as tf
from tensorferry_webgpu import _batch, _transfer


def main() -> None:
    """Print the p50s."""
    args = sys.argv[1:]
    token = args[0] if args else ""
    runs = int(args[1]) if len(args) > 1 else 1000
    with tf.Environment() as env:
        step = Step(env, webgpu_device(env, token))
        step.step()  # makes the context and its staging
        out = env.from_numpy(step.out, copy=False)
        transfer = env.data_transfer_manager.get_data_transfer(
            step.hosts[0].device, step.devs[0].device
        )
        assert isinstance(transfer, _transfer.WebGPUDataTransfer)
        pairs = [*zip(step.hosts, step.devs, strict=True), (step.logits, out)]
        planned = [transfer._plan([pair])[0] for pair in pairs]

        def direct() -> None:
            for context, ops in planned:
                _batch.run_batch(context, ops)

        def batched() -> None:
            env.copy_tensors(step.hosts, step.devs)
            step.logits.numpy(out=step.out)

        variants: dict[str, Callable[[], None]] = {
            "direct": direct,
            "step": step.step,
            "batched": batched,
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        clock = time.perf_counter
        for round_ in range(runs + 50):
            for name, work in variants.items():
                start = clock()
                work()
                elapsed = clock() - start
                if round_ >= 50:
                    samples[name].append(elapsed)
        assert np.array_equal(step.out, step.logits.numpy()), "the download is wrong"
    print(
        "  ".join(f"{name} {np.percentile(v, 50) * 1e6:6.1f}" for name, v in samples.items()),
        flush=True,
    )


if __name__ == "__main__":
    main()
