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


def quick_run(tmp_path, *arguments):
    """(the results file read back, the finished process) of `python -m benchmarks --quick ARGUMENTS --out tmp_path`."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *arguments, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = tmp_path.glob("cpu-*.json")
    return json.loads(path.read_text()), completed


@pytest.mark.slow  # a subprocess timing every row once: about 2 s of the default suite's 60
def test_quick_benchmark_run_writes_every_row(tmp_path):
    payload, completed = quick_run(tmp_path, "--no-torch", "--no-keep-freed-memory")
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
    if hasattr(common.os, "getloadavg"):
        assert len(payload["load_average"]["start"]) == 3 and len(payload["load_average"]["end"]) == 3
        assert "load average" in completed.stdout
    assert all(len(row["round_medians_ms"]) == payload["rounds"] and "spread" in row for row in payload["rows"])


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


def _row(name, round_medians, torch_round_medians=None, ratio=0.5):
    row = {"group": "training step", "name": name, "shape": "batch 64", "median_ms": sorted(round_medians)[1],
           "min_ms": min(round_medians), "max_ms": max(round_medians), "round_medians_ms": round_medians,
           "images_per_s": 1000.0}
    if torch_round_medians:
        row.update(torch_median_ms=sorted(torch_round_medians)[1], torch_round_medians_ms=torch_round_medians,
                   torch_over_minicnn=ratio)
    return row


def test_a_row_whose_rounds_disagree_is_flagged_and_the_load_average_heads_the_table():
    from benchmarks.table import markdown

    payload = {"device": "cpu", "date": "2026-12-06", "machine": {"cpu_model": "Some CPU"},
               "load_average": {"start": [7.5, 3.25, 1.0], "end": [8.0, 4.0, 1.5]},
               "rows": [_row("steady", [10.0, 11.0, 10.5], [5.0, 5.2, 5.1]),
                        _row("loaded", [10.0, 11.0, 10.5], [5.0, 9000.0, 21150.0], ratio=2115.0),
                        _row("no torch", [1.0, 4.0, 1.1])]}
    table = markdown(payload)
    header = table.splitlines()[0]
    assert "load average 7.50, 3.25, 1.00 (1, 5, 15 min)" in header and "at the start" in header
    assert "load average 8.00, 4.00, 1.50" in header and "Some CPU" in header
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| training step")}
    assert rows["loaded"].endswith("| 2115.00 ! |") and rows["no torch"].endswith("| - | - ! |")
    assert "!" not in rows["steady"]
    assert table.splitlines()[-1].startswith("! 2 row(s) whose slowest round took more than 1.5x their fastest")
    assert common.spread(payload["rows"][1]) == pytest.approx(21150 / 5) and not common.is_unsteady(payload["rows"][0])


def test_results_files_from_before_the_rounds_were_recorded_still_print():
    from benchmarks.table import markdown

    old = {"device": "cpu", "date": "2026-11-30", "machine": {"cpu_model": "Old CPU"},
           "rows": [{"group": "im2col", "name": "cnn.conv1", "shape": "64x1x28x28", "median_ms": 1.0, "min_ms": 0.5,
                     "max_ms": 9.0, "gb_per_s": 2.0, "torch_median_ms": 2.0, "torch_over_minicnn": 2.0}]}
    table = markdown(old)
    assert "load average not recorded" in table.splitlines()[0] and "!" not in table
    assert "predates the rounds' medians" in table.splitlines()[-1]
    assert common.spread(old["rows"][0]) is None


def test_measure_records_each_rounds_median_and_the_spread(monkeypatch):
    from benchmarks.__main__ import _measure
    from benchmarks.suite import Row

    clock, torch_calls = [0.0], [0]

    def minicnn_run():
        clock[0] += 0.002

    def torch_run():  # the machine gets busy after its first round: each call takes 100 times longer
        torch_calls[0] += 1
        clock[0] += 0.001 if torch_calls[0] <= 4 else 0.1

    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(common.time, "sleep", lambda seconds: None)
    result = _measure(Row("training step", "cnn", "batch 64", minicnn_run, torch_run=torch_run),
                      lambda: None, lambda: None, repeat=6, warmup=2, rounds=3, settle=0.0)
    assert result["round_medians_ms"] == pytest.approx([2.0, 2.0, 2.0])
    assert result["torch_round_medians_ms"] == pytest.approx([1.0, 100.0, 100.0])
    assert result["torch_min_ms"] == pytest.approx(1.0) and result["torch_max_ms"] == pytest.approx(100.0)
    assert result["spread"] == pytest.approx(100.0) and common.is_unsteady(result)


def test_load_average_is_three_numbers_where_the_system_has_one():
    load = common.load_average()
    if hasattr(common.os, "getloadavg"):
        assert len(load) == 3 and all(value >= 0 for value in load)
        assert common.describe_load(load).startswith("load average ")
    assert common.describe_load(None) == ""


def test_the_resnet20_rows_are_built_only_when_asked_for():
    """suite.resnet_rows with --only's groups: 'resnet20 train step' gives ResNet-20's step alone (batch 8 when
    quick), with the FLOPs of a forward counted three times; other groups build no ResNet."""
    import numpy as np

    from benchmarks.suite import resnet_rows

    assert list(resnet_rows(np, None, "cpu", quick=True, groups={"training step"})) == []
    (row,) = resnet_rows(np, None, "cpu", quick=True, groups={"resnet20 train step"})
    assert (row.group, row.name, row.shape, row.images) == ("resnet20 train step", "resnet20", "batch 8, 3x32x32", 8)
    # Multiply-adds of one 32x32 image: the stem, 18 3x3 convolutions, the two 1x1 projections and fc.
    assert row.flops == 3 * 2 * 8 * 40_813_184 and row.torch_run is None


@pytest.mark.slow  # a subprocess stepping ResNet-20 and its torch twin a few times: seconds
def test_a_quick_run_times_the_resnet20_rows_when_only_names_them(tmp_path):
    payload, _ = quick_run(tmp_path, "--only", "resnet20 train step")
    (row,) = payload["rows"]
    assert (row["group"], row["shape"]) == ("resnet20 train step", "batch 8, 3x32x32")
    assert row["gflops_per_s"] > 0 and row["images_per_s"] > 0
    if "torch" in payload["machine"]:
        assert row["torch_over_minicnn"] > 0 and row["torch_images_per_s"] > 0
