"""Fixtures of the WebGPU backend's own tests, on the machine's real wgpu adapters.

Nothing here is a mock: every environment enumerates real adapters and every copy
runs on a real wgpu device. Where a test needs to *observe* the backend (which
buffers a pool destroys, which staging buffers a copy uses), a spy wraps the real
call and records it; the real call still happens.

Tests that could take the interpreter down with them (a Rust panic in wgpu-native
aborts the process) run their risky part in a child interpreter through
``run_child``, so that an abort shows as a failed test with its exit code.

Fixtures: ``webgpu_index`` (parametrized over the adapters' devices, with ids such
as ``webgpu:0-Vulkan``), ``env`` and ``device`` (a session environment and one of
its devices), ``make_env`` (fresh environments, optionally with ContextOptions),
``staged_options`` (ContextOptions that always use staging buffers),
``fresh_env`` (a fresh default environment), ``destroyed_buffers`` (a spy on
``GPUBuffer.destroy``), ``staging_spy`` (a spy on a context's staging pools),
``run_child`` (a child interpreter), ``two_adapters`` (devices of two adapters).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import pytest

import tensorferry as tf

wgpu = pytest.importorskip("wgpu")
tw = pytest.importorskip("tensorferry_webgpu")

CHILD_TIMEOUT = 120
"""Seconds a child interpreter may run before the test fails."""


def _ensure_xdg_runtime_dir() -> str:
    # Mesa's GL driver complains on stderr ("XDG_RUNTIME_DIR is invalid") when
    # adapters are enumerated without it; give the test process a private one.
    path = os.environ.get("XDG_RUNTIME_DIR", "")
    if not path or not os.path.isdir(path):
        path = tempfile.mkdtemp(prefix="tensorferry-xdg-")
        os.environ["XDG_RUNTIME_DIR"] = path
    return path


@functools.cache
def _device_labels() -> tuple[str, ...]:
    """``webgpu:i-<backend type>`` for every device of default memory the backend
    lists, in its order."""
    _ensure_xdg_runtime_dir()
    backend = tw.WebGPUBackend()
    try:
        return tuple(
            f"{d}-{d.property('backend_type')}"
            for d in backend.devices()
            if d.memory is tf.MemoryKind.DEFAULT  # host-accessible twins share the index
        )
    finally:
        backend.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``webgpu_index`` over the adapters' devices."""
    if "webgpu_index" in metafunc.fixturenames:
        labels = _device_labels()
        metafunc.parametrize("webgpu_index", range(len(labels)), ids=labels)


def _staged_options(**options: Any) -> Any:
    if "map_storage" in attrs.fields_dict(tw.ContextOptions):
        options.setdefault("map_storage", False)
    return tw.ContextOptions(**options)


@pytest.fixture(scope="session")
def staged_options() -> Callable[..., Any]:
    """``staged_options(**options)``: ContextOptions that move every byte through
    the staging pools. Where the backend can map tensor buffers directly
    (``map_storage``), that is turned off, so staging tests see staging."""
    return _staged_options


@pytest.fixture(scope="session", autouse=True)
def xdg_runtime_dir() -> str:
    """A valid XDG_RUNTIME_DIR for this process and its children."""
    return _ensure_xdg_runtime_dir()


@pytest.fixture(scope="session", autouse=True)
def one_enumeration() -> Iterator[None]:
    """Make a second wgpu adapter enumeration in this process a plain test failure.

    Devices of two enumerations of Mesa's GL adapter abort the interpreter once
    both are polled; tests must use ``tensorferry_webgpu.adapters()``, the
    backend's one enumeration (child interpreters may do what they like).
    """
    tw.adapters()

    def refuse() -> None:
        raise AssertionError(
            "a test called wgpu.gpu.enumerate_adapters_sync(); use tensorferry_webgpu.adapters()"
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wgpu.gpu, "enumerate_adapters_sync", refuse)
        yield


@pytest.fixture(scope="session")
def env() -> Iterator[tf.Environment]:
    """An environment with every backend, shared by the tests that do not count
    contexts or pool events; closed at the end of the session."""
    with tf.Environment() as result:
        yield result


@pytest.fixture
def device(env: tf.Environment, webgpu_index: int) -> tf.Device:
    """One WebGPU device of the session environment (the test runs once per device)."""
    return env.device(f"webgpu:{webgpu_index}")


@pytest.fixture
def make_env() -> Iterator[Callable[..., tf.Environment]]:
    """Build fresh environments (closed after the test): ``make_env()`` loads the
    installed backends lazily; ``make_env(options)`` registers a WebGPUBackend
    built with those ``ContextOptions`` instead of the entry point's."""
    made: list[tf.Environment] = []

    def make(options: Any = None) -> tf.Environment:
        if options is None:
            result = tf.Environment()
        else:
            result = tf.Environment(backends=[])
            result.register_backend("webgpu", tw.WebGPUBackend(options))
        made.append(result)
        return result

    yield make
    for result in reversed(made):
        result.close()


TWO_ADAPTERS_ENV = "TENSORFERRY_TEST_TWO_ADAPTERS"
"""Set (to anything) where two adapters are installed, as CI does (lavapipe and
llvmpipe): tests that need two then fail when fewer are found, instead of skipping."""


@pytest.fixture(scope="session")
def two_adapters() -> Callable[[Iterable[tf.Device]], tuple[tf.Device, tf.Device]]:
    """``two_adapters(devices)``: the first two of ``devices`` with default memory
    (so of two different adapters; a host-accessible twin shares its adapter).
    With fewer, the test skips, or fails where :data:`TWO_ADAPTERS_ENV` is set."""

    def pick(devices: Iterable[tf.Device]) -> tuple[tf.Device, tf.Device]:
        found = [d for d in devices if d.memory is tf.MemoryKind.DEFAULT]
        if len(found) >= 2:
            return found[0], found[1]
        message = f"needs two WebGPU adapters; found {[d.name for d in found]}"
        if os.environ.get(TWO_ADAPTERS_ENV):
            pytest.fail(f"{message} ({TWO_ADAPTERS_ENV} is set)")
        pytest.skip(message)

    return pick


@pytest.fixture
def fresh_env(make_env: Callable[..., tf.Environment]) -> tf.Environment:
    """A fresh default environment: its WebGPU backend has no context yet."""
    return make_env()


@pytest.fixture
def destroyed_buffers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``GPUBuffer`` destroyed during the test, in order (``destroy`` still runs)."""
    buffer_class = wgpu.backends.wgpu_native.GPUBuffer
    real_destroy = buffer_class.destroy
    destroyed: list[Any] = []

    def destroy(self: Any) -> None:
        destroyed.append(self)
        real_destroy(self)

    monkeypatch.setattr(buffer_class, "destroy", destroy)
    return destroyed


@attrs.define
class StagingRecord:
    """What a context's staging pools did during a test, per direction ("upload"
    or "download"): the buffers they handed out, and the mappable buffers the
    context's wgpu device created."""

    handed_out: dict[str, list[Any]] = attrs.field(factory=lambda: {"upload": [], "download": []})
    created: dict[str, list[Any]] = attrs.field(factory=lambda: {"upload": [], "download": []})

    def distinct(self, direction: str) -> list[Any]:
        """The distinct buffers handed out for ``direction``."""
        seen: list[Any] = []
        for buffer in self.handed_out[direction]:
            if all(buffer is not other for other in seen):
                seen.append(buffer)
        return seen


@pytest.fixture
def staging_spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], StagingRecord]:
    """``staging_spy(context)`` records the staging buffers of one context.

    The pools expose no count of the buffers they made, so the spy keeps every
    buffer handed out (strong references, so identities stay unique) and every
    MAP_WRITE / MAP_READ buffer without STORAGE usage (a staging buffer) the
    context's device creates from then on.
    """

    def spy(context: Any) -> StagingRecord:
        record = StagingRecord()
        for direction, pool in (
            ("upload", context.upload_staging),
            ("download", context.download_staging),
        ):
            real_acquire = pool.acquire

            def acquire(real: Any = real_acquire, log: list[Any] = record.handed_out[direction]):
                buffer = real()
                log.append(buffer)
                return buffer

            monkeypatch.setattr(pool, "acquire", acquire)
        real_create = context.gpu.create_buffer

        def create_buffer(*args: Any, **kwargs: Any) -> Any:
            buffer = real_create(*args, **kwargs)
            usage = buffer.usage
            if not usage & wgpu.BufferUsage.STORAGE:  # tensor buffers may be mappable too
                if usage & wgpu.BufferUsage.MAP_WRITE:
                    record.created["upload"].append(buffer)
                if usage & wgpu.BufferUsage.MAP_READ:
                    record.created["download"].append(buffer)
            return buffer

        monkeypatch.setattr(context.gpu, "create_buffer", create_buffer)
        return record

    return spy


@attrs.frozen
class ChildResult:
    """How a child interpreter ended: exit code, output, and its last stdout line as JSON."""

    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """Exit code and both streams, for assertion messages."""
        return (
            f"exit code {self.returncode}\n--- stdout ---\n{self.stdout}\n"
            f"--- stderr ---\n{self.stderr}"
        )

    def report(self) -> Any:
        """The JSON value the child printed last; fails the test if the child
        did not exit cleanly or printed none."""
        assert self.returncode == 0, f"the child interpreter failed: {self.describe()}"
        lines = self.stdout.strip().splitlines()
        assert lines, f"the child printed nothing: {self.describe()}"
        return json.loads(lines[-1])


@pytest.fixture
def run_child(xdg_runtime_dir: str) -> Callable[..., ChildResult]:
    """Run Python source in a child interpreter (``sys.executable -c``) with
    XDG_RUNTIME_DIR set; ``args`` become ``sys.argv[1:]``."""

    def run(source: str, *args: str) -> ChildResult:
        child_env = dict(os.environ, XDG_RUNTIME_DIR=xdg_runtime_dir, PYTHONFAULTHANDLER="1")
        completed = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source), *args],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            env=child_env,
            check=False,
        )
        return ChildResult(completed.returncode, completed.stdout, completed.stderr)

    return run
