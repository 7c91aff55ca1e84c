"""Device buffer pools: each CacheMode keeps, reuses and destroys buffers as
documented, counts hits and misses, and respects ``max_cached_bytes``.

Tensors are freed with ``del tensor; gc.collect()``; a spy on ``GPUBuffer.destroy``
tells which buffers the pool destroyed.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw
from tensorferry_webgpu._buffers import UNIFIED_CACHED_BYTES, BufferPool, default_cached_bytes

CacheMode = tw.CacheMode


def destroyed_any(destroyed: list[Any], buffer: Any) -> bool:
    return any(b is buffer for b in destroyed)


@pytest.fixture
def pool_env(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> Callable[..., tuple[tf.Environment, tf.Device]]:
    """``pool_env(mode, max_cached_bytes=...)``: a fresh environment whose WebGPU
    contexts use that cache mode, and the device under test. Slabs are off, so
    that every tensor, small ones too, gets a pooled buffer of its own."""

    def make(mode: Any, **options: Any) -> tuple[tf.Environment, tf.Device]:
        env = make_env(tw.ContextOptions(cache_mode=mode, slab_max=0, **options))
        return env, env.device(f"webgpu:{webgpu_index}")

    return make


def stats(env: tf.Environment, device: tf.Device) -> Any:
    return tw.backend_of(env).pool_stats(device)


def allocate(env: tf.Environment, device: tf.Device, nbytes: int) -> tf.Tensor:
    return env.empty((nbytes,), np.uint8, device)


def test_disabled_destroys_at_once(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = pool_env(CacheMode.DISABLED)
    tensor = allocate(env, device, 1000)
    buffer = tw.buffer_of(tensor)[0]
    assert stats(env, device).live_bytes == buffer.size >= 1000
    del tensor
    gc.collect()
    assert destroyed_any(destroyed_buffers, buffer), "DISABLED must destroy a freed buffer"
    after = stats(env, device)
    assert (after.cached_bytes, after.cached_buffers, after.live_bytes) == (0, 0, 0)
    again = allocate(env, device, 1000)
    assert tw.buffer_of(again)[0] is not buffer
    assert (stats(env, device).hits, stats(env, device).misses) == (0, 2)


def _download(env: tf.Environment, tensor: tf.Tensor) -> None:
    tensor.numpy()


def _small_aligned_upload(env: tf.Environment, tensor: tf.Tensor) -> None:
    env.copy_tensor(env.from_numpy(np.arange(tensor.size, dtype=tensor.dtype)), tensor)


def _odd_upload(env: tf.Environment, tensor: tf.Tensor) -> None:
    env.copy_tensor(env.from_numpy(np.arange(3, dtype=tensor.dtype)), tensor[1:4])


def _fill(env: tf.Environment, tensor: tf.Tensor) -> None:
    env.fill(tensor, 7)


def _device_copy(env: tf.Environment, tensor: tf.Tensor) -> None:
    env.copy_tensor(tensor[:8], tensor[8:16])


def _async_download(env: tf.Environment, tensor: tf.Tensor) -> None:
    env.copy_tensors_async([tensor], [env.empty(tensor.shape, tensor.dtype)]).wait()


BATCHES: dict[str, Callable[[tf.Environment, tf.Tensor], None]] = {
    "download": _download,
    "small-aligned-upload": _small_aligned_upload,
    "odd-upload": _odd_upload,
    "fill": _fill,
    "device-copy": _device_copy,
    "async-download": _async_download,
}


@pytest.mark.parametrize("batch", BATCHES, ids=list(BATCHES))
def test_lazy_release_keeps_until_the_next_batch_ends(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
    destroyed_buffers: list[Any],
    batch: str,
) -> None:
    """LAZY_RELEASE: a freed buffer is never reused, and survives until the next
    batch on its device ends, whatever kind of batch that is."""
    env, device = pool_env(CacheMode.LAZY_RELEASE)
    other = allocate(env, device, 64)
    tensor = allocate(env, device, 1000)
    buffer = tw.buffer_of(tensor)[0]
    del tensor
    gc.collect()
    assert not destroyed_any(destroyed_buffers, buffer), "destroyed before the batch ended"
    assert stats(env, device).cached_bytes == 0
    replacement = allocate(env, device, 1000)
    assert tw.buffer_of(replacement)[0] is not buffer, "LAZY_RELEASE must not reuse buffers"
    assert (stats(env, device).hits, stats(env, device).misses) == (0, 3)
    BATCHES[batch](env, other)
    assert destroyed_any(destroyed_buffers, buffer), (
        f"a {batch} batch ended but the buffer freed before it is still alive"
    )


def test_lazy_release_does_not_pile_up(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    """A loop of allocate, one small upload, free: the buffers held back for
    LAZY_RELEASE are destroyed as batches end, instead of piling up."""
    env, device = pool_env(CacheMode.LAZY_RELEASE)
    buffers = []
    for step in range(20):
        tensor = env.from_numpy(np.full(256, step, np.float32), device)
        buffers.append(tw.buffer_of(tensor)[0])
        del tensor
        gc.collect()
    alive = sum(not destroyed_any(destroyed_buffers, b) for b in buffers)
    assert alive <= 1, f"{alive} of 20 freed buffers are still held back"


def test_simple_reuses_exact_sizes(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    """SIMPLE: a freed buffer serves the next request of the same 4-byte-rounded size."""
    env, device = pool_env(CacheMode.SIMPLE)
    first = allocate(env, device, 1000)
    buffer = tw.buffer_of(first)[0]
    assert buffer.size == 1000
    del first
    gc.collect()
    assert not destroyed_any(destroyed_buffers, buffer)
    assert (stats(env, device).cached_bytes, stats(env, device).cached_buffers) == (1000, 1)
    same = allocate(env, device, 998)  # rounds to 1000: a hit
    assert tw.buffer_of(same)[0] is buffer
    assert (stats(env, device).hits, stats(env, device).misses) == (1, 1)
    assert stats(env, device).cached_bytes == 0
    bigger = allocate(env, device, 1004)  # another size: a miss
    assert tw.buffer_of(bigger)[0] is not buffer
    assert tw.buffer_of(bigger)[0].size == 1004
    assert (stats(env, device).hits, stats(env, device).misses) == (1, 2)
    assert stats(env, device).live_bytes == 2004
    bigger_buffer = tw.buffer_of(bigger)[0]
    del same, bigger
    gc.collect()
    assert stats(env, device).cached_bytes == 2004
    rounded = allocate(env, device, 1001)  # rounds to 1004
    assert tw.buffer_of(rounded)[0] is bigger_buffer
    assert allocate(env, device, 1008) is not None  # no 1008 buffer cached: a miss
    assert (stats(env, device).hits, stats(env, device).misses) == (2, 3)


def test_bucket_reuses_size_classes(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = pool_env(CacheMode.BUCKET)
    first = allocate(env, device, 1000)
    buffer = tw.buffer_of(first)[0]
    assert buffer.size == 1024
    del first
    gc.collect()
    assert not destroyed_any(destroyed_buffers, buffer)
    assert stats(env, device).cached_bytes == 1024
    same_class = allocate(env, device, 900)  # 900 -> 1024 as well
    assert tw.buffer_of(same_class)[0] is buffer
    next_class = allocate(env, device, 1025)
    assert tw.buffer_of(next_class)[0].size == 1280
    assert (stats(env, device).hits, stats(env, device).misses) == (1, 2)


def _size_classes() -> list[int]:
    rng = np.random.default_rng(7)
    edges = [1, 3, 4, 5, 255, 256, 257, 320, 321, 511, 512, 513, 1023, 1024, 1025, 4097]
    edges += [(1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) // 4 + 1]
    return edges + [int(n) for n in rng.integers(1, 3 << 20, 60)]


def test_bucket_size_classes_have_little_slack(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    """Every request gets a buffer at least as large, at most 25% larger (4-byte
    rounding aside), from at most four classes per power of two."""
    env, device = pool_env(CacheMode.BUCKET)
    sizes = {}
    for nbytes in sorted(_size_classes()):
        tensor = allocate(env, device, nbytes)
        sizes[nbytes] = tw.buffer_of(tensor)[0].size
        del tensor
    for nbytes, size in sizes.items():
        rounded = max(4, -(-nbytes // 4) * 4)
        assert size >= rounded, (nbytes, size)
        assert size - rounded <= rounded // 4, f"{nbytes} bytes got a {size}-byte buffer"
    ordered = [sizes[n] for n in sorted(sizes)]
    assert ordered == sorted(ordered), "larger requests never get smaller classes"
    octaves: dict[int, set[int]] = {}
    for size in set(sizes.values()):
        if size > 256:
            octaves.setdefault((size - 1).bit_length(), set()).add(size)
    assert all(len(classes) <= 4 for classes in octaves.values()), octaves


def test_bucket_cycles_hit(pool_env: Callable[..., tuple[tf.Environment, tf.Device]]) -> None:
    env, device = pool_env(CacheMode.BUCKET)
    sizes = [4, 100, 1000, 5000, 70_000, 300_000, 1 << 20]
    for _ in range(10):
        tensors = [allocate(env, device, n) for n in sizes]
        del tensors
        gc.collect()
    final = stats(env, device)
    assert final.misses == len(sizes)
    assert final.hits == 9 * len(sizes)
    assert final.live_bytes == 0
    assert final.cached_buffers == len(sizes)


@pytest.mark.parametrize("mode", [CacheMode.SIMPLE, CacheMode.BUCKET])
def test_cached_bytes_respect_the_cap(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
    destroyed_buffers: list[Any],
    mode: Any,
) -> None:
    env, device = pool_env(mode, max_cached_bytes=4096)
    tensors = [allocate(env, device, 2048) for _ in range(3)]
    buffers = [tw.buffer_of(t)[0] for t in tensors]
    del tensors
    gc.collect()
    after = stats(env, device)
    assert after.cached_bytes == 4096
    assert after.cached_buffers == 2
    assert sum(destroyed_any(destroyed_buffers, b) for b in buffers) == 1
    huge = allocate(env, device, 8192)
    huge_buffer = tw.buffer_of(huge)[0]
    del huge
    gc.collect()
    assert destroyed_any(destroyed_buffers, huge_buffer), "a buffer over the cap is destroyed"
    assert stats(env, device).cached_bytes <= 4096
    again = [allocate(env, device, 2048) for _ in range(3)]
    assert stats(env, device).hits == 2
    assert len({id(tw.buffer_of(t)[0]) for t in again}) == 3


def test_default_cache_bound_follows_the_adapter(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    """``max_cached_bytes=None`` keeps every idle buffer on a discrete GPU and 256 MiB
    on other adapters; host-accessible memory, the host's, keeps 256 MiB on all."""
    assert default_cached_bytes("DiscreteGPU") is None
    for other in ("CPU", "IntegratedGPU", "VirtualGPU", "Unknown"):
        assert default_cached_bytes(other) == UNIFIED_CACHED_BYTES == 256 << 20
    env, device = pool_env(CacheMode.BUCKET)
    context = tw.backend_of(env).context(device)
    discrete = device.property("adapter_type") == "DiscreteGPU"
    assert context.pool.max_cached_bytes == ((1 << 62) if discrete else UNIFIED_CACHED_BYTES)
    if context.host_pool is not None:
        assert context.host_pool.max_cached_bytes == UNIFIED_CACHED_BYTES
    env, device = pool_env(CacheMode.BUCKET, max_cached_bytes=12345)
    context = tw.backend_of(env).context(device)
    assert context.pool.max_cached_bytes == 12345
    if context.host_pool is not None:
        assert context.host_pool.max_cached_bytes == 12345


class _RefusesOnce:
    """A wgpu device whose next ``create_buffer`` fails as an exhausted device's would."""

    def __init__(self, gpu: Any, failures: int) -> None:
        self._gpu = gpu
        self.failures = failures
        self.calls = 0

    def create_buffer(self, **kwargs: Any) -> Any:
        import wgpu

        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise wgpu.GPUOutOfMemoryError("planted: not enough memory left")
        return self._gpu.create_buffer(**kwargs)


def test_pool_destroys_idle_buffers_and_retries_when_a_buffer_cannot_be_made(
    env: tf.Environment, device: tf.Device, destroyed_buffers: list[Any]
) -> None:
    """A failed allocation with idle buffers cached destroys them and makes the buffer
    once more; with none cached, or failing again, wgpu's error comes out."""
    import wgpu

    gpu = tw.backend_of(env).context(device).gpu
    refusing = _RefusesOnce(gpu, failures=0)
    pool = BufferPool(refusing, wgpu.BufferUsage.COPY_DST, max_cached_bytes=None)  # type: ignore[arg-type]
    try:
        idle = [pool.acquire(4096) for _ in range(3)]
        for buffer in idle:
            pool.release(buffer)
        assert pool.stats().cached_buffers == 3
        refusing.failures = 1
        made = pool.acquire(1 << 20)
        assert made.size >= 1 << 20
        assert refusing.calls == 5, "one failed try, then one more"
        assert all(destroyed_any(destroyed_buffers, b) for b in idle)
        assert (pool.stats().cached_buffers, pool.stats().cached_bytes) == (0, 0)
        pool.release(made)
        refusing.failures = 2
        with pytest.raises(wgpu.GPUOutOfMemoryError, match="planted"):
            pool.acquire(8192)  # idle memory freed, and still none: the error
        assert refusing.calls == 7
        assert destroyed_any(destroyed_buffers, made)
        refusing.failures = 1
        with pytest.raises(wgpu.GPUOutOfMemoryError, match="planted"):
            pool.acquire(8192)  # nothing idle to free: no second try
        assert refusing.calls == 8
    finally:
        pool.close()


def test_empty_cache_destroys_idle_buffers_and_keeps_live_ones(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    """``empty_cache`` destroys what the pool keeps for reuse and returns its bytes;
    live tensors keep their buffers and data; an unopened device releases nothing."""
    env, device = pool_env(CacheMode.BUCKET)
    backend = tw.backend_of(env)
    assert backend.empty_cache(device) == 0, "no context is opened for it"
    assert backend.pool_stats(device).live_bytes == 0
    kept = env.from_numpy(np.arange(256, dtype=np.uint8), device)
    freed = [allocate(env, device, n) for n in (1000, 5000)]
    buffers = [tw.buffer_of(t)[0] for t in freed]
    del freed
    gc.collect()
    cached = stats(env, device).cached_bytes
    assert cached == sum(b.size for b in buffers)
    assert backend.empty_cache(device) == cached
    assert all(destroyed_any(destroyed_buffers, b) for b in buffers)
    assert (stats(env, device).cached_bytes, stats(env, device).cached_buffers) == (0, 0)
    assert not destroyed_any(destroyed_buffers, tw.buffer_of(kept)[0])
    np.testing.assert_array_equal(kept.numpy(), np.arange(256, dtype=np.uint8))
    assert backend.empty_cache(device) == 0
    other = tf.Device("webgpu", 99, name="not this backend's")
    with pytest.raises(tf.UnknownDeviceError):
        backend.empty_cache(other)


def test_zero_cap_caches_nothing(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = pool_env(CacheMode.BUCKET, max_cached_bytes=0)
    tensor = allocate(env, device, 100)
    buffer = tw.buffer_of(tensor)[0]
    del tensor
    gc.collect()
    assert destroyed_any(destroyed_buffers, buffer)
    assert stats(env, device).cached_bytes == 0


def test_close_destroys_cached_buffers(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = pool_env(CacheMode.BUCKET)
    tensors = [allocate(env, device, n) for n in (100, 1000, 10_000)]
    buffers = [tw.buffer_of(t)[0] for t in tensors]
    del tensors
    gc.collect()
    assert stats(env, device).cached_buffers == 3
    env.close()
    assert all(destroyed_any(destroyed_buffers, b) for b in buffers)


def test_buffers_freed_after_close_are_destroyed(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    env, device = pool_env(CacheMode.BUCKET)
    tensor = allocate(env, device, 4000)
    buffer = tw.buffer_of(tensor)[0]
    env.close()
    assert not destroyed_any(destroyed_buffers, buffer), "a live tensor's buffer is kept"
    del tensor
    gc.collect()
    assert destroyed_any(destroyed_buffers, buffer)


def test_zero_byte_tensors_take_nothing_from_the_pool(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    env, device = pool_env(CacheMode.BUCKET)
    allocate(env, device, 4)  # creates the context
    before = stats(env, device)
    empties = [env.empty(shape, np.float32, device) for shape in [(0,), (3, 0), (0, 5)]]
    assert stats(env, device) == before
    assert all(t.nbytes == 0 for t in empties)


def test_counters_stay_consistent_under_threads(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]],
) -> None:
    """Threads allocate and free at once (buffers go back from finalizers on any
    thread): every request is a hit or a miss, and nothing stays live."""
    env, device = pool_env(CacheMode.BUCKET)
    rounds, sizes = 20, [64, 1000, 4096, 70_000]
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(rounds):
                tensors = [allocate(env, device, n) for n in sizes]
                del tensors
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    assert not errors, errors
    final = stats(env, device)
    assert final.hits + final.misses == 4 * rounds * len(sizes)
    assert final.live_bytes == 0
    assert final.misses <= 4 * len(sizes), "once warm, the pool serves every request"
    assert final.cached_buffers == final.misses, "every buffer made is back in the pool"


def test_cached_buffer_count_respects_the_cap(
    pool_env: Callable[..., tuple[tf.Environment, tf.Device]], destroyed_buffers: list[Any]
) -> None:
    """Many tiny freed tensors fit the byte cap easily; the count cap bounds the
    buffer objects (and their host memory) the pool keeps."""
    env, device = pool_env(CacheMode.BUCKET, max_cached_buffers=16)
    tensors = [allocate(env, device, 8) for _ in range(200)]
    buffers = [tw.buffer_of(t)[0] for t in tensors]
    del tensors
    gc.collect()
    after = stats(env, device)
    assert after.cached_buffers == 16
    assert after.cached_bytes == 16 * buffers[0].size
    assert sum(destroyed_any(destroyed_buffers, b) for b in buffers) == 200 - 16
    assert tw.ContextOptions().max_cached_buffers > 0, "the default caps the count too"


def test_largest_usable_size_is_whole_words(env: tf.Environment, device: tf.Device) -> None:
    """Bucket rounding never takes a request that fits past the device's limit; a
    request past the limit rounded down to whole 4-byte words is refused by name."""
    context = tw.backend_of(env).context(device)
    limit = context.max_buffer_size
    for mode in CacheMode:
        pool = BufferPool(context.gpu, 0, mode=mode, max_buffer_size=limit)
        assert pool.capacity_for(limit & ~3) == limit & ~3
        assert pool.capacity_for((limit & ~3) - 5) <= limit & ~3
    if limit % 4:
        with pytest.raises(tf.OutOfDeviceMemoryError, match=str(limit & ~3)):
            env.empty((limit,), np.uint8, device)
