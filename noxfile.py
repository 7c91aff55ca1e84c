"""Test matrix: ``nox`` runs lint, typecheck, the tests of every backend on every
supported Python, the toy third-party backend, and the docs (the site, the
examples and the README's code blocks).

``nox -s tests-3.12`` runs both backends on 3.12; ``nox -s "tests(backend='webgpu')"``
runs one backend on every Python; ``nox -s bench -- --quick`` measures.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "toy", "docs"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
BACKENDS = ["cpu", "webgpu"]


def _add_pyenv_interpreters() -> None:
    """Put pyenv-installed interpreters of the supported versions first on PATH.

    pyenv's shims answer to ``python3.12`` even where that version is not
    selected (and then fail), so the real ``versions/*/bin`` folders go first.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    extra = [
        path
        for version in PYTHONS
        for path in sorted(glob.glob(f"{root.stdout.strip()}/versions/{version}.*/bin"))[-1:]
    ]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_add_pyenv_interpreters()
# A missing interpreter is an error to report, not something for uv to download.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


ISOLATED = ("-n", "auto")
"""pytest-xdist workers: a test that takes its interpreter down (a wgpu panic aborts
the process) fails by name and a fresh worker runs the rest, instead of the whole
session dying; on two cores the workers also halve the wall time."""


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session(python=PYTHONS)
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The core tests and the conformance suite for one backend, from an installed wheel."""
    session.install(".[webgpu]" if backend == "webgpu" else ".", *_group("test"))
    session.run("python", "-m", "tensorferry", "devices")
    session.run(
        "python", "-m", "pytest", *ISOLATED, f"tests/{'core' if backend == 'cpu' else backend}"
    )
    session.run(
        "python",
        "-m",
        "pytest",
        *ISOLATED,
        "--pyargs",
        "tensorferry.conformance",
        f"--tensorferry-backend={backend}",
        *session.posargs,
    )


@nox.session
def toy(session: nox.Session) -> None:
    """A third-party backend (tests/toy_backend) passes the shipped suite unchanged."""
    session.install(".", "./tests/toy_backend", *_group("test"))
    session.run(
        "python", "-m", "pytest", "--pyargs", "tensorferry.conformance", "--tensorferry-backend=toy"
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core (with the benchmark), the backends, the probes and this file."""
    session.install(".[webgpu,bench]", *_group("typecheck"))
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The API reference site (mkdocs, warnings as errors) into build/site; every
    example and every Python block of the README, run as a reader would."""
    session.install(".[webgpu]", *_group("docs"), *_group("test"))
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "-m", "pytest", "tests/docs", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side transfer benchmarks (pass options after --, e.g. -- --quick)."""
    session.install(".[webgpu,bench]")
    session.run("python", "-m", "tensorferry", "bench", *session.posargs)
