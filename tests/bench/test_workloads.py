"""The latency, decode-step, model-load and sustained workloads of ``tensorferry bench``:
each runs on lavapipe and on the host with tiny sizes, every path's data is verified
before it is timed, the JSON holds what the report shows, and a path that delivers
wrong data is reported as such, never timed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tensorferry as tf
from tensorferry.bench import main
from tensorferry.bench._runner import measure_workload
from tensorferry.bench._suites import (
    DECODE_VOCAB,
    ModelLoad,
    is_gpu,
    max_buffer_size,
    plan_workloads,
)
from tensorferry.bench._tensorferry import TensorferryPath
from tensorferry.bench._timing import Timing
from tensorferry.bench._workload import Op

pytest.importorskip("wgpu")

_TINY = ["--no-progress", "--warmup", "0", "--repeats", "2", "--min-time", "0"]
_ONE_RUN = Timing(warmup=0, min_repeats=1, min_seconds=0.0, max_repeats=1)


def _bench(tmp_path: Path, *options: str) -> tuple[int, dict[str, Any]]:
    """Run ``tensorferry bench`` in this process; its exit status and JSON document."""
    json_path = tmp_path / "bench.json"
    status = main([*_TINY, *options, "--json", str(json_path), "--plot", str(tmp_path / "p.png")])
    return status, json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def lavapipe() -> None:
    """Skip unless the default webgpu device is a CPU adapter (these tests' sizes and
    notes are lavapipe's)."""
    with tf.Environment() as env:
        if is_gpu(env.device("webgpu")):
            pytest.skip("the default webgpu device is a GPU, not lavapipe")


def _measured(document: dict[str, Any], workload: str) -> dict[tuple[str, str, int], Any]:
    """(path, op, nbytes) -> result entry, for one workload's results."""
    entries = [r for r in document["results"] if r["workload"] == workload]
    return {(r["path"], r["op"], r["nbytes"]): r for r in entries}


@pytest.mark.parametrize("device", ["webgpu", "cpu"])
def test_every_new_workload_runs_verified(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = _bench(
        tmp_path,
        "--device",
        device,
        "--workloads",
        "latency,decode-step,model-load,sustained",
        "--latency-samples",
        "5",
        "--model-tensors",
        "12",
        "--model-max-size",
        "256K",
        "--sustained-sizes",
        "64K",
        "--paths",
        "tensorferry,wgpu-py,numpy.copyto,torch-cuda,ort-webgpu",
    )
    report = capsys.readouterr().out
    assert status == 0, report
    assert all(r["verified"] for r in document["results"]), report

    latency = _measured(document, "latency")
    for path in ("tensorferry", "wgpu-py"):
        for op in ("upload", "download", "roundtrip"):
            entry = latency[(path, op, 4096)]
            assert len(entry["samples_s"]) == 5
            assert 0 < entry["p50_us"] <= entry["p99_us"]
    decode = _measured(document, "decode-step")
    for op in ("decode-step", "decode-step-batched"):
        assert {p for p, o, _ in decode if o == op} == {"tensorferry", "wgpu-py"}
        assert decode[("tensorferry", op, 4 * DECODE_VOCAB)]["p99_us"] > 0

    model = _measured(document, "model-load")
    assert {(p, o) for p, o, _ in model} == {
        (p, o)
        for p in ("tensorferry", "wgpu-py", "numpy.copyto")
        for o in ("model-load", "model-load-existing")
    }
    sizes = next(iter(model.values()))["tensor_nbytes"]
    assert len(sizes) == 12
    assert all(4096 <= n <= 256 << 10 and n % 256 == 0 for n in sizes)
    assert sum(sizes) == next(iter(model.values()))["nbytes"]

    sustained = _measured(document, "sustained")
    assert {(p, o) for p, o, _ in sustained} == {
        ("tensorferry", "upload"),
        ("tensorferry", "download"),
        ("tensorferry", "download-new"),
        ("tensorferry", "d2d"),
        ("wgpu-py", "upload"),
        ("wgpu-py", "download"),
        ("wgpu-py", "d2d"),
        ("numpy.copyto", "upload"),
        ("numpy.copyto", "download"),
        ("numpy.copyto", "download-new"),
        ("numpy.copyto", "d2d"),
    }

    unavailable = {p["name"]: p["reason"] for p in document["paths"] if not p["available"]}
    assert set(unavailable) == {"torch-cuda", "ort-webgpu"}
    assert document["config"]["workloads"] == [
        "latency",
        "decode-step",
        "model-load",
        "sustained",
    ]
    assert "microseconds, p50 / p99" in report
    assert "model load, 12 tensors" in report
    assert "64 KiB download-new" in report


def test_quick_measures_latency_and_decode_step(tmp_path: Path) -> None:
    """``--quick`` includes both, with short sample counts; ``--ops`` filters them."""
    status, document = _bench(
        tmp_path,
        "--quick",
        "--ops",
        "upload,decode-step",
        "--sizes",
        "4K",
        "--paths",
        "tensorferry",
    )
    assert status == 0
    measured = {(r["workload"], r["op"]): len(r["samples_s"]) for r in document["results"]}
    assert measured == {
        ("latency", "upload"): 100,
        ("decode-step", "decode-step"): 100,
        ("sizes", "upload"): 2,
    }


@pytest.mark.usefixtures("lavapipe")
def test_sustained_sizes_above_the_largest_buffer_are_left_out_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = _bench(
        tmp_path, "--workloads", "sustained", "--sustained-sizes", "64G", "--paths", "tensorferry"
    )
    assert status == 0
    assert document["results"] == []
    (note,) = document["notes"]
    assert note.startswith("sustained 64 GiB: left out, above the largest buffer of webgpu:0")
    assert note in capsys.readouterr().out


@pytest.mark.usefixtures("lavapipe")
def test_sustained_runs_on_gpus_only_unless_sizes_are_given(tmp_path: Path) -> None:
    status, document = _bench(tmp_path, "--workloads", "sustained", "--paths", "tensorferry")
    assert status == 0
    assert document["results"] == []
    assert document["notes"] == [
        "sustained: left out, it runs at 1 GiB, 4 GiB on GPUs only; --sustained-sizes runs it here"
    ]


def test_lavapipe_targets_of_the_new_workloads_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = _bench(
        tmp_path,
        "--workloads",
        "latency,batches,sizes",
        "--ops",
        "download,batch-upload",
        "--sizes",
        "4K",
        "--batch",
        "1000x1K",
        "--latency-samples",
        "5",
        "--paths",
        "tensorferry,wgpu-py",
        "--targets",
        "lavapipe",
    )
    assert status == 0
    checked = document["targets"]["lavapipe-latency-bandwidth"]
    assert [t["text"] for t in checked] == [
        "download 4 KiB: tensorferry / raw wgpu-py",
        "4 KiB download (latency workload): tensorferry / read_buffer",
        "1000 x 1 KiB upload: one copy_tensors / a loop of write_buffer",
    ]
    assert all(isinstance(t["value"], float) and isinstance(t["passed"], bool) for t in checked)
    report = capsys.readouterr().out
    for target in checked:
        assert target["text"] in report
    assert "target >= 1.2x" in report


def test_gpu_targets_of_the_new_workloads_check_what_was_measured(tmp_path: Path) -> None:
    status, document = _bench(
        tmp_path,
        "--workloads",
        "latency,decode-step",
        "--latency-samples",
        "3",
        "--paths",
        "tensorferry,wgpu-py",
        "--targets",
        "gpu",
    )
    assert status == 0
    checked = {t["text"]: t for t in document["targets"]["gpu-latency-bandwidth"]}
    latency = checked["4 KiB download (latency workload)"]
    assert latency["requirement"] == "<= 90 us p50"
    assert latency["value"] == next(
        r["median_s"]
        for r in document["results"]
        if (r["workload"], r["op"], r["path"]) == ("latency", "download", "tensorferry")
    )
    assert isinstance(checked["decode-step-batched"]["passed"], bool)
    assert checked["model-load, allocation included"]["note"] == "not in this run"
    assert checked["sustained download-new 4 GiB"]["passed"] is None


def _workloads_for(device: Any) -> list[Any]:
    plan = plan_workloads(
        ["latency", "decode-step", "model-load", "sustained"],
        list(Op),
        [],
        ModelLoad(count=6, max_nbytes=64 << 10),
        (64 << 10,),
        device,
    )
    return plan.workloads


@pytest.mark.parametrize("side", ["device", "host"])
def test_a_path_that_delivers_wrong_data_is_caught_before_timing(
    side: str, faulty_path: Callable[[str | None], TensorferryPath]
) -> None:
    """A backend whose copies into ``side`` get one byte wrong: every case of every new
    workload fails its check and is never timed; the same backend without the fault
    passes them all, so the check is what fails."""
    control = faulty_path(None)
    faulty = faulty_path(side)
    workloads = _workloads_for(faulty.device)
    assert {w.op for w in workloads} == {
        Op.UPLOAD,
        Op.DOWNLOAD,
        Op.ROUNDTRIP,
        Op.DOWNLOAD_NEW,
        Op.D2D,
        Op.DECODE_STEP,
        Op.DECODE_STEP_BATCHED,
        Op.MODEL_LOAD,
        Op.MODEL_LOAD_EXISTING,
    }
    for workload in workloads:
        (good,) = measure_workload([control], workload, _ONE_RUN)
        (bad,) = measure_workload([faulty], workload, _ONE_RUN)
        assert good.ok, (workload, good.error)
        assert bad.wrong_data, (workload, bad.error)
        assert bad.samples is None
        assert "wrong data: tensorferry" in bad.error


@pytest.mark.usefixtures("lavapipe")
def test_device_facts_used_to_plan() -> None:
    with tf.Environment() as env:
        device = env.device("webgpu")
        assert not is_gpu(device)  # lavapipe is a CPU adapter
        assert max_buffer_size(device) == int(device.property("max_buffer_size"))
        assert not is_gpu(env.device("cpu"))
        assert max_buffer_size(env.device("cpu")) is None


def test_host_accessible_path_runs_verified_beside_the_others(
    lavapipe: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tensorferry-host-accessible`` (asked for by name) measures uploads from and
    downloads into host-accessible memory, each verified before it is timed."""
    with tf.Environment() as env:
        device = env.device("webgpu")
        try:
            env.device(str(device), memory=tf.MemoryKind.HOST_ACCESSIBLE)
        except tf.UnknownDeviceError:
            pytest.skip("the default webgpu device has no host-accessible memory")
    status, document = _bench(
        tmp_path,
        "--device",
        "webgpu",
        "--sizes",
        "4K,1M",
        "--ops",
        "upload,download,d2d",
        "--paths",
        "tensorferry,tensorferry-host-accessible",
    )
    report = capsys.readouterr().out
    assert status == 0, report
    ours = {
        (r["op"], r["nbytes"]): r
        for r in document["results"]
        if r["path"] == "tensorferry-host-accessible"
    }
    assert set(ours) == {(op, n) for op in ("upload", "download") for n in (4096, 1 << 20)}
    assert all(r["verified"] for r in ours.values()), report
    assert "host-accessible tensor" in report


def test_host_accessible_targets_check_that_path_against_torch_pinned() -> None:
    """Host-accessible targets (>= 45 GB/s, >= 0.8x torch pinned) read the
    host-accessible path's results, not tensorferry's pageable ones, and appear only
    for sizes that path measured."""
    from tensorferry.bench._runner import Result
    from tensorferry.bench._targets import evaluate, workload_targets
    from tensorferry.bench._timing import Samples
    from tensorferry.bench._workload import Workload

    size = 256 << 20
    up, down = Workload(Op.UPLOAD, size), Workload(Op.DOWNLOAD, size)

    def result(workload: Workload, path: str, gbps: float) -> Result:
        return Result(workload, path, Samples((size / gbps / 1e9,)))

    results = [
        result(up, "tensorferry", 30.0),
        result(up, "tensorferry-host-accessible", 50.0),
        result(up, "torch-cuda-pinned", 55.0),
        result(down, "tensorferry", 25.0),
        result(down, "torch-cuda-pinned", 55.0),
    ]
    targets = [t for t in workload_targets("gpu", results) if "host-accessible" in t.text]
    outcomes = {t.text: evaluate(t, results) for t in targets}
    assert set(outcomes) == {
        "upload 256 MiB host-accessible",
        "upload 256 MiB: host-accessible / torch CUDA pinned",
    }
    bandwidth = outcomes["upload 256 MiB host-accessible"]
    assert bandwidth.value == pytest.approx(50.0)
    assert bandwidth.passed
    ratio = outcomes["upload 256 MiB: host-accessible / torch CUDA pinned"]
    assert ratio.value == pytest.approx(50 / 55)
    assert ratio.passed
    slow = [result(up, "tensorferry-host-accessible", 40.0), *results[2:3]]
    assert not evaluate(targets[0], slow).passed


class _LargestBuffer:
    """A GPU device as the planner sees it: its type and its largest buffer."""

    is_host = False
    type = tf.DeviceType.GPU

    def __init__(self, largest: int) -> None:
        self._largest = largest

    def property(self, key: str) -> object:
        return {"adapter_type": "DiscreteGPU", "max_buffer_size": self._largest}.get(key)

    def __str__(self) -> str:
        return "webgpu:0"


def test_a_sustained_size_just_above_the_largest_buffer_is_measured_a_little_smaller() -> None:
    """4 GiB on a device whose largest buffer is 2 MiB short of it (the H200's) runs at
    4032 MiB with a note; a size far above it is left out, as before."""
    device: Any = _LargestBuffer((4 << 30) - (2 << 20))
    plan = plan_workloads(["sustained"], list(Op), [], ModelLoad(), None, device)
    assert {w.nbytes for w in plan.workloads} == {1 << 30, 4032 << 20}
    assert plan.notes == [
        "sustained 4 GiB: measured at 4032 MiB, the largest buffer of webgpu:0 "
        f"(4 GiB, {(4 << 30) - (2 << 20)} bytes)"
    ]
    far = plan_workloads(["sustained"], list(Op), [], ModelLoad(), (8 << 30,), device)
    assert far.workloads == []
    assert far.notes[0].startswith("sustained 8 GiB: left out, above the largest buffer")


def test_the_4_gib_targets_check_the_largest_sustained_size_within_a_sixteenth() -> None:
    """Sustained 4 GiB targets read a 4000 MiB run (named so in the target), and stay
    unmeasured when only sizes further below were run."""
    from tensorferry.bench._runner import Result
    from tensorferry.bench._targets import evaluate, workload_targets
    from tensorferry.bench._timing import Samples
    from tensorferry.bench._workload import Workload

    def results_at(mib: int) -> list[Result]:
        workload = Workload(Op.UPLOAD, mib << 20, group="sustained")
        return [Result(workload, "tensorferry", Samples(((mib << 20) / 30e9,)))]

    near = results_at(4000)
    targets = {t.text: t for t in workload_targets("gpu", near)}
    outcome = evaluate(targets["sustained upload 4000 MiB (for 4 GiB)"], near)
    assert outcome.value == pytest.approx(30.0)
    assert outcome.passed
    assert "sustained upload 4 GiB" not in targets
    below = results_at(3800)
    targets = {t.text: t for t in workload_targets("gpu", below)}
    assert evaluate(targets["sustained upload 4 GiB"], below).note == "not in this run"


def test_the_threaded_host_copy_measures_single_copies_verified(tmp_path: Path) -> None:
    """``numpy.copyto-threads`` (the host's own copy) measures upload, download and a
    download into a new array of the sustained workload, split over its threads (9 MiB:
    three parts), every one verified byte for byte; it leaves device copies to the
    device's paths and the size sweep to the others."""
    status, document = _bench(
        tmp_path,
        "--workloads",
        "sizes,sustained",
        "--sizes",
        "4K",
        "--sustained-sizes",
        "9M",
        "--paths",
        "tensorferry,numpy.copyto-threads",
    )
    assert status == 0
    sustained = _measured(document, "sustained")
    threaded = {op for path, op, _ in sustained if path == "numpy.copyto-threads"}
    assert threaded == {"upload", "download", "download-new"}
    assert all(r["verified"] for r in document["results"])
    swept = {r["path"] for r in document["results"] if r["workload"] == "sizes"}
    assert swept == {"tensorferry"}


def test_sustained_bandwidth_targets_print_the_hosts_own_copy_beside_the_value() -> None:
    """A sustained target's line gives the threaded host copy's rate in the same run and
    tensorferry's fraction of it; without that path the line is the plain verdict."""
    from tensorferry.bench._runner import Result
    from tensorferry.bench._targets import evaluate, workload_targets
    from tensorferry.bench._timing import Samples
    from tensorferry.bench._workload import Workload

    size = 1 << 30
    new = Workload(Op.DOWNLOAD_NEW, size, group="sustained")

    def result(path: str, gbps: float) -> Result:
        return Result(new, path, Samples((size / gbps / 1e9,)))

    ours = [result("tensorferry", 24.0)]
    bounded = [*ours, result("numpy.copyto-threads", 25.0)]
    target = {t.text: t for t in workload_targets("gpu", bounded)}["sustained download-new 1 GiB"]
    outcome = evaluate(target, bounded)
    assert outcome.reference == pytest.approx(25.0)
    assert not outcome.passed
    assert outcome.line() == (
        "sustained download-new 1 GiB = 24 GB/s (target >= 25 GB/s) FAIL; the host's own "
        "copy (numpy.copyto-threads) 25 GB/s, tensorferry at 0.96x of it"
    )
    alone = evaluate(target, ours)
    assert alone.reference is None
    assert alone.line() == "sustained download-new 1 GiB = 24 GB/s (target >= 25 GB/s) FAIL"
