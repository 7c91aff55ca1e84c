"""Does another GPU user in the process slow tensorferry's decode step?

The bench runs tensorferry beside raw wgpu-py (a second wgpu device on the same
adapter) and torch (a CUDA context). Each condition here is a process of its
own, run ROUNDS times, the conditions taking turns:

* ``alone``: tensorferry only;
* ``+wgpu``: a second wgpu device on the same adapter, running the raw
  wgpu-py decode step (three ``write_buffer``, one ``read_buffer``) in blocks
  between tensorferry's, as the bench does;
* ``+torch``: torch's CUDA decode step in blocks between tensorferry's;
* ``+both``: both.

Timed: tensorferry's step (three ``copy_tensor``, then ``logits.numpy(out=)``),
300 runs in blocks of 50 each led by 2 untimed runs, p50/p99 us; the peers'
steps p50 too.

Run: ``python benchmarks/probes/decode_peers.py [ROUNDS]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

VOCAB = 128256
BLOCKS, BLOCK, LEAD = 6, 50, 2
CONDITIONS = ("alone", "+wgpu", "+torch", "+both")


def _timed(step: Callable[[], object], into: list[float]) -> None:
    for _ in range(LEAD):
        step()
    for _ in range(BLOCK):
        start = time.perf_counter()
        step()
        into.append(time.perf_counter() - start)


def _tensorferry_step() -> Callable[[], None]:
    import tensorferry as tf

    env = tf.Environment()
    device = env.device("webgpu")
    hosts = [env.from_numpy(np.full((1, 1), i + 1, np.int64), copy=False) for i in range(3)]
    devs = [env.empty((1, 1), np.int64, device) for _ in hosts]
    logits = env.from_numpy(np.arange(VOCAB, dtype=np.float32).reshape(1, -1), device)
    out = np.empty((1, VOCAB), np.float32)
    pairs = list(zip(hosts, devs, strict=True))

    def step() -> None:
        for host, dev in pairs:
            env.copy_tensor(host, dev)
        logits.numpy(out=out)

    step()
    assert out[0, -1] == VOCAB - 1
    assert devs[2].numpy()[0, 0] == 3
    _tensorferry_step.device_name = device.name  # type: ignore[attr-defined]
    return step


def _wgpu_step(device_name: str) -> Callable[[], None]:
    import wgpu

    import tensorferry_webgpu as tw

    adapter = next(a for a in tw.adapters() if device_name in a.summary)
    gpu = adapter.request_device_sync()
    usage = wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
    inputs = [np.full((1, 1), i + 1, np.int64) for i in range(3)]
    buffers = [gpu.create_buffer(size=8, usage=usage) for _ in inputs]
    logits = gpu.create_buffer(size=4 * VOCAB, usage=usage)
    gpu.queue.write_buffer(logits, 0, np.arange(VOCAB, dtype=np.float32))

    def step() -> None:
        for buffer, value in zip(buffers, inputs, strict=True):
            gpu.queue.write_buffer(buffer, 0, value)
        gpu.queue.read_buffer(logits)

    return step


def _torch_step() -> Callable[[], None]:
    import torch

    inputs = [torch.full((1, 1), i + 1, dtype=torch.int64) for i in range(3)]
    devs = [torch.empty((1, 1), dtype=torch.int64, device="cuda") for _ in inputs]
    logits = torch.arange(VOCAB, dtype=torch.float32, device="cuda").reshape(1, -1)
    out = torch.empty((1, VOCAB), dtype=torch.float32)

    def step() -> None:
        for host, dev in zip(inputs, devs, strict=True):
            dev.copy_(host)
        out.copy_(logits)
        torch.cuda.synchronize()

    return step


def child(condition: str) -> None:
    """Measure one condition; print one JSON line."""
    ours = _tensorferry_step()
    peers: dict[str, Callable[[], None]] = {}
    if condition in ("+wgpu", "+both"):
        peers["wgpu"] = _wgpu_step(_tensorferry_step.device_name)  # type: ignore[attr-defined]
    if condition in ("+torch", "+both"):
        peers["torch"] = _torch_step()
    times: dict[str, list[float]] = {"tensorferry": [], **{name: [] for name in peers}}
    for _ in range(BLOCKS):
        _timed(ours, times["tensorferry"])
        for name, step in peers.items():
            _timed(step, times[name])
    print(
        json.dumps(
            {
                name: [float(np.percentile(v, 50) * 1e6), float(np.percentile(v, 99) * 1e6)]
                for name, v in times.items()
            }
        )
    )


def main() -> None:
    """Run every condition ROUNDS times, each in a process of its own; print a table."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(f"# decode step, p50 / p99 us; {rounds} rounds of processes, conditions taking turns")
    for round_ in range(rounds):
        for condition in CONDITIONS:
            done = subprocess.run(
                [sys.executable, __file__, "--child", condition],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                print(f"{condition}: failed ({done.returncode}): {done.stderr[-400:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            shown = "; ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in result.items())
            print(f"round {round_} {condition:<7} {shown}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
