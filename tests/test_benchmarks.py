"""The benchmark suite runs end to end and writes a complete results file (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_run_writes_every_row(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-torch", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = tmp_path.glob("cpu-*.json")
    payload = json.loads(path.read_text())
    assert payload["device"] == "cpu" and payload["machine"]["cpu_count"] >= 1
    assert "OPENBLAS_CORETYPE" in payload["machine"]
    groups = {row["group"] for row in payload["rows"]}
    assert groups == {"conv2d forward", "conv matmuls only", "conv2d fwd+bwd", "im2col", "col2im", "max_pool2d forward",
                      "max_pool2d fwd+bwd", "linear forward", "linear fwd+bwd", "cross_entropy fwd+bwd",
                      "adam step", "training step"}
    for row in payload["rows"]:
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert ("gflops_per_s" in row) or ("gb_per_s" in row) or ("images_per_s" in row), row
    assert {row["name"] for row in payload["rows"] if row["group"] == "training step"} == {"cnn", "lenet"}
    assert "conv2d forward" in completed.stdout and "img/s" in completed.stdout
