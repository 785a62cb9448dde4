"""The benchmark suite runs end to end and writes a complete results file (no timing is asserted)."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from benchmarks import common
from benchmarks.__main__ import parse_args

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a subprocess timing every row once: about 2 s of the default suite's 60
def test_quick_benchmark_run_writes_every_row(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--no-keep-freed-memory", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = tmp_path.glob("cpu-*.json")
    payload = json.loads(path.read_text())
    assert payload["device"] == "cpu" and payload["machine"]["cpu_count"] >= 1
    assert "OPENBLAS_CORETYPE" in payload["machine"]
    groups = {row["group"] for row in payload["rows"]}
    assert groups == {"conv2d forward", "conv2d fwd+bwd", "im2col", "col2im", "max_pool2d forward",
                      "max_pool2d fwd+bwd", "linear forward", "linear fwd+bwd", "cross_entropy fwd+bwd",
                      "adam step", "training step"}
    for row in payload["rows"]:
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert ("gflops_per_s" in row) or ("gb_per_s" in row) or ("images_per_s" in row), row
    assert {row["name"] for row in payload["rows"] if row["group"] == "training step"} == {"cnn", "lenet"}
    assert all(0 < row["share_of_matmul_rate"] for row in payload["rows"] if row["group"] == "conv2d fwd+bwd")
    assert "conv2d forward" in completed.stdout and "img/s" in completed.stdout
    assert payload["machine"]["keep_freed_memory"] is False


def test_quick_runs_write_to_the_scratch_folder_unless_told_otherwise(tmp_path):
    assert parse_args(["--quick"]).out == common.SCRATCH
    assert parse_args([]).out == common.RESULTS
    assert parse_args(["--quick", "--out", str(tmp_path)]).out == str(tmp_path)
    assert parse_args([]).keep_freed_memory and not parse_args(["--no-keep-freed-memory"]).keep_freed_memory
    ignored = subprocess.run(["git", "check-ignore", "-q", str(common.SCRATCH / "cpu-2026-01-01.json")], cwd=ROOT)
    if ignored.returncode != 128:  # 128: not a git checkout
        assert ignored.returncode == 0, "benchmarks/results/scratch/ should be in .gitignore"


def test_plots_draw_every_series_present_and_align_rows_across_devices(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
    from benchmarks.plots import plot_results

    def row(group, name, ms, batch=64, **extra):
        return {"group": group, "name": name, "shape": f"batch {batch}", "median_ms": ms, **extra}

    sweep = [row("throughput sweep", "cnn", 0.5 * batch, batch, images_per_s=2000.0) for batch in (32, 64)]
    cpu = {"device": "cpu", "rows": [row("im2col", "cnn.conv1", 1.0), *sweep]}
    gpu = {"device": "gpu", "rows": [row("im2col", "cnn.conv1", 0.1), row("im2col [twin]", "cnn.conv1", 0.2)]}
    paths = [common.write_json(tmp_path, "cpu.json", cpu), common.write_json(tmp_path, "gpu.json", gpu)]
    written = plot_results(paths)
    assert [path.name for path in written] == ["ops.png", "throughput.png"]
    assert all(path.stat().st_size > 1000 for path in written)


def test_results_without_a_sweep_get_no_throughput_chart_and_no_warning(tmp_path, capsys):
    """As a --quick run: its rows, no sweep. Not an empty chart, and no matplotlib legend warning."""
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
    from benchmarks.plots import plot_results

    quick = {"device": "cpu", "rows": [{"group": "training step", "name": "cnn", "shape": "batch 8",
                                        "median_ms": 5.0, "images_per_s": 1600.0}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plot_results([common.write_json(tmp_path, "cpu.json", quick)])
    assert [path.name for path in written] == ["ops.png"] and not (tmp_path / "throughput.png").exists()
    assert "throughput.png not drawn" in capsys.readouterr().out


def test_time_alternating_times_each_run_in_blocks_and_reports_its_ratio_to_the_first(monkeypatch):
    """A fake clock that each run advances by a fixed amount: the order, summaries and ratios follow exactly."""
    clock, calls, pauses = [0.0], [], []

    def advancing(seconds, name):
        def run():
            calls.append(name)
            clock[0] += seconds
        return run

    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(common.time, "sleep", pauses.append)
    runs = [(advancing(2.0, "a"), lambda: None), (advancing(6.0, "b"), lambda: None), (advancing(1.0, "c"), lambda: None)]
    summaries, ratios = common.time_alternating(runs, repeat=5, warmup=1, rounds=2, settle=0.3)
    # Round one: each run gets 1 warm-up and 3 timed calls; round two the remaining 2.
    assert calls == ["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert pauses == [0.3] * 6
    assert summaries == [(2.0, 2.0, 2.0), (6.0, 6.0, 6.0), (1.0, 1.0, 1.0)]
    assert ratios == [1.0, 3.0, 0.5]
