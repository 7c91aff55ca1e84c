"""Every Python code block of README.md runs on its own, as a reader would paste it."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunPython = Callable[..., subprocess.CompletedProcess[str]]
Needs = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text())


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(run_python: RunPython, needs: Needs, index: int) -> None:
    source = BLOCKS[index]
    needs(source)
    run_python("-c", source)
