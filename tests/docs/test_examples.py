"""Every example in examples/ runs, on the devices CI has (lavapipe, llvmpipe)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunPython = Callable[..., subprocess.CompletedProcess[str]]
Needs = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(path.name for path in (ROOT / "examples").glob("*.py"))


def test_every_example_is_listed_here() -> None:
    assert EXAMPLES == [
        "bring_your_own_wgpu_device.py",
        "choosing_a_device.py",
        "numpy_round_trip.py",
        "torch_and_dlpack.py",
        "writing_a_backend.py",
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(run_python: RunPython, needs: Needs, name: str) -> None:
    needs((ROOT / "examples" / name).read_text())
    completed = run_python(f"examples/{name}")
    assert completed.stdout.strip(), "an example shows what it did"
    assert "XDG_RUNTIME_DIR" not in completed.stderr


@pytest.mark.parametrize("name", ["numpy_round_trip.py", "torch_and_dlpack.py"])
@pytest.mark.parametrize("device", ["webgpu:0", "webgpu:1"])
def test_example_on_each_adapter(
    run_python: RunPython, needs: Needs, name: str, device: str
) -> None:
    needs((ROOT / "examples" / name).read_text() + "\nimport tensorferry_webgpu")
    completed = run_python(f"examples/{name}", device)
    if name == "numpy_round_trip.py":
        assert f"device: {device}" in completed.stdout


def test_choosing_a_device_logs_its_choices(run_python: RunPython) -> None:
    completed = run_python("examples/choosing_a_device.py")
    assert "tensorferry.policy: policy MAX_PERFORMANCE chose" in completed.stderr
