"""The `minicnn` command line (minicnn/cli/), on small slices of the real MNIST.

In this module the commands see the first 4000 training and 500 test images (see
`small_mnist`), so that evaluating a run takes a moment; the tests marked slow run
real processes on the whole test set.
"""

import contextlib
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import backend, data, recipe
from minicnn.cli import main

QUICK = ["--limit", "640", "--validation", "128", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def small_mnist():
    """The commands' MNIST loader returns the first 4000 training and 500 test images."""
    sizes = {"train": 4000, "test": 500}
    cache = {}

    def load(split):
        if split not in cache:
            images, labels = data.load_mnist(split)
            cache[split] = images[: sizes[split]], labels[: sizes[split]]
        return cache[split]

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(recipe.LOADERS, "mnist", load)
        yield


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short cnn run shared by the tests that only read its results."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--epochs", "1", "--out", str(out), *QUICK]) == 0
    return out


def _copy_run(run, folder):
    folder.mkdir()
    for name in ("last.npz", "best.npz"):
        (folder / name).write_bytes((run / name).read_bytes())
    return folder


def test_train_writes_checkpoints_and_metrics(trained_run):
    assert {"last.npz", "best.npz", "metrics.json"} <= {path.name for path in trained_run.iterdir()}
    summary = json.loads((trained_run / "metrics.json").read_text())
    assert summary["run"]["model"] == "cnn" and summary["run"]["optimizer"] == "adam"
    assert 0.5 < summary["test_accuracy"] <= 1.0  # 512 images, one epoch: well above chance (0.1)
    assert np.array(summary["confusion_matrix"]).sum() == 500
    assert len(summary["seconds_per_epoch"]) == 1 and summary["peak_memory_mib"] > 0
    assert summary["mean_epoch_seconds"] == summary["seconds_per_epoch"][0]


def test_evaluate_prints_the_accuracy_once_with_report_and_confusion_matrix(trained_run, capsys):
    assert main(["evaluate", str(trained_run / "best.npz")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((trained_run / "metrics.json").read_text())
    assert f"accuracy: {summary['best']['test_accuracy']:.4f}" in printed  # metrics.json's best is best.npz's
    assert printed.count("accuracy") == 1, printed
    assert "precision" in printed and "recall" in printed and "confusion matrix" in printed
    assert main(["evaluate", str(trained_run)]) == 0  # a run folder means its best.npz


def test_evaluate_reads_an_onnx_file_as_show_predict_and_serve_do(trained_run, tmp_path, capsys):
    pytest.importorskip("onnx", reason="needs the onnx extra (pip install -e \".[onnx]\")")
    assert main(["evaluate", str(trained_run / "best.npz")]) == 0
    reference = capsys.readouterr().out.splitlines()
    for softmax in ([], ["--softmax"]):  # a final Softmax is left out: the loss is of the logits, as for best.npz
        path = tmp_path / f"cnn{'-softmax' if softmax else ''}.onnx"
        assert main(["export", str(trained_run / "best.npz"), str(path), *softmax]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(path)]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == reference[0].replace(str(trained_run / "best.npz"), str(path))  # 500 images, loss
        assert printed[1:] == reference[1:]  # the report and the confusion matrix


@pytest.mark.slow  # trains several runs: in the slow suite, for the default suite's 60 s
def test_resume_says_where_it_resumes_and_continues_to_more_epochs(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "copy")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert len(summary["history"]["loss"]) == 2
    assert summary["run"]["limit"] == 640 and summary["run"]["validation"] == 128  # the run's own settings
    printed = capsys.readouterr().out
    assert f"resuming {run} at the start of epoch 2, to 2 epochs" in printed
    assert "epoch 2/2" in printed
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere"), "--quiet"]) == 1
    assert "--resume" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minicnn {minicnn.__version__}"


def test_a_second_run_gets_a_fresh_folder_and_latest_points_at_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = ["--epochs", "1", "--limit", "96", "--batch-size", "32", "--quiet"]
    assert main(["train", "--model", "lenet", *tiny]) == 0
    assert main(["train", "--model", "lenet", *tiny]) == 0
    today = f"{datetime.date.today():%Y%m%d}"
    first, second = Path("runs") / f"lenet-{today}-1", Path("runs") / f"lenet-{today}-2"
    for folder in (first, second):
        assert {"last.npz", "best.npz", "metrics.json"} <= {path.name for path in folder.iterdir()}
    assert Path("runs/latest").resolve() == second.resolve()
    assert f"checkpoints in {second}" in capsys.readouterr().out
    settings = json.loads((second / "metrics.json").read_text())["run"]
    assert settings["validation"] == 9 and settings["optimizer"] == "sgd"  # a tenth of 96; lenet's own optimizer
    assert main(["evaluate", "runs/latest/best.npz"]) == 0
    assert f"{second / 'best.npz'}: mnist test" in capsys.readouterr().out  # the folder latest points at

    # Where symlinks cannot be made, runs/latest is a file naming the folder, and the commands follow it.
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not allowed here")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    assert main(["train", "--model", "lenet", *tiny]) == 0
    third = Path("runs") / f"lenet-{today}-3"
    assert Path("runs/latest").is_file() and Path("runs/latest").read_text().strip() == third.name
    capsys.readouterr()
    assert main(["evaluate", "runs/latest/best.npz"]) == 0
    assert f"{third / 'best.npz'}: mnist test" in capsys.readouterr().out


def test_out_holding_a_run_is_refused_unless_overwrite(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "copy")
    before = (run / "best.npz").read_bytes()
    assert main(["train", "--epochs", "1", "--out", str(run), *QUICK]) == 1
    error = capsys.readouterr().err
    assert f"--out {run} already holds a run" in error and "--overwrite" in error
    assert (run / "best.npz").read_bytes() == before and not (run / "metrics.json").exists()
    assert main(["train", "--epochs", "1", "--out", str(run), "--overwrite", "--model", "lenet", *QUICK]) == 0
    assert json.loads((run / "metrics.json").read_text())["run"]["model"] == "lenet"


@pytest.mark.slow  # trains several runs: in the slow suite, for the default suite's 60 s
def test_validation_scales_with_limit_and_a_hold_out_leaving_nothing_says_what_to_pass(capsys, tmp_path):
    assert main(["train", "--limit", "3000", "--validation", "3000", "--out", str(tmp_path), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "--validation 3000 leaves no training images (--limit 3000 keeps 3000)" in error
    assert "--validation 300" in error and "--validation 0" in error
    assert not any(tmp_path.iterdir())
    # --limit 3000 alone holds out a tenth
    assert main(["train", "--model", "lenet", "--limit", "3000", "--epochs", "1", "--batch-size", "128",
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert "(2700 images, 300 held out)" in capsys.readouterr().out


@pytest.mark.parametrize("flag, calls", [([], 1), (["--no-keep-freed-memory"], 0)])
def test_the_commands_keep_freed_memory_unless_told_not_to(trained_run, monkeypatch, flag, calls):
    seen = []
    monkeypatch.setattr(backend, "keep_freed_memory", lambda: seen.append(True) or True)
    assert main(["evaluate", str(trained_run), *flag]) == 0
    assert len(seen) == calls


@pytest.mark.slow
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


@pytest.mark.slow
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
    resumed = subprocess.run([sys.executable, "-m", "minicnn", "train", "--resume", str(out), "--quiet"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at " in resumed.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["history"]["loss"]) == 2
    steps = summary["history"]["steps"]
    if steps[0] < 80 or steps[1] < 80:  # 2560 images in batches of 32: 80 steps; the stop came mid-epoch
        assert "leaving out 1 epoch resumed mid-way" in resumed.stdout
        assert summary["mean_epoch_seconds"] == summary["seconds_per_epoch"][steps.index(80)]


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
    assert dot_text.startswith("digraph") and "conv2d" in dot_text and "cross_entropy" in dot_text
    assert "(2, 1, 28, 28)" in dot_text and "0.weight" in dot_text
    assert str(tmp_path / "graph.dot") in capsys.readouterr().out

    # Without Graphviz's `dot` (a PATH that lacks it) the .svg cannot be drawn: the .dot text, the command
    # that draws it, exit 0.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["graph", "--out", str(tmp_path / "cnn" / "graph.svg")]) == 0
    printed = capsys.readouterr().out
    dot_path, svg_path = tmp_path / "cnn" / "graph.dot", tmp_path / "cnn" / "graph.svg"
    assert f"wrote {dot_path}" in printed and f"dot -Tsvg {dot_path} -o {svg_path}" in printed
    assert not svg_path.exists()
    assert dot_path.read_text().count("conv2d") == 3  # the cnn model's three convolutions


@pytest.fixture(scope="module")
def shown(trained_run, tmp_path_factory):
    """The pictures of `minicnn show` for test image 7 of the trained run, and what it printed."""
    pytest.importorskip("matplotlib", reason="minicnn show draws with matplotlib (pip install -e \".[viz]\")")
    out = tmp_path_factory.mktemp("pictures")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["show", str(trained_run / "best.npz"), "--image-index", "7", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_show_writes_every_picture_of_a_trained_run(shown):
    out, printed = shown
    expected = [f"feature_maps_{layer}_Conv2D.png" for layer in (0, 3, 6)]
    expected += [f"filters_{layer}_Conv2D.png" for layer in (0, 3, 6)]
    expected += ["saliency.png", "training_curves.png", "confusion_matrix.png"]
    assert sorted(path.name for path in out.iterdir()) == sorted(expected)
    for name in expected:
        assert str(out / name) in printed
        _read_picture(out / name)
    assert "test image 7 (class 9)" in printed  # the seventh MNIST test digit is a 9


def test_show_of_an_earlier_layer_without_metrics_and_bad_arguments(trained_run, shown, tmp_path, capsys):
    (tmp_path / "best.npz").write_bytes((trained_run / "best.npz").read_bytes())
    # a folder means its best.npz; out: folder/show; Grad-CAM of layer 4 (cnn's second convolution's ReLU)
    assert main(["show", str(tmp_path), "--image-index", "7", "--layer", "4"]) == 0
    assert len(list((tmp_path / "show").glob("*.png"))) == 7  # no metrics.json: no curves, no confusion matrix
    assert (tmp_path / "show" / "saliency.png").read_bytes() != (shown[0] / "saliency.png").read_bytes()
    assert main(["show", str(tmp_path), "--image-index", "500"]) == 1
    assert "--image-index must lie in [0, 500)" in capsys.readouterr().err
    assert main(["show", str(tmp_path), "--layer", "40"]) == 1
    assert "--layer '40' is not a layer of the model" in capsys.readouterr().err



@pytest.mark.parametrize("content", [b"{not json\xe9", b'[1, {"history": 3}]'], ids=["broken", "a list"])
def test_show_skips_a_damaged_metrics_json_in_one_line(trained_run, shown, tmp_path, capsys, content):
    (tmp_path / "best.npz").write_bytes((trained_run / "best.npz").read_bytes())
    (tmp_path / "metrics.json").write_bytes(content)
    assert main(["show", str(tmp_path), "--image-index", "7"]) == 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tmp_path / "metrics.json") in error and "Traceback" not in error
    assert len(list((tmp_path / "show").glob("*.png"))) == 7  # the model's pictures, without the run's

@pytest.mark.slow
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
    assert calls["conv2d"] == (3 * batches, 3 * batches)
    assert calls["max_pool2d"] == (2 * batches, 2 * batches)
    assert calls["relu"] == (4 * batches, 4 * batches)
    assert calls["linear"] == (2 * batches, 2 * batches)
    assert calls["cross_entropy"] == (batches, batches)
    assert printed.count("operations during") == 1  # only the first epoch
    assert f"wrote {out / 'health.png'}" in printed
    _read_picture(out / "health.png")
