"""Fixtures of the documentation tests: run a Python file or source in a child
interpreter, as a reader would, from the repository root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: examples/, README.md, mkdocs.yml."""

TIMEOUT = 300
"""Seconds one example or README block may run."""


def _needs(source: str) -> None:
    for package in ("torch", "wgpu", "tensorferry_webgpu", "matplotlib"):
        if f"import {package}" in source:
            pytest.importorskip(package)


@pytest.fixture
def needs() -> Callable[[str], None]:
    """``needs(source)`` skips, by name, a program that imports an optional package
    that is absent (torch, wgpu...)."""
    return _needs


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_python(args...)``: ``python args...`` from the repository root; fails the
    test, showing both streams, unless it exits 0."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert completed.returncode == 0, (
            f"python {' '.join(args)[:200]} exited {completed.returncode}\n"
            f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}"
        )
        return completed

    return run
