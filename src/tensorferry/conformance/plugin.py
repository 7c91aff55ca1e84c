"""The pytest plugin behind ``python -m pytest --pyargs tensorferry.conformance``.

Registered as the ``pytest11`` entry point ``tensorferry``, so it loads in every
pytest run where tensorferry is installed. It therefore imports only the
standard library and pytest at module level, and does nothing until a test asks
for one of its fixtures: only then does it import tensorferry and open the
session :class:`tensorferry.Environment` (closed when the session ends).

Fixtures (all named ``tensorferry_*``; parametrized ones get readable ids):

* ``tensorferry_pair``: every :class:`DevicePair` of the selected devices and
  the host where at least one side belongs to a selected backend
  (``cpu->mybackend:0``).
* ``tensorferry_direct_pair``: the pairs that one registered transfer copies
  directly (the others are routed through host memory by the manager).
* ``tensorferry_device``: every device of the selected backends.
* ``tensorferry_backend``: every selected backend's name.
* ``tensorferry_env``: the session environment, restricted to the selected backends.
* ``tensorferry_other_env``: a second session environment, for foreign-tensor tests.
* ``tensorferry_new_env``: a factory of fresh environments, closed after the test.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tensorferry import Device, Environment

__all__ = ["FIGURES", "FUZZ_COUNTS", "DevicePair"]

# The suite's shared checks live in a helper module; let pytest rewrite its asserts.
pytest.register_assert_rewrite("tensorferry.conformance._support")

_GROUP = "tensorferry.backends"
_HOST_BACKEND = "cpu"
_OPTION = "--tensorferry-backend"
_MARKER = "tensorferry_conformance"
_ISOLATED = "tensorferry_isolated"
_SOAK = "tensorferry_soak"
_CHILD = "TENSORFERRY_CONFORMANCE_CHILD"
"""Set in the child interpreter an isolated test runs in."""
_CHILD_TIMEOUT = 600

FUZZ_COUNTS: dict[str, int] = {}
"""Property-based examples run in this process, by device; the summary reports them."""

FIGURES: list[str] = []
"""Measured figures (soak tests) for the terminal summary, one line each."""


class DevicePair(NamedTuple):
    """A ``(src, dst)`` pair of devices a test copies between; ``str()`` is ``"src->dst"``."""

    src: Device
    dst: Device

    def __str__(self) -> str:
        return f"{self.src}->{self.dst}"


def _installed_backends() -> list[str]:
    return sorted({ep.name.lower() for ep in importlib.metadata.entry_points(group=_GROUP)})


class _Selection:
    """The backends under test and the session environments, opened on first need."""

    def __init__(self, requested: list[str] | None) -> None:
        self.requested = requested
        self.names: list[str] = []
        self.not_loaded: dict[str, str] = {}
        self.without_devices: list[str] = []
        self.devices: list[Device] = []
        self.pairs: list[DevicePair] = []
        self.direct_pairs: list[DevicePair] = []
        self._env: Environment | None = None
        self._other: Environment | None = None

    @property
    def opened(self) -> bool:
        """True once the session environment exists."""
        return self._env is not None

    def environment(self) -> Environment:
        """The session environment; raises ``pytest.UsageError`` when a selected
        backend fails to load or has no devices."""
        if self._env is None:
            self._env = self._open()
        return self._env

    def other_environment(self) -> Environment:
        """A second environment over the same backends, for foreign-tensor tests."""
        if self._other is None:
            import tensorferry

            self._other = tensorferry.Environment(backends=self.names)
        return self._other

    def _open(self) -> Environment:
        import tensorferry

        if self.requested is None:
            env = tensorferry.Environment()
            names = env.load_all()
            self.not_loaded = env.backend_errors
        else:
            env = tensorferry.Environment(backends=self.requested)
            names = list(dict.fromkeys(self.requested))
            for name in names:
                try:
                    env.backend(name)
                except tensorferry.BackendUnavailableError:
                    env.close()
                    raise pytest.UsageError(
                        f"{_OPTION}={name}: the backend failed to load: "
                        f"{env.backend_errors.get(name, 'no reason recorded')}"
                    ) from None
        by_backend = {name: list(env.backend(name).devices()) for name in names}
        self.without_devices = [name for name, devices in by_backend.items() if not devices]
        if self.without_devices and self.requested is not None:
            env.close()
            raise pytest.UsageError(
                f"{_OPTION}: backend(s) {', '.join(self.without_devices)} loaded but list no "
                "devices; a backend needs at least one device to be tested"
            )
        self.names = [name for name in names if by_backend[name]]
        self.devices = [d for name in self.names for d in by_backend[name]]
        universe = list(dict.fromkeys([tensorferry.HOST, *self.devices]))
        manager = env.data_transfer_manager
        self.pairs = [
            DevicePair(src, dst)
            for src in universe
            for dst in universe
            if src.backend in self.names or dst.backend in self.names
        ]
        self.direct_pairs = [
            p for p in self.pairs if manager.get_data_transfer(p.src, p.dst) is not None
        ]
        return env

    def summary(self) -> list[str]:
        """Lines for the terminal summary: what was tested, and what was not."""
        routed = [str(p) for p in self.pairs if p not in self.direct_pairs]
        lines = [
            f"backends: {', '.join(self.names)}",
            f"devices: {', '.join(str(d) for d in self.devices)}",
            f"device pairs: {len(self.pairs)} ({len(routed)} routed through host memory"
            + (f": {', '.join(routed)})" if routed else ")"),
        ]
        lines += [f"not tested, failed to load: {reason}" for reason in self.not_loaded.values()]
        lines += [f"not tested, lists no devices: {name}" for name in self.without_devices]
        return lines

    def close(self) -> None:
        """Close the session environments, if they were opened."""
        for env in (self._other, self._env):
            if env is not None:
                env.close()


_SELECTION = pytest.StashKey[_Selection]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--tensorferry-backend``."""
    group = parser.getgroup("tensorferry", "tensorferry conformance suite")
    group.addoption(
        _OPTION,
        action="append",
        dest="tensorferry_backends",
        metavar="NAME",
        default=None,
        help=(
            "backend to run the tensorferry conformance suite against (repeatable); "
            "default: every backend that loads"
        ),
    )
    group.addoption(
        "--tensorferry-fuzz-examples",
        type=int,
        default=None,
        metavar="N",
        help="hypothesis examples per device for the property-based tests (default: a quick 30)",
    )
    group.addoption(
        "--tensorferry-exit-runs",
        type=int,
        default=1,
        metavar="N",
        help="how many child interpreters each exit scenario runs (default 1)",
    )
    group.addoption(
        "--tensorferry-soak",
        action="store_true",
        default=False,
        help="also run the soak tests (marker tensorferry_soak), deselected otherwise",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and check the requested backend names."""
    config.addinivalue_line(
        "markers", f"{_MARKER}: a test of tensorferry's shipped conformance suite"
    )
    config.addinivalue_line(
        "markers",
        f"{_ISOLATED}: run the test in a child interpreter, so a crash fails it by name",
    )
    config.addinivalue_line(
        "markers", f"{_SOAK}: a long soak test, run only with --tensorferry-soak"
    )
    requested = config.getoption("tensorferry_backends")
    if requested is not None:
        requested = [name.strip().lower() for name in requested]
        installed = _installed_backends()
        unknown = [name for name in requested if name not in installed]
        if unknown:
            raise pytest.UsageError(
                f"{_OPTION}: no backend named {', '.join(map(repr, unknown))}; available "
                f"backends: {', '.join(installed) or 'none'} (entry-point group {_GROUP!r})"
            )
    config.stash[_SELECTION] = _Selection(requested)


def pytest_collection(session: pytest.Session) -> None:
    """Open the environment now when backends were named, so load errors are usage errors."""
    selection = session.config.stash[_SELECTION]
    if selection.requested is not None:
        selection.environment()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the ``tensorferry_*`` device fixtures a test asks for."""
    wanted = {
        "tensorferry_pair",
        "tensorferry_direct_pair",
        "tensorferry_device",
        "tensorferry_backend",
    }.intersection(metafunc.fixturenames)
    if not wanted:
        return
    selection = metafunc.config.stash[_SELECTION]
    selection.environment()
    values: dict[str, Iterable[object]] = {
        "tensorferry_pair": selection.pairs,
        "tensorferry_direct_pair": selection.direct_pairs,
        "tensorferry_device": selection.devices,
        "tensorferry_backend": selection.names,
    }
    for name in sorted(wanted):
        params = list(values[name])
        metafunc.parametrize(name, params, ids=[str(p) for p in params], scope="function")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the suite's own tests with ``tensorferry_conformance``; deselect soak
    tests unless ``--tensorferry-soak`` asks for them."""
    for item in items:
        module = getattr(item, "module", None)
        if getattr(module, "__name__", "").startswith(f"{__package__}."):
            item.add_marker(_MARKER)
    if config.getoption("tensorferry_soak"):
        return
    soak = [item for item in items if item.get_closest_marker(_SOAK)]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker(_SOAK)]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``tensorferry_isolated`` test in a child interpreter (unless this is
    that child): an abort there fails the test by name, and the session goes on."""
    if os.environ.get(_CHILD) or pyfuncitem.get_closest_marker(_ISOLATED) is None:
        return None
    _run_in_child(pyfuncitem)
    return True


def _run_in_child(item: pytest.Function) -> None:
    config = item.config
    _, _, inside = item.nodeid.partition("::")
    options = [f"{_OPTION}={name}" for name in config.getoption("tensorferry_backends") or []]
    examples = config.getoption("tensorferry_fuzz_examples")
    if examples is not None:
        options.append(f"--tensorferry-fuzz-examples={examples}")
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"{item.path}::{inside}",
        *options,
        f"--tensorferry-exit-runs={config.getoption('tensorferry_exit_runs')}",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-o",
        "addopts=",
    ]
    env = {**os.environ, _CHILD: "1"}
    try:
        result = subprocess.run(
            command,
            cwd=config.invocation_params.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=_CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{item.nodeid} hung: its child interpreter ran past {exc.timeout} s")
    if result.returncode == 0:
        return
    if result.returncode < 0:
        how = f"was killed by {signal.Signals(-result.returncode).name}"
    elif result.returncode == 5:
        how = "was not collected in the child interpreter"
    else:
        how = f"failed (exit status {result.returncode})"
    output = (result.stdout + result.stderr)[-6000:]
    pytest.fail(f"{item.nodeid} {how} in its child interpreter:\n{output}", pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which backends, devices and pairs were tested, when the suite ran."""
    selection = terminalreporter.config.stash.get(_SELECTION, None)
    if selection is None or not selection.opened:
        return
    terminalreporter.write_sep("-", "tensorferry conformance")
    for line in selection.summary():
        terminalreporter.write_line(line)
    if FUZZ_COUNTS:
        counts = ", ".join(f"{device}: {count}" for device, count in FUZZ_COUNTS.items())
        terminalreporter.write_line(f"property-based examples run, by device: {counts}")
    for line in FIGURES:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the session environments."""
    session.config.stash[_SELECTION].close()


@pytest.fixture(scope="session")
def tensorferry_env(pytestconfig: pytest.Config) -> Environment:
    """The session :class:`tensorferry.Environment`, restricted to the selected backends."""
    return pytestconfig.stash[_SELECTION].environment()


@pytest.fixture(scope="session")
def tensorferry_other_env(pytestconfig: pytest.Config) -> Environment:
    """A second environment over the selected backends; its tensors are foreign to
    ``tensorferry_env``."""
    selection = pytestconfig.stash[_SELECTION]
    selection.environment()
    return selection.other_environment()


@pytest.fixture
def tensorferry_new_env(
    pytestconfig: pytest.Config,
) -> Iterator[Callable[[], Environment]]:
    """A factory of fresh environments over the selected backends, closed after the test.

    Use it for tests that change an environment (unregister transfers, close it).
    """
    import tensorferry

    selection = pytestconfig.stash[_SELECTION]
    selection.environment()
    made: list[Environment] = []

    def new_env() -> Environment:
        env = tensorferry.Environment(backends=selection.names)
        made.append(env)
        return env

    yield new_env
    for env in made:
        env.close()
