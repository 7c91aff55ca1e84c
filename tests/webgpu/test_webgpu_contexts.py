"""Contexts: created lazily (exactly one under a race), reference-counted, closed
with their environment, and refused with ClosedError once closed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tensorferry as tf
import tensorferry_webgpu as tw

THREADS = 16
ROUNDS = 3


def test_no_context_before_first_use(fresh_env: tf.Environment) -> None:
    env = fresh_env
    backend = tw.backend_of(env)
    devices = [
        d for d in env.devices() if d.backend == "webgpu" and d.memory is tf.MemoryKind.DEFAULT
    ]
    env.device("webgpu:0")
    assert backend.contexts_created == 0, "listing or resolving devices must not create contexts"
    env.empty((8,), np.float32, devices[0])
    assert backend.contexts_created == 1
    env.from_numpy(np.ones(3), devices[0]).numpy()
    assert backend.contexts_created == 1, "further use reuses the device's context"
    for count, device in enumerate(devices[1:], start=2):
        env.empty((8,), np.float32, device)
        assert backend.contexts_created == count


def _first_use_race(
    env: tf.Environment, devices: list[str]
) -> tuple[list[tf.Tensor], list[BaseException]]:
    """THREADS threads, released together, each allocate their first tensor."""
    barrier = threading.Barrier(THREADS)
    tensors: list[tf.Tensor] = []
    errors: list[BaseException] = []

    def first_use(number: int) -> None:
        try:
            barrier.wait()
            tensors.append(env.empty((64,), np.float32, devices[number % len(devices)]))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tensors, errors


def test_lazy_init_race_creates_one_context(
    make_env: Callable[..., tf.Environment], webgpu_index: int
) -> None:
    for _ in range(ROUNDS):
        env = make_env()
        backend = tw.backend_of(env)  # loaded: the race is on the context alone
        tensors, errors = _first_use_race(env, [f"webgpu:{webgpu_index}"])
        assert not errors, errors
        assert backend.contexts_created == 1
        contexts = {id(t.storage.context) for t in tensors}
        assert len(contexts) == 1, "every thread must get the one context"
        env.close()


def test_lazy_init_race_on_every_device_and_the_backend(
    make_env: Callable[..., tf.Environment], env: tf.Environment
) -> None:
    """The threads also race to load the backend: one backend, one context per device."""
    names = [
        str(d) for d in env.devices() if d.backend == "webgpu" and d.memory is tf.MemoryKind.DEFAULT
    ]
    for _ in range(ROUNDS):
        fresh = make_env()
        tensors, errors = _first_use_race(fresh, names)
        assert not errors, errors
        assert tw.backend_of(fresh).contexts_created == len(names)
        by_device: dict[tf.Device, set[int]] = {}
        for tensor in tensors:
            by_device.setdefault(tensor.device, set()).add(id(tensor.storage.context))
        assert all(len(ids) == 1 for ids in by_device.values()), by_device
        fresh.close()


def test_acquire_and_release_count_references(fresh_env: tf.Environment) -> None:
    env = fresh_env
    backend = tw.backend_of(env)
    device = env.device("webgpu:0")
    context = backend.acquire_context(device)
    held = context.references
    assert held >= 2, "the backend and the caller both hold the context"
    again = backend.acquire_context(device)
    assert again is context
    assert context.references == held + 1
    again.release()
    context.release()
    assert context.references == held - 1
    assert not context.closed, "the backend still holds it"
    assert backend.context(device) is context
    env.from_numpy(np.arange(4.0), device).numpy()


def test_context_closes_when_the_last_reference_goes(fresh_env: tf.Environment) -> None:
    env = fresh_env
    backend = tw.backend_of(env)
    device = env.device("webgpu:0")
    tensor = env.from_numpy(np.arange(4.0), device)
    context = backend.context(device)
    extra = backend.acquire_context(device)
    extra.release()
    assert not context.closed
    env.close()  # drops the backend's and the transfer's references: the last ones
    assert context.closed
    assert context.references == 0
    context.release()  # a release after the close changes nothing
    assert context.references == 0
    assert tensor.storage.closed


def test_env_close_closes_every_context(fresh_env: tf.Environment) -> None:
    """Every context is closed by env.close(), even one a caller still holds a
    reference to (Context: 'closes when the count drops to zero, or when its
    backend closes')."""
    env = fresh_env
    backend = tw.backend_of(env)
    devices = [
        d for d in env.devices() if d.backend == "webgpu" and d.memory is tf.MemoryKind.DEFAULT
    ]
    used = [backend.context(d) for d in devices]
    held = backend.acquire_context(devices[0])
    env.close()
    assert [c.closed for c in used if c is not held] == [True] * (len(used) - 1)
    assert held.closed, (
        f"the context of {devices[0]} is still open after env.close() "
        f"({held.references} reference(s) left): WebGPUBackend.close() only releases it"
    )


def _assert_closed_message(error: BaseException, *words: str) -> None:
    text = str(error)
    assert "closed" in text, text
    for word in words:
        assert word in text, text


def test_use_after_close_raises_closed_error(fresh_env: tf.Environment) -> None:
    env = fresh_env
    backend = tw.backend_of(env)
    device = env.device("webgpu:0")
    tensor = env.from_numpy(np.arange(6, dtype=np.int16), device)
    context = backend.context(device)
    env.close()
    with pytest.raises(tf.ClosedError) as caught:
        context.acquire()
    _assert_closed_message(caught.value, str(device))
    with pytest.raises(tf.ClosedError) as caught:
        context.allocate(16)
    _assert_closed_message(caught.value, str(device))
    with pytest.raises(tf.ClosedError) as caught:
        backend.context(device)
    _assert_closed_message(caught.value, "webgpu")
    with pytest.raises(tf.ClosedError) as caught:
        backend.acquire_context(device)
    _assert_closed_message(caught.value)
    out = np.full(6, -1, np.int16)
    with pytest.raises(tf.ClosedError):
        tensor.numpy(out)
    np.testing.assert_array_equal(out, np.full(6, -1, np.int16))
    assert isinstance(tf.ClosedError("x"), RuntimeError)


def test_closed_context_refuses_its_tensors(fresh_env: tf.Environment) -> None:
    """A context closed under the environment (by whoever holds it) makes its
    tensors raise ClosedError, naming the tensor, and leaves destinations alone."""
    env = fresh_env
    backend = tw.backend_of(env)
    device = env.device("webgpu:0")
    source = env.from_numpy(np.arange(8, dtype=np.uint8), device)
    context = backend.context(device)
    context.close()
    assert source.storage.closed
    out = np.full(8, 0xAB, np.uint8)
    with pytest.raises(tf.ClosedError) as caught:
        source.numpy(out)
    assert "released" in str(caught.value) or "closed" in str(caught.value), caught.value
    np.testing.assert_array_equal(out, np.full(8, 0xAB, np.uint8))
    with pytest.raises(tf.ClosedError):
        env.copy_tensor(env.from_numpy(np.zeros(8, np.uint8)), source)
    with pytest.raises(tf.ClosedError):
        env.fill(source, 1)
    with pytest.raises(tf.ClosedError):
        context.acquire()


def test_contexts_of_unregistered_backend_are_closed(fresh_env: tf.Environment) -> None:
    env = fresh_env
    backend = tw.backend_of(env)
    tensor = env.from_numpy(np.arange(3.0), "webgpu:0")
    context: Any = backend.context(tensor.device)
    env.unregister_backend("webgpu")
    assert context.closed
    with pytest.raises(tf.ClosedError):
        tensor.numpy()
