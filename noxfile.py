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
nox.options.sessions = ["lint", "typecheck", "tests", "toy", "mutants", "docs"]

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
    # tests/core routes between the toy backend's two devices (no transfer connects them)
    targets = [".[webgpu]"] if backend == "webgpu" else [".", "./tests/toy_backend"]
    session.install(*targets, *_group("test"))
    session.run("python", "-m", "tensorferry", "devices")
    # the benchmark's tests measure on the machine's wgpu adapters
    suites = ["tests/core"] if backend == "cpu" else ["tests/webgpu", "tests/bench"]
    session.run("python", "-m", "pytest", *ISOLATED, *suites)
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


SUITE = ("python", "-m", "pytest", "-p", "no:cacheprovider", "--pyargs")
EXTRA_BACKENDS = ["cpu", "toy", "webgpu"]


def _install_for(session: nox.Session, backend: str) -> None:
    session.install(".[webgpu]" if backend == "webgpu" else ".", *_group("test"))
    if backend == "toy":
        session.install("./tests/toy_backend")


@nox.session
def mutants(session: nox.Session) -> None:
    """Each bug TENSORFERRY_TOY_MUTANT plants in the toy backend fails the shipped suite.

    One child pytest per mutant (exit status 1 required: tests failed, nothing
    else); the log names the first test that caught each.
    """
    session.install(".", "./tests/toy_backend", *_group("test"))
    listing = session.run(
        "python", "-c", "import tensorferry_toy as t; print(*t.MUTANTS)", silent=True
    )
    names = str(listing).split()
    caught: dict[str, str] = {}
    for name in names:
        output = session.run(
            *SUITE,
            "tensorferry.conformance",
            "--tensorferry-backend=toy",
            "-x",
            "-q",
            # the property-based tests catch mutants too, but shrink for minutes first
            "-k",
            "not test_random_programs_match_numpy",
            env={"TENSORFERRY_TOY_MUTANT": name},
            success_codes=[1],
            silent=True,
        )
        failed = [line for line in str(output).splitlines() if line.startswith("FAILED")]
        caught[name] = failed[0] if failed else "(exit status 1)"
    for name, line in caught.items():
        session.log(f"mutant {name!r} caught: {line}")


@nox.session
@nox.parametrize("backend", EXTRA_BACKENDS)
def fuzz(session: nox.Session, backend: str) -> None:
    """The property-based tests with 10,000 examples per device (override: -- N)."""
    _install_for(session, backend)
    examples = session.posargs[0] if session.posargs else "10000"
    session.run(
        *SUITE,
        "tensorferry.conformance.test_fuzz",
        f"--tensorferry-backend={backend}",
        f"--tensorferry-fuzz-examples={examples}",
    )


@nox.session
@nox.parametrize("backend", EXTRA_BACKENDS)
def soak(session: nox.Session, backend: str) -> None:
    """100 environment cycles and 100,000 mixed copies with flat resident memory."""
    _install_for(session, backend)
    session.run(
        *SUITE,
        "tensorferry.conformance.test_soak",
        f"--tensorferry-backend={backend}",
        "--tensorferry-soak",
    )


@nox.session
@nox.parametrize("backend", EXTRA_BACKENDS)
def exits(session: nox.Session, backend: str) -> None:
    """Each interpreter-exit scenario in 100 child interpreters (override: -- N)."""
    _install_for(session, backend)
    runs = session.posargs[0] if session.posargs else "100"
    session.run(
        *SUITE,
        "tensorferry.conformance.test_lifetime",
        "-k",
        "test_interpreter_exit_is_clean",
        f"--tensorferry-backend={backend}",
        f"--tensorferry-exit-runs={runs}",
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
