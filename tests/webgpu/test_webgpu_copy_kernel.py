"""The 16-byte-word copy kernel: exact results at any aligned offset, across
binding windows, and refusals for what it cannot do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import wgpu

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._copy_kernel import WORD, CopyKernel, kernel_copies_pay

USAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
SIZE = 256 << 10
NBYTES = 128 << 10


@pytest.fixture
def gpu(device: tf.Device) -> Any:
    """A plain wgpu device on the adapter behind ``device``."""
    adapter = next(a for a in tw.adapters() if a.summary == device.property("adapter"))
    return adapter.request_device_sync()


def _run(gpu: Any, kernel: CopyKernel, src_at: int, dst_at: int, nbytes: int) -> None:
    data = np.random.default_rng(nbytes).integers(0, 256, SIZE, dtype=np.uint8)
    src = gpu.create_buffer_with_data(data=data.tobytes(), usage=USAGE)
    dst = gpu.create_buffer(size=SIZE, usage=USAGE)
    before = np.full(SIZE, 0xA5, np.uint8)
    gpu.queue.write_buffer(dst, 0, before)
    encoder = gpu.create_command_encoder()
    kernel.encode(encoder, src, src_at, dst, dst_at, nbytes)
    gpu.queue.submit([encoder.finish()])
    result = np.frombuffer(gpu.queue.read_buffer(dst), np.uint8)
    expected = before.copy()
    expected[dst_at : dst_at + nbytes] = data[src_at : src_at + nbytes]
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize(
    ("src_at", "dst_at", "nbytes"),
    [
        (0, 0, SIZE),
        (16, 48, SIZE - 64),
        (4096 + 32, 16, 65536 + 16 * 7),
        (0, 0, 0),
        (WORD, 0, WORD),
    ],
)
def test_copies_exactly(gpu: Any, src_at: int, dst_at: int, nbytes: int) -> None:
    _run(gpu, CopyKernel(gpu), src_at, dst_at, nbytes)


def test_ranges_larger_than_a_window_are_split(gpu: Any) -> None:
    kernel = CopyKernel(gpu, max_groups=3)
    kernel.window = 4096  # many windows, few workgroups: both loops are exercised
    _run(gpu, kernel, 16 * 5, 16 * 301, SIZE - 16 * 400)


def test_refuses_unaligned_ranges_and_one_buffer(gpu: Any) -> None:
    kernel = CopyKernel(gpu)
    buffer = gpu.create_buffer(size=4096, usage=USAGE)
    other = gpu.create_buffer(size=4096, usage=USAGE)
    encoder = gpu.create_command_encoder()
    for args in ((4, 0, 16), (0, 8, 16), (0, 0, 20)):
        with pytest.raises(ValueError, match="multiples of 16"):
            kernel.encode(encoder, buffer, args[0], other, args[1], args[2])
    with pytest.raises(ValueError, match="two distinct buffers"):
        kernel.encode(encoder, buffer, 0, buffer, 1024, 16)


def test_kernel_copies_pay_only_on_gpus() -> None:
    assert kernel_copies_pay("DiscreteGPU")
    assert not kernel_copies_pay("CPU")


@pytest.mark.parametrize(
    ("src_at", "dst_at", "nbytes"),
    [(0, 0, 4096), (4, 4, 4096 - 8), (12, 28, 3000), (8, 4, 2048), (1, 5, 999), (16, 16, 8)],
)
@pytest.mark.parametrize("slab_max", [0, 64 << 10], ids=["own-buffers", "slabs"])
def test_device_copies_through_the_kernel_are_exact(
    make_env: Callable[..., tf.Environment],
    monkeypatch: pytest.MonkeyPatch,
    webgpu_index: int,
    src_at: int,
    dst_at: int,
    nbytes: int,
    slab_max: int,
) -> None:
    """With kernel copies on, a device copy runs the kernel over the 16-byte-aligned
    middle and the copy command (or the patch kernel) over the edges: every byte of
    the destination view changes and none outside it. With slabs, source and
    destination sit at offsets in two slabs (two sizes), which the kernel honours."""
    env = make_env(tw.ContextOptions(kernel_copies=True, kernel_copy_min=16, slab_max=slab_max))
    device = env.device(f"webgpu:{webgpu_index}")
    neighbours = [env.empty((n,), np.uint8, device) for n in (8192, 8192 + 16)]
    encoded: list[int] = []
    real = CopyKernel.encode

    def spy(self: CopyKernel, encoder: Any, *args: Any) -> None:
        encoded.append(args[-1])
        real(self, encoder, *args)

    monkeypatch.setattr(CopyKernel, "encode", spy)
    size = 8192
    data = np.random.default_rng(nbytes).integers(0, 256, size, dtype=np.uint8)
    src = env.from_numpy(data, device)
    dst = env.from_numpy(np.full(size + 16, 0x5A, np.uint8), device)
    if slab_max:
        assert tw.buffer_of(src)[0] is not tw.buffer_of(dst)[0]
        assert tw.buffer_of(src)[1], "an offset in its slab"
        assert tw.buffer_of(dst)[1], "an offset in its slab"
    env.copy_tensor(src[src_at : src_at + nbytes], dst[dst_at : dst_at + nbytes])
    del neighbours
    expected = np.full(size + 16, 0x5A, np.uint8)
    expected[dst_at : dst_at + nbytes] = data[src_at : src_at + nbytes]
    np.testing.assert_array_equal(dst.numpy(), expected)
    aligned = (src_at - dst_at) % WORD == 0 and not (src_at | dst_at | nbytes) & 3
    assert bool(encoded) == (aligned and nbytes - (-src_at % WORD) >= WORD), encoded


def test_cpu_adapters_keep_the_copy_command(env: tf.Environment, device: tf.Device) -> None:
    """Shaders run on the CPU there (about 5x slower than the copy command)."""
    context = tw.backend_of(env).context(device)
    expected = kernel_copies_pay(str(device.property("adapter_type")))
    assert context.kernel_copies is expected


def test_repeated_copies_reuse_their_bind_groups(
    make_env: Callable[..., tf.Environment], monkeypatch: pytest.MonkeyPatch, webgpu_index: int
) -> None:
    """A kernel copy repeated between the same tensors binds once and stays exact
    as the source changes; a copy between other places binds anew (tensors larger
    than a slab, so that each has its own buffer)."""
    env = make_env(tw.ContextOptions(kernel_copies=True, kernel_copy_min=16))
    device = env.device(f"webgpu:{webgpu_index}")
    bound: list[int] = []
    real = CopyKernel._bind

    def spy(self: CopyKernel, *args: Any) -> Any:
        bound.append(args[-1])
        return real(self, *args)

    monkeypatch.setattr(CopyKernel, "_bind", spy)
    src = env.empty((NBYTES,), np.uint8, device)
    dst = env.empty((NBYTES,), np.uint8, device)
    for round_ in range(3):
        data = np.full(NBYTES, round_ + 1, np.uint8)
        env.copy_tensor(env.from_numpy(data), src)
        env.copy_tensor(src, dst)
        np.testing.assert_array_equal(dst.numpy(), data)
    assert bound == [NBYTES]
    env.copy_tensor(src[: NBYTES // 2], dst[NBYTES // 2 :])
    assert bound == [NBYTES, NBYTES // 2]


def test_plain_wgpu_buffers_are_never_remembered(gpu: Any) -> None:
    """A caller's buffers may be destroyed behind tensorferry's back: their bind
    groups are not kept."""
    kernel = CopyKernel(gpu)
    _run(gpu, kernel, 0, 0, SIZE)
    assert not kernel._cache


REUSED_ID_CHILD = """
import gc, sys
import numpy as np
import tensorferry as tf
import tensorferry_webgpu as tw
options = tw.ContextOptions(
    kernel_copies=True, kernel_copy_min=16, cache_mode=tw.CacheMode.DISABLED
)
env = tf.Environment(backends=[])
env.register_backend("webgpu", tw.WebGPUBackend(options))
device = env.device(f"webgpu:{sys.argv[1]}")
src = env.from_numpy(np.arange(65536, dtype=np.uint32), device)
results = []
for round_ in range(20):
    dst = env.empty((65536,), np.uint32, device)
    env.copy_tensor(src, dst)
    results.append(bool((dst.numpy() == np.arange(65536, dtype=np.uint32)).all()))
    del dst  # its buffer is destroyed (no pool): a later buffer may reuse its id
    gc.collect()
env.close()
print("ok" if all(results) else f"wrong {results}")
"""


def test_a_destroyed_buffers_bind_group_is_never_used(
    run_child: Callable[..., Any], webgpu_index: int
) -> None:
    """Destinations (256 KiB, beyond slabs) destroyed after each copy (no pool):
    every new destination gets its own bind group, the copies stay exact and
    nothing aborts."""
    result = run_child(REUSED_ID_CHILD, str(webgpu_index))
    assert result.returncode == 0, result.describe()
    assert result.stdout.strip().endswith("ok"), result.describe()
