"""BackendRegistry: which backends exist, and turning a name into a loaded backend.

Backends are found through the entry-point group ``tensorferry.backends``
(importing nothing until a backend is asked for), may be added at run time as
an instance or a factory, and fail to load with a message that says why and
what to install. :class:`tensorferry.Environment` owns one registry; the
registry owns no backend (the environment keeps and closes what it loads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from tensorferry._spec import normalize_backend_name
from tensorferry.backend import Backend, BackendFactory
from tensorferry.errors import BackendUnavailableError, UnknownDeviceError

__all__ = ["ENTRY_POINT_GROUP", "HOST_BACKEND", "BackendRegistry", "install_hint"]

ENTRY_POINT_GROUP = "tensorferry.backends"
"""The entry-point group backends register their factory under."""

HOST_BACKEND = "cpu"
"""The backend that owns :data:`tensorferry.HOST`; every environment may load it."""

_INSTALL_HINTS = {
    "cpu": "pip install tensorferry",
    "webgpu": "pip install 'tensorferry[webgpu]'",
}
"""How to install the backends that ship with tensorferry, for error messages."""


def install_hint(name: str) -> str:
    """A sentence saying how to get backend ``name``, or ``""`` when unknown."""
    hint = _INSTALL_HINTS.get(name)
    return f"; install it with {hint}" if hint else ""


class BackendRegistry:
    """The backends one environment may load, by name, and why some failed to.

    ``allowed`` restricts the registry to those names (the host backend is
    always allowed); it raises :class:`UnknownDeviceError` naming the installed
    backends when one of them is not installed.
    """

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, EntryPoint | BackendFactory] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._sources.setdefault(ep.name.lower(), ep)
        self._errors: dict[str, str] = {}
        self._left_out: list[str] = []
        if allowed is None:
            return
        if isinstance(allowed, str):
            allowed = [allowed]
        wanted = {normalize_backend_name(name) for name in allowed} | {HOST_BACKEND}
        unknown = sorted(wanted - self._sources.keys())
        if unknown:
            hints = "".join(install_hint(name) for name in unknown)
            raise UnknownDeviceError(
                f"no installed backend named {', '.join(map(repr, unknown))}; "
                f"installed backends: {sorted(self._sources)}{hints}"
            )
        self._left_out = sorted(self._sources.keys() - wanted)
        self._sources = {k: v for k, v in self._sources.items() if k in wanted}

    @property
    def names(self) -> list[str]:
        """Names of the backends that may load, host backend first, then by name."""
        return sorted(self._sources, key=lambda n: (n != HOST_BACKEND, n))

    @property
    def errors(self) -> dict[str, str]:
        """Why each backend that failed to load did so, by name."""
        return dict(self._errors)

    def failed(self, name: str) -> bool:
        """True when backend ``name`` failed to load before (it is not retried)."""
        return name in self._errors

    def load(self, name: str) -> Backend:
        """Create backend ``name`` from its entry point or factory.

        Raises :class:`UnknownDeviceError` when no backend has that name,
        :class:`BackendUnavailableError` (remembered, and raised again on later
        calls) when it fails to import or its factory fails or returns something
        that is not a :class:`Backend` of that name.
        """
        name = normalize_backend_name(name)
        with self._lock:
            if name in self._errors:
                raise BackendUnavailableError(self._errors[name])
            source = self._sources.get(name)
        if source is None:
            why = (
                f"; it is installed, but this environment was created with backends={self.names}"
                if name in self._left_out
                else install_hint(name)
            )
            raise UnknownDeviceError(
                f"no backend named {name!r}; available backends: {self.names}{why}"
            )
        try:
            return _instantiate(name, source)
        except Exception as exc:
            with self._lock:
                self._errors[name] = f"backend {name!r} is unavailable: {exc}"
            raise BackendUnavailableError(self._errors[name]) from exc

    def add(self, name: str, backend: Backend | BackendFactory) -> Backend:
        """Make ``backend`` (an instance, or a factory called once, now) the one named
        ``name``, replacing an entry point or an earlier failure; return the instance.

        Raises ``TypeError`` when a factory returns no :class:`Backend`,
        ``ValueError`` when the backend's ``name`` differs.
        """
        name = normalize_backend_name(name)
        instance = _instantiate(
            name, (lambda: backend) if isinstance(backend, Backend) else backend
        )
        with self._lock:
            self._sources[name] = lambda: instance
            self._errors.pop(name, None)
        return instance

    def remove(self, name: str) -> None:
        """Forget backend ``name`` (a no-op when it is unknown)."""
        with self._lock:
            self._sources.pop(normalize_backend_name(name), None)


def _instantiate(name: str, source: EntryPoint | BackendFactory) -> Backend:
    factory: BackendFactory
    if isinstance(source, EntryPoint):
        try:
            factory = source.load()
        except ImportError as exc:
            dist = source.dist.name if source.dist else "its distribution"
            raise BackendUnavailableError(
                f"entry point {source.value!r} failed to import ({exc}); reinstall {dist} "
                f"with the extras it needs{install_hint(name)}"
            ) from exc
    else:
        factory = source
    backend = factory()
    if not isinstance(backend, Backend):
        raise TypeError(
            f"factory of backend {name!r} returned {type(backend).__name__}, "
            "expected a tensorferry.Backend"
        )
    if backend.name != name:
        raise ValueError(f"backend registered as {name!r} calls itself {backend.name!r}")
    return backend
