"""Arguments and run folders of the `minicnn` command (minicnn/cli/): refused before any work, naming the flag.

Every bad value is refused by the parser (exit 2, the flag and its accepted range in the message) or, for what
only trying can tell (a folder that cannot be written, a run folder in use), by the command in one line (exit 1),
and in both cases before a data set is loaded: the loaders are replaced by ones that record being called.
"""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicnn import cli, data, recipe, runs
from minicnn.cli import main
from minicnn.training import Trainer

TINY = ["--limit", "96", "--validation", "32", "--batch-size", "32", "--epochs", "1", "--model", "lenet", "--quiet"]


@pytest.fixture(autouse=True)
def loads(monkeypatch):
    """The commands' MNIST loader, recording each call, returns the first 200 training and 100 test images."""
    calls = []
    cache = {}

    def load(split):
        calls.append(split)
        if split not in cache:
            images, labels = data.load_mnist(split)
            cache[split] = (images[:200], labels[:200]) if split == "train" else (images[:100], labels[:100])
        return cache[split]

    monkeypatch.setitem(recipe.LOADERS, "mnist", load)
    return calls


def _refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    # One line naming the command, without argparse's usage block above it.
    assert error.startswith(f"minicnn {argv[0]}: ") and error.count("\n") == 1, error
    assert "usage:" not in error and "Traceback" not in error
    return error


def test_settings_that_do_not_fit_the_data_are_named_by_their_flags(tmp_path, capsys):
    # recipe names the settings (validation=200); the command line names the flags the user typed.
    assert main(["train", "--limit", "200", "--validation", "200", "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert capsys.readouterr().err == ("minicnn train: --validation 200 leaves no training images (--limit 200 keeps "
                                       "200); pass a smaller --validation (such as 20), or --validation 0 for none\n")


TRAIN_BAD = [
    ("--epochs", "0", "at least 1"), ("--epochs", "-3", "at least 1"), ("--epochs", "2.5", "at least 1"),
    ("--limit", "0", "at least 1"), ("--limit", "-59000", "at least 1"),
    ("--validation", "-5", "at least 0"), ("--seed", "-1", "from 0 to 4294967295"),
    ("--seed", str(2**32), "from 0 to 4294967295"), ("--batch-size", "0", "at least 1"),
    ("--batch-size", "x", "at least 1"), ("--lr", "nan", "finite number above 0"),
    ("--lr", "inf", "finite number above 0"), ("--lr", "-inf", "finite number above 0"),
    ("--lr", "0", "finite number above 0"), ("--lr", "-0.1", "finite number above 0"),
    ("--lr", "fast", "finite number above 0"), ("--patience", "-1", "at least 0"), ("--shift", "-2", "at least 0"),
]


@pytest.mark.parametrize("flag, value, accepted", TRAIN_BAD)
def test_a_bad_train_flag_is_refused_by_the_parser_naming_it_and_its_range(flag, value, accepted, tmp_path,
                                                                          capsys, loads):
    out = tmp_path / "run"
    error = _refused_by_the_parser(["train", f"{flag}={value}", "--out", str(out)], capsys)  # = for "-inf"
    assert f"argument {flag}" in error and accepted in error, error
    assert loads == [] and not out.exists()  # no data loaded, no folder made


@pytest.mark.parametrize("argv, flag, accepted", [
    (["evaluate", "x.npz", "--batch-size", "0"], "--batch-size", "at least 1"),
    (["evaluate", "x.npz", "--batch-size", "-256"], "--batch-size", "at least 1"),
    (["graph", "--batch-size", "0"], "--batch-size", "from 1 to 1024"),
    (["graph", "--batch-size", "1000000000"], "--batch-size", "from 1 to 1024"),  # would fill GiBs
    (["show", "x.npz", "--image-index", "-1"], "--image-index", "at least 0"),
    (["show", "x.npz", "--image-index", "one"], "--image-index", "at least 0"),
])
def test_a_bad_flag_of_the_other_commands_is_refused_by_the_parser(argv, flag, accepted, capsys, loads):
    error = _refused_by_the_parser(argv, capsys)
    assert f"argument {flag}" in error and accepted in error, error
    assert loads == []


def test_out_that_is_a_file_or_under_a_file_is_refused_by_the_parser(tmp_path, capsys, loads):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    error = _refused_by_the_parser(["train", "--out", str(a_file), *TINY], capsys)
    assert "argument --out" in error and f"{a_file} is a file, not a folder" in error
    error = _refused_by_the_parser(["train", "--out", str(a_file / "deeper" / "run"), *TINY], capsys)
    assert "argument --out" in error and f"{a_file} is a file" in error
    error = _refused_by_the_parser(["show", "x.npz", "--out", str(a_file)], capsys)
    assert "argument --out" in error
    error = _refused_by_the_parser(["graph", "--out", str(a_file / "graph.dot")], capsys)
    assert "argument --out" in error and f"{a_file} is a file" in error
    error = _refused_by_the_parser(["graph", "--out", str(tmp_path)], capsys)
    assert "argument --out" in error and "is a folder, not a file" in error
    assert a_file.read_text() == "not a folder" and loads == []


def test_out_that_cannot_be_written_is_refused_before_loading_data(tmp_path, monkeypatch, capsys, loads):
    """Writing is tried with a probe file; a refusal (a read-only disk, no permission) names --out."""
    out = tmp_path / "new" / "run"
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["train", "--out", str(out), *TINY]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"minicnn train: --out {out}: cannot make or write" in error
    assert "Permission denied" in error and "Traceback" not in error
    assert loads == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_read_only_folder_is_refused_before_loading_data(tmp_path, capsys, loads):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--out", str(locked / "run"), *TINY]) == 1
        assert main(["train", "--out", str(locked), *TINY]) == 1
    finally:
        locked.chmod(0o700)
    assert capsys.readouterr().err.count("cannot make or write") == 2 and loads == []


def test_default_runs_folder_that_cannot_be_made_is_refused_before_loading_data(tmp_path, monkeypatch, capsys,
                                                                                 loads):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs folder goes")
    assert main(["train", *TINY]) == 1
    error = capsys.readouterr().err
    assert "minicnn train: the runs folder runs: cannot make or write" in error and loads == []


def test_epochs_not_given_means_five_and_out_is_made_before_training(tmp_path, monkeypatch):
    seen = {}

    def record(self, loader, epochs, checkpoint_dir=None, **kwargs):
        seen["epochs"], seen["made"] = epochs, checkpoint_dir.is_dir()
        raise KeyboardInterrupt  # enough: the settings reached fit

    monkeypatch.setattr(Trainer, "fit", record)
    out = tmp_path / "a" / "b"
    argv = ["train", "--out", str(out), "--limit", "96", "--validation", "0", "--quiet"]
    assert main(argv) == 130
    assert seen == {"epochs": 5, "made": True}
    assert not out.exists()  # made for the run, which wrote nothing before it stopped: removed again


# ----- the run folder: locked while a train writes there, temporaries of a killed run removed ----------------

def _hold_lock(folder, pid):
    """Hold folder's lock as a running train does: .lock with a pid, flocked by an open file."""
    file = open(folder / runs.LOCK_FILE, "a+")
    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    file.write(f"{pid}\n")
    file.flush()
    return file


def test_a_folder_in_use_by_a_live_train_is_refused_in_one_line(tmp_path, capsys, loads):
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold_lock(out, 424242)
    try:
        assert main(["train", "--out", str(out), *TINY]) == 1
        error = capsys.readouterr().err
        assert error == (f"minicnn train: --out {out} is in use by another minicnn train (process 424242, which "
                         f"holds {out / runs.LOCK_FILE}); wait for it to end, or choose another folder\n")
        assert loads == [] and (out / runs.LOCK_FILE).read_text() == "424242\n"  # the holder's lock is untouched
        assert main(["train", "--resume", str(out), "--quiet"]) == 1
        assert f"--resume {out} is in use by another minicnn train" in capsys.readouterr().err
    finally:
        holder.close()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.LOCK_FILE).write_text(f"{dead_pid}\n")  # what a SIGKILLed train leaves: the file, no flock
    assert main(["train", "--out", str(out), *TINY]) == 0
    assert f"{out / runs.LOCK_FILE} was left by process {dead_pid}, which has ended" in capsys.readouterr().err
    assert not (out / runs.LOCK_FILE).exists()  # released at the end
    assert {"last.npz", "best.npz", "metrics.json"} <= {path.name for path in out.iterdir()}


def test_the_lock_holds_the_pid_of_the_train_while_it_runs(tmp_path, monkeypatch):
    seen = {}

    def look(self, loader, epochs, checkpoint_dir=None, **kwargs):
        seen["lock"] = (checkpoint_dir / runs.LOCK_FILE).read_text()
        seen["second"] = main(["train", "--out", str(checkpoint_dir), "--overwrite", *TINY])
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", look)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 130
    assert seen == {"lock": f"{os.getpid()}\n", "second": 1}  # a second train on the same folder is refused
    assert not out.exists()  # made for this run, which wrote nothing: removed again


def test_temporaries_left_by_a_killed_run_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    left = [".last.npz.tmp-12345", ".best.npz.tmp-999999", ".metrics.json.tmp-7"]
    kept = [".last.npz.tmp-x", "notes.best.npz.tmp-3", ".other.tmp-5"]  # not what an interrupted write leaves
    for name in left + kept:
        (out / name).write_bytes(b"half a checkpoint")
    assert main(["train", "--out", str(out), *TINY]) == 0
    names = {path.name for path in out.iterdir()}
    assert not names & set(left) and set(kept) <= names
    assert "removed 3 temporary files an interrupted run left" in capsys.readouterr().err


def test_resume_removes_temporaries_and_refuses_bad_saved_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    (out / ".best.npz.tmp-31337").write_bytes(b"")
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert not (out / ".best.npz.tmp-31337").exists()
    assert len(json.loads((out / "metrics.json").read_text())["history"]["loss"]) == 2

    # Saved settings are checked as the flags are: a checkpoint saying epochs 0 or an unknown dataset is refused.
    from minicnn.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(out / "last.npz")
    for key, value in [("epochs", 0), ("dataset", "imagenet"), ("lr", float("nan")), ("limit", -59000),
                       ("seed", True)]:
        state = {**loaded.state, "run": {**loaded.state["run"], key: value}}
        save_checkpoint(out / "last.npz", loaded.model, state=state)
        capsys.readouterr()
        assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 1
        error = capsys.readouterr().err
        # One line naming the file and the setting: load_checkpoint's schema refuses wrong types and ranges,
        # the command line what no flag would accept (an unknown dataset).
        assert error.startswith("minicnn train: ") and error.count("\n") == 1 and str(out / "last.npz") in error
        assert f"run setting {key}" in error or f"'state.run': '{key}'" in error


def test_resume_of_a_missing_folder_makes_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--resume", str(missing), "--quiet"]) == 1
    assert "no such folder" in capsys.readouterr().err and not missing.exists()


def test_evaluate_of_a_checkpoint_naming_an_unknown_dataset_is_one_line(tmp_path, capsys):
    from minicnn import models
    from minicnn.checkpoint import save_checkpoint

    path = tmp_path / "odd.npz"
    save_checkpoint(path, models.build("lenet"), state={"run": {"dataset": "imagenet"}})
    assert main(["evaluate", str(path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'imagenet'" in error and "--dataset" in error


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_commands_print_one_line_for_an_error_of_the_output_folder(command, tmp_path, monkeypatch, capsys):
    """An OSError (here a disk that fills up when metrics.json is written) is one line, never a traceback."""
    if command == "evaluate":
        monkeypatch.setattr(runs, "load_checkpoint", lambda path: (_ for _ in ()).throw(OSError(28, "No space left")))
        argv = ["evaluate", str(tmp_path / "x.npz")]
    else:
        monkeypatch.setattr(cli.train_report, "write_bytes_atomically",
                            lambda path, content: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        argv = ["train", "--out", str(tmp_path / "run"), *TINY]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"minicnn {command}: ") and "No space left" in error and error.count("\n") == 1


def test_main_as_a_process_prints_one_line_for_a_bad_flag(tmp_path):
    """The real entry point: exit 2 and the flag's message, no traceback, nothing written."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "minicnn", "train", "--epochs", "0", "--out", str(out)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 2 and "argument --epochs" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr == ("minicnn train: argument --epochs: expected an integer at least 1, got 0 "
                             "(see minicnn train --help)\n")
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    ([], "minicnn: the following arguments are required: command (see minicnn --help)"),
    (["trian"], "minicnn: argument command: invalid choice: 'trian'"),
    (["evaluate"], "minicnn evaluate: the following arguments are required: checkpoint (see minicnn evaluate --help)"),
    (["train", "--optimiser", "sgd"], "minicnn train: unrecognized arguments: --optimiser sgd"),
    (["train", "--model", "vgg"], "minicnn train: argument --model: invalid choice: 'vgg'"),
])
def test_every_parser_error_is_one_line_naming_the_command(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.startswith(message) and error.count("\n") == 1, error


def test_fuzzed_numeric_values_are_accepted_exactly_when_in_range(capsys, loads):
    """Many values for every integer flag of train: accepted iff the range says so, never a traceback."""
    rng = np.random.default_rng(16)
    ranges = {"--epochs": (1, None), "--limit": (1, None), "--validation": (0, None), "--seed": (0, 2**32 - 1),
              "--batch-size": (1, None), "--patience": (0, None), "--shift": (0, None)}
    parser = cli.build_parser()
    values = [0, -1, 1, 2**32 - 1, 2**32, 2**70, -(2**70)] + [int(v) for v in rng.integers(-10**6, 10**6, 40)]
    for flag, (minimum, maximum) in ranges.items():
        for value in values:
            accepted = value >= minimum and (maximum is None or value <= maximum)
            try:
                args = parser.parse_args(["train", flag, str(value)])
            except SystemExit as exit_info:
                assert not accepted and exit_info.code == 2, (flag, value)
                assert f"argument {flag}" in capsys.readouterr().err
            else:
                assert accepted and getattr(args, flag[2:].replace("-", "_")) == value, (flag, value)
    assert loads == []


# ----- what a kill, a full disk or a read-only folder leaves in the run folder -------------------------------------

def _failing_writes(monkeypatch, name, error):
    """The checkpoint writer raises `error` when it writes a file called `name` (a disk that fills up there)."""
    from minicnn import checkpoint

    real = checkpoint.write_atomically

    def write_atomically(path, write):
        if Path(path).name == name:
            raise error
        return real(path, write)

    monkeypatch.setattr(checkpoint, "write_atomically", write_atomically)


def _weights(path):
    from minicnn.checkpoint import load_checkpoint

    return load_checkpoint(path).model.state_dict()


def test_a_run_stopped_before_its_first_last_npz_resumes_from_the_start_to_the_uninterrupted_result(
        tmp_path, monkeypatch, capsys):
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["train", "--out", str(uninterrupted), *TINY]) == 0
    out = tmp_path / "run"
    with monkeypatch.context() as patch:  # the disk fills up between epoch 1's best.npz and its last.npz
        _failing_writes(patch, "last.npz", OSError(28, "No space left on device"))
        assert main(["train", "--out", str(out), *TINY]) == 1
    (out / ".last.npz.tmp-99999").write_bytes(b"half a checkpoint")  # what a kill at that moment leaves
    assert sorted(path.name for path in out.iterdir()) == [".last.npz.tmp-99999", "best.npz"]
    capsys.readouterr()

    # train --out and train --resume agree: the folder holds a run, and --resume continues it (from epoch 1).
    assert main(["train", "--out", str(out), *TINY]) == 1
    error = capsys.readouterr().err
    assert f"or continue it with --resume {out} (no last.npz there yet: it starts again from epoch 1)" in error
    assert ".last.npz.tmp-99999" in error  # the temporary is removed (by the first train that locks the folder)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert f"resuming {out} from the start: it holds best.npz but no last.npz" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["best.npz", "last.npz", "metrics.json"]
    for name in ("last.npz", "best.npz"):
        for key, array in _weights(uninterrupted / name).items():
            np.testing.assert_array_equal(_weights(out / name)[key], array, err_msg=f"{name} {key}")
    summaries = [json.loads((folder / "metrics.json").read_text()) for folder in (uninterrupted, out)]
    assert summaries[0]["test_accuracy"] == summaries[1]["test_accuracy"]
    assert summaries[0]["history"]["loss"] == summaries[1]["history"]["loss"]


def test_resume_of_a_folder_without_a_checkpoint_names_both_files(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 1
    assert "no last.npz or best.npz there" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), *TINY]) == 1
    error = capsys.readouterr().err
    assert "already holds a run (metrics.json)" in error and "--resume" not in error  # nothing to continue


@pytest.mark.parametrize("name", ["best.npz", "last.npz", "metrics.json"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   PermissionError(13, "Permission denied", ".FILE.tmp-4242")],
                         ids=["full disk", "read-only folder"])
def test_a_file_that_cannot_be_written_mid_run_is_named_in_one_line(name, error, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    if name == "metrics.json":
        monkeypatch.setattr(cli.train_report, "write_bytes_atomically",
                            lambda path, content: (_ for _ in ()).throw(error))
    else:
        _failing_writes(monkeypatch, name, error)
    if isinstance(error, PermissionError):
        # In a folder made read-only the lock cannot be removed either; that must not hide the run's own error.
        real_unlink = Path.unlink

        def unlink(path, missing_ok=False):
            if path.name == runs.LOCK_FILE:
                raise PermissionError(13, "Permission denied", str(path))
            return real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", unlink)
    assert main(["train", "--out", str(out), *TINY]) == 1
    message = capsys.readouterr().err
    assert message.startswith(f"minicnn train: cannot write {out / name}: {error.strerror}") and \
        message.count("\n") == 1, message
    assert runs.LOCK_FILE not in message and "Errno" not in message and ".tmp-" not in message
    if name == "last.npz":  # epoch 1's best.npz was written
        assert f"continue with --resume {out}" in message
    if name == "best.npz":
        assert "no checkpoint was written" in message


@pytest.mark.slow  # trains several runs: in the slow suite, for the default suite's 60 s
def test_latest_points_at_every_run_wherever_it_went(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "runs/cnn", *TINY]) == 0  # README's: a folder of your choice under runs/
    assert os.readlink("runs/latest") == "cnn"
    capsys.readouterr()
    assert main(["evaluate", "runs/latest/best.npz"]) == 0
    assert f"{Path('runs/cnn/best.npz')}: mnist test" in capsys.readouterr().out
    elsewhere = tmp_path / "elsewhere" / "run"
    assert main(["train", "--out", str(elsewhere), *TINY]) == 0  # outside runs/: an absolute link
    assert Path(os.readlink("runs/latest")) == elsewhere.resolve()
    assert main(["train", "--resume", "runs/cnn", "--epochs", "2", "--quiet"]) == 0  # the run trained last
    assert os.readlink("runs/latest") == "cnn"
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["train", "--out", "mine", *TINY]) == 0
    assert sorted(path.name for path in other.iterdir()) == ["mine"]  # no runs/ made just to hold latest


def test_metrics_json_and_the_last_lines_say_which_weights_scored_what(tmp_path, monkeypatch, capsys):
    # Epoch 2's validation is made to look worse, so best.npz keeps epoch 1 while last.npz holds epoch 2.
    real_evaluate, validations = Trainer.evaluate, []

    def evaluate(self, x, *args, **kwargs):
        result = real_evaluate(self, x, *args, **kwargs)
        if getattr(x, "num_samples", None) == 32:  # TINY's validation images (the test split has 100)
            validations.append(result["accuracy"])
            if len(validations) == 2:
                result = {**result, "accuracy": -1.0}
        return result

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 0
    monkeypatch.setattr(Trainer, "evaluate", real_evaluate)
    printed = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["last"] == {"checkpoint": "last.npz", "epoch": 2}
    best = summary["best"]
    assert best["checkpoint"] == "best.npz" and best["epoch"] == 1 and best["chosen_by"] == "val_accuracy"
    assert f"last.npz (epoch 2): test accuracy {summary['test_accuracy']:.4f}" in printed
    assert f"best.npz (epoch 1, the best val_accuracy; evaluate, show, predict and serve read it): " \
           f"test accuracy {best['test_accuracy']:.4f}" in printed
    for name, expected in (("best.npz", best), ("last.npz", summary)):  # what evaluate says of each file
        assert main(["evaluate", str(out / name)]) == 0
        said = capsys.readouterr().out
        assert f"loss {expected['test_loss']:.4f}" in said and f"accuracy: {expected['test_accuracy']:.4f}" in said
    assert np.array(best["confusion_matrix"]).sum() == 100


def test_one_epoch_says_last_and_best_are_the_same_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["best"]["epoch"] == summary["last"]["epoch"] == 1
    assert summary["best"]["test_accuracy"] == summary["test_accuracy"]
    assert f"last.npz = best.npz (epoch 1): test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out
