"""The ``tensorferry`` command and ``tensorferry bench``: versions, JSON, exit statuses,
and nothing written when the device asked for cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import tensorferry
from tensorferry import ENTRY_POINT_GROUP
from tensorferry.cli import EXIT_UNAVAILABLE, main

Install = Callable[..., None]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tensorferry {tensorferry.__version__}"


def test_devices_table_marks_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["*", "cpu", "cpu"]
    assert "TENSORFERRY_DEVICE overrides it" in out


def test_devices_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORFERRY_DEVICE", "cpu")
    assert main(["devices", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == tensorferry.__version__
    assert document["default"] == "cpu"
    host = document["devices"][0]
    assert host == {
        "device": "cpu",
        "backend": "cpu",
        "index": 0,
        "type": "cpu",
        "memory": "default",
        "vendor_id": 0,
        "device_id": 0,
        "name": "host memory",
        "properties": {},
        "dlpack": [1, 0],
        "default": True,
    }
    assert isinstance(document["backend_errors"], dict)


def test_devices_spec_that_names_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "no-such-device-here"]) == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no backend, device type or device name matches 'no-such-device-here'" in captured.err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["devices", "--nope"])
    assert info.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_verbose_logs_the_choice() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tensorferry", "-v", "devices", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "tensorferry.policy: INFO: policy DEFAULT chose" in completed.stderr


# bench -------------------------------------------------------------------------------


def test_bench_unknown_device_measures_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["bench", "--device", "cpu:7", "--json", str(tmp_path / "r.json")])
    assert status == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot use device 'cpu:7': no device 'cpu:7'" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_bench_backend_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], installed_backends: Install
) -> None:
    """As without the webgpu extra: the default device's backend fails to import."""
    installed_backends(
        EntryPoint("webgpu", "tensorferry_no_such_module:create_backend", ENTRY_POINT_GROUP)
    )
    status = main(["bench", "--json", str(tmp_path / "r.json")])
    assert status == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot use device 'webgpu'" in err
    assert "tensorferry_no_such_module" in err
    assert list(tmp_path.iterdir()) == []


def test_bench_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "issue" not in text
    assert "performance targets" in text


def test_bench_quick_measures_the_headline_sizes() -> None:
    from tensorferry.bench._cli import _quick_sizes
    from tensorferry.bench._targets import TARGET_SETS

    for name, targets in TARGET_SETS.items():
        sizes = _quick_sizes([name])
        for target in targets:
            if not target.workload.op.is_batch:
                assert target.workload.nbytes in sizes, (name, target.text)


def test_bench_small_run_on_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "out" / "r.json"
    status = main(
        [
            "bench",
            "--device=cpu",
            "--sizes=4K",
            "--batch=8x1K",
            "--paths=tensorferry,numpy.copyto",
            "--repeats=1",
            "--warmup=0",
            "--min-time=0",
            "--no-progress",
            "--json",
            str(result),
        ]
    )
    assert status == 0
    document = json.loads(result.read_text())
    assert document["device"]["spec"] == "cpu"
    measured = {(r["op"], r["path"]) for r in document["results"] if r["verified"]}
    assert ("batch-upload", "tensorferry") in measured
    assert ("h2h", "tensorferry") in measured
    assert "wrote" in capsys.readouterr().out


def test_bench_plot_shows_batches(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tensorferry.bench._plot import draw_plot
    from tensorferry.bench._runner import BenchConfig, run_benchmark
    from tensorferry.bench._timing import Timing

    config = BenchConfig(
        device="cpu",
        sizes=(4096,),
        batch_count=4,
        paths=("tensorferry", "numpy.copyto"),
        timing=Timing(warmup=0, min_repeats=1, min_seconds=0, max_repeats=1),
        progress=False,
    )
    outcome = run_benchmark(config)
    import matplotlib.pyplot as plt

    drawn: list[object] = []
    real_savefig = plt.Figure.savefig

    def savefig(figure: plt.Figure, *args: object, **kwargs: object) -> None:
        drawn.append(figure)
        real_savefig(figure, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt.Figure, "savefig", savefig)
        draw_plot(outcome, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    (figure,) = drawn
    titles = [axis.get_title() for axis in figure.axes if axis.get_visible()]  # type: ignore[attr-defined]
    assert "batches of 4 x 1 KiB" in titles
    assert "batches of 4 x 1 KiB" in figure._suptitle.get_text()  # type: ignore[attr-defined]
