"""Why transfers of 256 KiB to 16 MiB run at a third of what large ones do.

Part 1, raw wgpu on the first adapter whose summary holds TOKEN: for a 16 MiB
``MAP_READ`` and a 16 MiB ``MAP_WRITE`` staging buffer, each map cycle's host
copy of N bytes out of (into) the mapping, timed twice over the same mapping
(``pass 1`` pays any page faults of a fresh CPU mapping, ``pass 2`` does not),
on one thread and split over 4; beside the same copy between two touched host
arrays, and ``queue.write_buffer`` of N bytes (wgpu-native's own single-thread
copy into its staging). Median microseconds of ROUNDS cycles.

Part 2, tensorferry: upload until landed (``copy_tensor`` + ``synchronize``) and
``Tensor.numpy(out=...)`` p50 in microseconds at each size, for contexts with
``ContextOptions`` given as ``NAME=field:value,...`` arguments (default: the
defaults, and lone uploads staged from 256 KiB); each context in an environment
of its own, the contexts taking turns twice.

Run: ``python benchmarks/probes/mid_sizes.py [TOKEN] [ROUNDS] [NAME=field:value,...]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import wgpu
from _median import adapter_named, webgpu_device

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu import _native

Bytes = npt.NDArray[np.uint8]
SIZES = (256 << 10, 1 << 20, 4 << 20, 8 << 20, 12 << 20, 16 << 20)
CHUNK = 16 << 20
SPLIT = 4


def _us(samples: list[float]) -> str:
    return f"{np.median(samples) * 1e6:8.1f}"


def _split_copy(pool: ThreadPoolExecutor, dst: Bytes, src: Bytes) -> None:
    step = -(-dst.nbytes // SPLIT)
    parts = [(dst[i : i + step], src[i : i + step]) for i in range(0, dst.nbytes, step)]
    for future in [pool.submit(np.copyto, d, s) for d, s in parts]:
        future.result()


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _map_cycle(
    buffer: wgpu.GPUBuffer, mode: int, copy: Callable[[Bytes], None], n: int
) -> list[float]:
    """Map ``n`` bytes of ``buffer``, time ``copy(mapped)`` twice, unmap."""
    buffer.map_sync(mode, 0, n)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        copy(_native.mapped_array(buffer, 0, n))  # the view dies before the unmap
        times.append(time.perf_counter() - start)
    buffer.unmap()
    return times


def _raw_round(
    gpu: wgpu.GPUDevice,
    device: wgpu.GPUBuffer,
    down: wgpu.GPUBuffer,
    up: wgpu.GPUBuffer,
    host: Bytes,
    out: Bytes,
    pool: ThreadPoolExecutor,
) -> dict[str, float]:
    """One round of part 1 for ``host.nbytes`` bytes: seconds per row."""
    n = host.nbytes
    row = {"memcpy": _timed(lambda: np.copyto(out, host))}

    def copy(src: wgpu.GPUBuffer, dst: wgpu.GPUBuffer) -> None:
        encoder = gpu.create_command_encoder()
        encoder.copy_buffer_to_buffer(src, 0, dst, 0, n)
        gpu.queue.submit([encoder.finish()])

    copy(device, down)
    row["down1"], row["down2"] = _map_cycle(down, wgpu.MapMode.READ, lambda m: np.copyto(out, m), n)
    copy(device, down)
    row["down4"] = _map_cycle(down, wgpu.MapMode.READ, lambda m: _split_copy(pool, out, m), n)[0]
    row["up1"], row["up2"] = _map_cycle(up, wgpu.MapMode.WRITE, lambda m: np.copyto(m, host), n)
    copy(up, device)
    row["up4"] = _map_cycle(up, wgpu.MapMode.WRITE, lambda m: _split_copy(pool, m, host), n)[0]
    copy(up, device)
    row["wb"] = _timed(lambda: gpu.queue.write_buffer(device, 0, host))
    gpu.queue.submit([])
    return row


def raw(token: str, rounds: int) -> None:
    """Part 1: host copies into and out of mapped staging memory."""
    adapter = adapter_named(token)
    gpu = adapter.request_device_sync()
    print(f"# part 1: {adapter.summary}; median us of {rounds} map cycles")
    usage = wgpu.BufferUsage
    device = gpu.create_buffer(size=CHUNK, usage=usage.COPY_SRC | usage.COPY_DST)
    down = gpu.create_buffer(size=CHUNK, usage=usage.MAP_READ | usage.COPY_DST)
    up = gpu.create_buffer(size=CHUNK, usage=usage.MAP_WRITE | usage.COPY_SRC)
    host = np.random.default_rng(0).integers(0, 255, CHUNK, dtype=np.uint8)
    gpu.queue.write_buffer(device, 0, host)
    out = np.zeros(CHUNK, np.uint8)
    pool = ThreadPoolExecutor(SPLIT)
    print(
        "size | host memcpy 1 thread | out of MAP_READ pass 1 | pass 2 | pass 1 on 4 threads "
        "| into MAP_WRITE pass 1 | pass 2 | pass 1 on 4 threads | write_buffer call"
    )
    for n in SIZES:
        rows: dict[str, list[float]] = {}
        for _ in range(rounds):
            for key, value in _raw_round(gpu, device, down, up, host[:n], out[:n], pool).items():
                rows.setdefault(key, []).append(value)
        keys = ("memcpy", "down1", "down2", "down4", "up1", "up2", "up4", "wb")
        print(f"{n >> 10:6} KiB |" + " |".join(_us(rows[k]) for k in keys), flush=True)
    pool.shutdown()
    for buffer in (device, down, up):
        buffer.destroy()
    gpu.destroy()


def _options(spec: str) -> tuple[str, tw.ContextOptions]:
    name, _, fields = spec.partition("=")
    values: dict[str, Any] = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition(":")
        values[key] = int(value)
    return name, tw.ContextOptions(**values)


def measured(name: str, options: tw.ContextOptions, token: str, rounds: int) -> None:
    """Part 2: one context's upload-until-landed and download p50 at every size."""
    with tf.Environment(backends=[]) as env:
        env.register_backend("webgpu", tw.WebGPUBackend(options))
        device = webgpu_device(env, token)
        cells = []
        for n in SIZES:
            data = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8)
            host = env.from_numpy(data, copy=False)
            tensor = env.empty((n,), np.uint8, device)
            out = np.empty_like(data)
            out.fill(0)

            def upload() -> None:
                env.copy_tensor(host, tensor)  # noqa: B023 - run within this iteration
                env.synchronize(device)

            def download() -> None:
                tensor.numpy(out=out)  # noqa: B023

            ups, downs = [], []
            for round_ in range(rounds + 20):
                u, d = _timed(upload), _timed(download)
                if round_ >= 20:
                    ups.append(u)
                    downs.append(d)
            assert np.array_equal(out, data), "the round trip is wrong"
            cells.append(f"{n >> 10} KiB up {_us(ups)} down {_us(downs)}")
        print(f"{name:24} " + " |".join(cells), flush=True)


def main(argv: list[str]) -> None:
    """Print both parts."""
    token = argv[0] if argv else ""
    rounds = int(argv[1]) if len(argv) > 1 else 200
    specs = argv[2:] or ["default=", "staged-256K=small_upload:131072"]
    raw(token, rounds)
    print(f"# part 2: p50 us of {rounds} runs, contexts taking turns")
    contexts = [_options(spec) for spec in specs]
    for _ in range(2):
        for name, options in contexts:
            measured(name, options, token, rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
