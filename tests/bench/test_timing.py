"""The bench's timing loop: warm-up excluded, paths in turns, blocks of runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tensorferry.bench._timing import Samples, Timing, measure_interleaved


def _recorder(order: list[str], name: str) -> Callable[[], None]:
    def run() -> None:
        order.append(name)

    return run


def test_paths_take_turns_one_run_each() -> None:
    """The default alternates every run, after the warm-up runs of every path."""
    order: list[str] = []
    timing = Timing(warmup=1, min_repeats=3, min_seconds=0.0, max_repeats=3)
    outcome = measure_interleaved({n: _recorder(order, n) for n in "ab"}, timing)
    assert order == ["a", "b"] * 4
    assert all(isinstance(s, Samples) and len(s.seconds) == 3 for s in outcome.values())


def test_blocks_keep_a_paths_runs_together() -> None:
    """With ``block`` and ``block_warmup`` each turn is that many untimed runs, then
    up to ``block`` timed ones; the last block stops at ``max_repeats``."""
    order: list[str] = []
    timing = Timing(
        warmup=0, min_repeats=5, min_seconds=0.0, max_repeats=5, block=3, block_warmup=1
    )
    outcome = measure_interleaved({n: _recorder(order, n) for n in "ab"}, timing)
    assert order == ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3
    assert all(isinstance(s, Samples) and len(s.seconds) == 5 for s in outcome.values())


def test_a_failing_path_stops_and_the_others_go_on() -> None:
    """A run that raises ends its path with the exception; the others finish."""
    order: list[str] = []

    def broken() -> None:
        order.append("x")
        if len(order) > 2:
            raise RuntimeError("broke")

    timing = Timing(warmup=0, min_repeats=4, min_seconds=0.0, max_repeats=4, block=2)
    outcome = measure_interleaved({"x": broken, "a": _recorder(order, "a")}, timing)
    assert isinstance(outcome["x"], RuntimeError)
    samples = outcome["a"]
    assert isinstance(samples, Samples)
    assert len(samples.seconds) == 4


@pytest.mark.parametrize("field", ["block", "block_warmup"])
def test_block_settings_are_checked(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Timing(**{field: -1})


def test_block_option_sets_every_timing() -> None:
    """``--block N`` applies to the sweep and to the latency cases alike; the
    defaults keep latency runs in longer blocks than the sweep's."""
    from tensorferry.bench._cli import _config, build_parser

    parser = build_parser()
    default = _config(parser.parse_args([]), ())
    assert default.latency_timing.block > default.timing.block > 1
    chosen = _config(parser.parse_args(["--block", "3"]), ())
    assert (chosen.timing.block, chosen.latency_timing.block) == (3, 3)
    with pytest.raises(ValueError, match="--block"):
        _config(parser.parse_args(["--block", "0"]), ())
