"""Where a decode step's time goes: tensorferry's calls beside the same native calls
made by hand, interleaved in one loop so that drift hits every variant alike.

A decode step uploads three int64[1,1] inputs and downloads float32[1,128256]
logits (501 KiB). On the first adapter whose summary holds the token given
(default: the first), p50 and p90 in microseconds over RUNS rounds of:

* ``tf step``: three ``Environment.copy_tensor`` calls, then ``logits.numpy(out=...)``
  (the bench's ``decode-step``), with the time inside the backend's lone-upload and
  lone-download functions split out (``inside``) from the rest (``outside``);
* ``tf down``: the download alone;
* ``hand step``: the same buffers and staging chunk, the steps of ``upload_alone`` and
  ``download_alone`` called directly, each phase timed: 3 x write_buffer, submit,
  request map, wait, copy out + unmap;
* the threads alive and a profile of 2000 steps;
* then, each in an environment of its own, the step and the download with the
  default ``spin_wait`` and with ``spin_wait=0`` (waits that block at once), twice
  each. (Two wgpu devices on one GPU slow each other's submits, so these are not
  interleaved.)

Run: ``python benchmarks/probes/decode_parts.py [TOKEN] [RUNS]``.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
from _median import webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _batch, _native, _waits

VOCAB = 128256
PHASES = ("write_buffer x3", "submit", "request map", "wait", "copy out+unmap", "total")


class Step:
    """One environment's decode-step tensors."""

    def __init__(self, env: tf.Environment, device: tf.Device) -> None:
        self.env = env
        self.inputs = [np.full((1, 1), i + 1, np.int64) for i in range(3)]
        self.hosts = [env.from_numpy(v, copy=False) for v in self.inputs]
        self.devs = [env.empty((1, 1), np.int64, device) for _ in self.inputs]
        self.logits = env.from_numpy(np.arange(VOCAB, dtype=np.float32).reshape(1, -1), device)
        self.out = np.empty((1, VOCAB), np.float32)

    def step(self) -> None:
        copy = self.env.copy_tensor
        for host, dev in zip(self.hosts, self.devs, strict=True):
            copy(host, dev)
        self.logits.numpy(out=self.out)

    def down(self) -> None:
        self.logits.numpy(out=self.out)


def _storage(tensor: tf.Tensor) -> tw.WebGPUStorage:
    storage = tensor.storage
    assert isinstance(storage, tw.WebGPUStorage)
    return storage


def by_hand(env: tf.Environment, device: tf.Device, step: Step) -> Callable[[], list[float]]:
    """The native calls tensorferry's lone paths make, on its own buffers, timed apart."""
    context = tw.backend_of(env).context(device)
    gpu, queue = context.gpu, context.queue
    storages = [_storage(d) for d in step.devs]
    targets = [(s.buffer, s.base + d.offset) for s, d in zip(storages, step.devs, strict=True)]
    source = _storage(step.logits)
    n = VOCAB * 4
    flat = step.out.reshape(-1).view(np.uint8)
    clock = time.perf_counter

    def run() -> list[float]:
        with context.lock:
            t0 = clock()
            for (buffer, offset), value in zip(targets, step.inputs, strict=True):
                queue.write_buffer(buffer, offset, value)
            t1 = clock()
            chunk = context.download_staging.acquire()
            _native.submit_copies(gpu, queue, [(source.buffer, source.base, chunk, 0, n)])
            t2 = clock()
            request = _waits.request_map(chunk, _native.MAP_READ, 0, n)
            t3 = clock()
            request.wait(gpu, lost_after=10)
            t4 = clock()
            _native.copy_out_and_unmap(chunk, 0, n, 0, flat)
            context.download_staging.give_back(chunk)
            t5 = clock()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0]

    return run


def _timed(inside: list[float], original: Callable[..., bool]) -> Callable[..., bool]:
    def wrapper(*args: object) -> bool:
        start = time.perf_counter()
        try:
            return original(*args)
        finally:
            inside[-1] += time.perf_counter() - start

    return wrapper


def _print(name: str, samples: list[float]) -> None:
    p50, p90 = np.percentile(samples, [50, 90]) * 1e6
    print(f"{name:32} {p50:7.1f} / {p90:7.1f}", flush=True)


def interleaved(token: str, runs: int) -> None:
    """tensorferry's step and download and the hand-made step, round after round."""
    with tf.Environment() as env:
        device = webgpu_device(env, token)
        print(f"# {device} {device.name}; p50 / p90 us over {runs} interleaved rounds")
        step = Step(env, device)
        hand = by_hand(env, device, step)
        inside: list[float] = []
        originals = (_batch.upload_alone, _batch.download_alone)
        wrapped = (_timed(inside, originals[0]), _timed(inside, originals[1]))
        names = ("tf step", "tf step inside", "tf step outside", "tf down")
        samples: dict[str, list[float]] = {name: [] for name in names}
        phases: list[list[float]] = [[] for _ in PHASES]
        clock = time.perf_counter
        for round_ in range(runs + 50):
            _batch.upload_alone, _batch.download_alone = wrapped
            inside.append(0.0)
            t0 = clock()
            step.step()
            t1 = clock()
            _batch.upload_alone, _batch.download_alone = originals
            t2 = clock()
            step.down()
            t3 = clock()
            parts = hand()
            if round_ >= 50:
                for name, value in zip(
                    names, (t1 - t0, inside[-1], t1 - t0 - inside[-1], t3 - t2), strict=True
                ):
                    samples[name].append(value)
                for i, value in enumerate(parts):
                    phases[i].append(value)
        assert np.array_equal(step.out, step.logits.numpy()), "the download is wrong"
        for name, values in samples.items():
            _print(name, values)
        for name, values in zip(PHASES, phases, strict=True):
            _print("hand " + name, values)
        print("# threads alive:", sorted(t.name for t in threading.enumerate()))
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(2000):
            step.step()
        profile.disable()
        print("# profile of 2000 tensorferry decode steps")
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


def blocks(token: str, runs: int, spin_wait: float) -> None:
    """tensorferry's decode step and its download alone, in an environment of its own
    with ``ContextOptions(spin_wait=...)``."""
    with tf.Environment(backends=[]) as env:
        env.register_backend("webgpu", tw.WebGPUBackend(tw.ContextOptions(spin_wait=spin_wait)))
        step = Step(env, webgpu_device(env, token))
        for name, work in (("step", step.step), ("down", step.down)):
            samples = []
            for round_ in range(runs + 50):
                start = time.perf_counter()
                work()
                if round_ >= 50:
                    samples.append(time.perf_counter() - start)
            _print(f"tf {name}, spin_wait {spin_wait}", samples)
        assert np.array_equal(step.out, step.logits.numpy()), "the download is wrong"


def main() -> None:
    """Print the tables."""
    args = sys.argv[1:]
    token = args[0] if args else ""
    runs = int(args[1]) if len(args) > 1 else 1000
    interleaved(token, runs)
    default = tw.ContextOptions().spin_wait
    for spin_wait in (default, 0.0, default, 0.0):
        blocks(token, runs, spin_wait)


if __name__ == "__main__":
    main()
