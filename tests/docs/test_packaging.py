"""What the installed distribution ships: three packages each with py.typed, the
license, one version, and a core that never loads the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import tensorferry

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"tensorferry", "tensorferry_cpu", "tensorferry_webgpu"}


def _editable() -> bool:
    direct = distribution("tensorferry").read_text("direct_url.json")
    return bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))


def test_packages_license_and_py_typed() -> None:
    dist = distribution("tensorferry")
    if _editable():  # an editable install records no files: check what the wheel takes
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())
        packages = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
        assert {Path(p).name for p in packages} == PACKAGES
        for package in packages:
            assert (ROOT / package / "py.typed").is_file(), package
        assert config["project"]["license-files"] == ["LICENSE"]
        assert "MIT License" in (ROOT / "LICENSE").read_text()
        return
    files = {str(f) for f in dist.files or ()}
    top = {
        f.split("/")[0]
        for f in files
        if "/" in f and not f.startswith("..") and ".dist-info" not in f.split("/")[0]
    }  # "../../bin/tensorferry" is the console script
    assert top == PACKAGES, "one library wheel, no separate benchmark package"
    for package in PACKAGES:
        assert f"{package}/py.typed" in files
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)


def test_one_version() -> None:
    assert distribution("tensorferry").version == tensorferry.__version__
    assert "version" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_cli_never_loads_the_benchmark() -> None:
    code = (
        "import sys, tensorferry.cli\n"
        "tensorferry.cli.main(['devices', 'cpu'])\n"
        "loaded = [m for m in ('tensorferry.bench', 'tqdm', 'matplotlib') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
