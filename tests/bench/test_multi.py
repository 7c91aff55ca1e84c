"""The multi-device workloads on lavapipe (Vulkan) and llvmpipe (GL): they run verified,
print their rates and target lines, and say cleanly what needs two devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tensorferry as tf
from tensorferry.bench import main
from tensorferry.bench._multi import measure_gpu_to_gpu, run_multi
from tensorferry.bench._timing import Timing

pytest.importorskip("wgpu")

_ONE_RUN = Timing(warmup=0, min_repeats=1, min_seconds=0.0, max_repeats=1)
_TINY = ["--no-progress", "--warmup", "0", "--repeats", "1", "--min-time", "0"]


def test_fan_out_and_gpu_to_gpu_run_verified_on_two_adapters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path = tmp_path / "bench.json"
    status = main(
        [
            *_TINY,
            "--workloads",
            "fan-out,gpu-to-gpu",
            "--gpu-to-gpu-sizes",
            "24MiB",
            "--model-tensors",
            "40",
            "--model-max-size",
            "1MiB",
            "--paths",
            "tensorferry",
            "--json",
            str(json_path),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    with tf.Environment() as env:
        count = len([d for d in env.devices() if d.backend == "webgpu"])
    if count < 2:
        pytest.fail(f"this test needs lavapipe and llvmpipe (two webgpu devices), found {count}")
    rates = json.loads(json_path.read_text())["multi_device"]["rates"]
    measured = {r["label"]: r for r in rates}
    for label in (
        "model-load on webgpu:0 alone",
        f"fan-out over {count} devices, concurrent",
        f"fan-out over {count} devices, one group after another",
        "gpu-to-gpu 24 MiB: webgpu:0 -> webgpu:1, routed through host",
        "gpu-to-gpu 24 MiB: download from webgpu:0",
        "gpu-to-gpu 24 MiB: upload to webgpu:1",
    ):
        assert measured[label]["samples"], (label, measured[label]["error"])
    assert f"host copy limit, numpy on {count} thread(s)" in measured
    assert "multi-device targets" in out
    assert f"fan-out over {count} devices = " in out
    assert "gpu-to-gpu 24 MiB: routed copy " in out


def test_one_device_says_it_needs_two() -> None:
    with tf.Environment(backends=["cpu", "webgpu"]) as env:
        device = env.device("webgpu")
        rates, lines = measure_gpu_to_gpu(env, [device], 1 << 20, _ONE_RUN)
        assert rates == []
        assert lines == [f"gpu-to-gpu 1 MiB: needs two devices, found 1 ({device})"]
        report = run_multi(env, "webgpu", ["fan-out"], parts=[4096, 8192], timing=_ONE_RUN)
        assert report.targets  # two adapters: a ratio line; one: says it needs two
        assert report.targets[0].startswith("fan-out")


def test_a_backend_without_devices_is_reported_not_raised() -> None:
    with tf.Environment(backends=["cpu"]) as env:
        report = run_multi(env, "webgpu", ["fan-out", "gpu-to-gpu"], parts=[4096], timing=_ONE_RUN)
    assert report.rates == []
    assert report.notes == ["no webgpu devices: the multi-device workloads need two"]
    assert "no webgpu devices" in report.render()
