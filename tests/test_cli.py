"""The `minicnn` command line (minicnn/cli.py), on small slices of the real MNIST."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minicnn import backend
from minicnn.cli import main

QUICK = ["--limit", "640", "--validation", "128", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short cnn run shared by the tests that only read its results."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--epochs", "1", "--out", str(out), *QUICK]) == 0
    return out


def test_train_writes_checkpoints_and_metrics(trained_run):
    assert {"last.npz", "best.npz", "metrics.json"} <= {path.name for path in trained_run.iterdir()}
    summary = json.loads((trained_run / "metrics.json").read_text())
    assert summary["run"]["model"] == "cnn" and summary["run"]["optimizer"] == "adam"
    assert 0.5 < summary["test_accuracy"] <= 1.0  # 512 images, one epoch: well above chance (0.1)
    assert np.array(summary["confusion_matrix"]).sum() == 10000
    assert len(summary["seconds_per_epoch"]) == 1 and summary["peak_memory_mib"] > 0


def test_evaluate_prints_accuracy_report_and_confusion_matrix(trained_run, capsys):
    assert main(["evaluate", str(trained_run / "best.npz")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((trained_run / "metrics.json").read_text())
    assert f"accuracy {summary['test_accuracy']:.4f}" in printed
    assert "precision" in printed and "recall" in printed and "confusion matrix" in printed
    assert main(["evaluate", str(trained_run)]) == 0  # a run folder means its best.npz


def test_resume_continues_a_finished_run_to_more_epochs(trained_run, tmp_path, capsys):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("last.npz", "best.npz"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert len(summary["history"]["loss"]) == 2
    assert summary["run"]["limit"] == 640  # the run's own settings were reused
    assert "epoch 2/2" in capsys.readouterr().out


def test_lenet_with_sgd_trains(tmp_path):
    assert main(["train", "--model", "lenet", "--epochs", "1", "--out", str(tmp_path), *QUICK]) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["run"]["optimizer"] == "sgd" and summary["test_accuracy"] > 0.2


@pytest.mark.skipif(backend.gpu_available(), reason="checks the message given when there is no GPU")
def test_gpu_without_a_gpu_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--device", "gpu", "--out", str(out), *QUICK]) == 1
    error = capsys.readouterr().err
    assert "GPU" in error and ("CuPy" in error or "cupy" in error) and "cpu" in error
    assert not out.exists()


def test_evaluating_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "weights.npz"
    path.write_text("not a checkpoint")
    assert main(["evaluate", str(path)]) == 1
    assert str(path) in capsys.readouterr().err


def test_resume_from_a_folder_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 1
    assert "last.npz" in capsys.readouterr().err


def test_fetch_verifies_the_cached_dataset(capsys):
    assert main(["fetch", "mnist"]) == 0
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "evaluate", "fetch"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: minicnn " + command in capsys.readouterr().out


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    """A real process, a real SIGINT while it trains, then --resume."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "minicnn", "train", "--epochs", "2", "--out", str(out),
               "--limit", "2560", "--validation", "0", "--batch-size", "32", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    first_line = process.stdout.readline()  # printed once training starts
    assert first_line.startswith("training cnn"), first_line + process.stderr.read()
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "saved" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []  # no temporary files
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["history"]["loss"]) == 2


# ----- looking inside: graph, show, train --profile and --health ------------------------------------------

def _read_picture(path):
    """A PNG written by the command, checked to be a real picture that is not blank."""
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.shape[0] >= 100 and pixels.shape[1] >= 300, (path, pixels.shape)
    assert pixels[..., :3].std() > 0.01, f"{path} is a single colour"
    return pixels


@pytest.mark.parametrize("command", ["graph", "show"])
def test_the_look_inside_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: minicnn " + command in capsys.readouterr().out


def test_graph_writes_the_training_step_graph(tmp_path, capsys, monkeypatch):
    assert main(["graph", "--model", "lenet", "--batch-size", "2", "--out", str(tmp_path / "graph.dot")]) == 0
    dot_text = (tmp_path / "graph.dot").read_text()
    assert dot_text.startswith("digraph") and "Conv2dOp" in dot_text and "CrossEntropy" in dot_text
    assert "(2, 1, 28, 28)" in dot_text and "0.weight" in dot_text
    assert str(tmp_path / "graph.dot") in capsys.readouterr().out

    # Without Graphviz's `dot` an .svg cannot be drawn: a one-line error, exit 1, the .dot text kept.
    monkeypatch.setattr("minicnn.viz.graph.shutil.which", lambda name: None)
    assert main(["graph", "--out", str(tmp_path / "cnn" / "graph.svg")]) == 1
    assert "dot" in capsys.readouterr().err
    assert not (tmp_path / "cnn" / "graph.svg").exists()
    assert (tmp_path / "cnn" / "graph.dot").read_text().count("Conv2dOp") == 3  # the cnn model's three convolutions


def test_show_writes_every_picture_of_a_trained_run(trained_run, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["show", str(trained_run / "best.npz"), "--image-index", "7", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = [f"feature_maps_{layer}_Conv2D.png" for layer in (0, 3, 6)]
    expected += [f"filters_{layer}_Conv2D.png" for layer in (0, 3, 6)]
    expected += ["saliency.png", "training_curves.png", "confusion_matrix.png"]
    assert sorted(path.name for path in out.iterdir()) == sorted(expected)
    for name in expected:
        assert str(out / name) in printed
        _read_picture(out / name)
    assert "test image 7 (class 9)" in printed  # the seventh MNIST test digit is a 9


def test_show_without_metrics_and_with_a_bad_index(trained_run, tmp_path, capsys):
    (tmp_path / "best.npz").write_bytes((trained_run / "best.npz").read_bytes())
    assert main(["show", str(tmp_path), "--image-index", "0"]) == 0  # a folder means its best.npz; out: folder/show
    assert len(list((tmp_path / "show").glob("*.png"))) == 7  # no metrics.json: no curves, no confusion matrix
    assert main(["show", str(tmp_path), "--image-index", "10000"]) == 1
    assert "--image-index must lie in [0, 10000)" in capsys.readouterr().err


def test_train_profile_prints_the_first_epochs_operations_and_health_draws(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--profile", "--health", "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("operations during the training batches of epoch 1"):printed.index("epoch 1/2")]
    calls = {line.split()[0]: (int(line.split()[1]), int(line.split()[4])) for line in table.splitlines()[3:]
             if line and not line.startswith("time in")}
    batches = 512 // 32  # QUICK: 640 images, 128 held out, batches of 32; validation is not profiled
    # The cnn model per batch: 3 convolutions, 2 poolings, 4 ReLUs, 2 dense layers, 1 flatten, 1 loss;
    # each forward has its backward (even the first convolution's, for its weight).
    assert calls["Conv2dOp"] == (3 * batches, 3 * batches)
    assert calls["MaxPool2dOp"] == (2 * batches, 2 * batches)
    assert calls["ReLU"] == (4 * batches, 4 * batches)
    assert calls["Linear"] == (2 * batches, 2 * batches)
    assert calls["CrossEntropy"] == (batches, batches)
    assert printed.count("operations during") == 1  # only the first epoch
    assert f"wrote {out / 'health.png'}" in printed
    _read_picture(out / "health.png")
