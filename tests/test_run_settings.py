"""minicnn/run_settings.py: one schema for the flags, --resume and the checkpoint reader."""

import math

import pytest

from minicnn import models, nn, run_settings
from minicnn.checkpoint import load_checkpoint, save_checkpoint
from minicnn.cli import build_parser
from minicnn.errors import CheckpointError

GOOD = {"model": "cnn", "dataset": "mnist", "epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 1e-3}


@pytest.mark.parametrize("lr", [0, 0.0, -1e-3, math.nan, math.inf])
def test_a_learning_rate_is_refused_by_the_flag_and_by_the_checkpoint_alike(tmp_path, capsys, lr):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", f"--lr={lr}"])
    assert "finite number above 0" in capsys.readouterr().err
    path = save_checkpoint(tmp_path / "last.npz", nn.Sequential(nn.Dense(2, 2)), state={"run": {**GOOD, "lr": lr}})
    with pytest.raises(CheckpointError, match="'state.run': 'lr' must be a finite number above 0"):
        load_checkpoint(path)


def test_the_checkpoint_checks_types_and_ranges_and_resume_the_choices_too(tmp_path):
    # A library user may save settings of a model of their own: the checkpoint loads, --resume refuses it.
    path = save_checkpoint(tmp_path / "last.npz", nn.Sequential(nn.Dense(2, 2)),
                           state={"run": {**GOOD, "model": "my_net"}})
    assert load_checkpoint(path).state["run"]["model"] == "my_net"
    with pytest.raises(CheckpointError, match=r"run setting model: expected one of \[.*'cnn'.*\], got 'my_net'"):
        run_settings.checked(load_checkpoint(path).state["run"], where=path)
    path = save_checkpoint(tmp_path / "bad.npz", nn.Sequential(nn.Dense(2, 2)), state={"run": {**GOOD, "pad": -1}})
    with pytest.raises(CheckpointError, match="'pad' must be an integer at least 0, got -1"):
        load_checkpoint(path)


def test_checked_fills_in_the_defaults_and_needs_the_required_settings():
    settings = run_settings.checked(dict(GOOD), where="x.npz")
    assert settings == {**run_settings.DEFAULTS, **GOOD}
    with pytest.raises(CheckpointError, match="x.npz: run setting lr: expected a finite number above 0, got None"):
        run_settings.checked({key: value for key, value in GOOD.items() if key != "lr"}, where="x.npz")


def test_the_flags_take_their_defaults_and_choices_from_the_schema():
    args = build_parser().parse_args(["train"])
    for name, setting in run_settings.SETTINGS.items():
        if name not in ("epochs", "optimizer", "lr", "normalize"):  # None on the command line: derived
            assert getattr(args, name) == setting.default, name
    settings = run_settings.completed(vars(args))
    assert list(settings) == list(run_settings.SETTINGS)
    assert settings["epochs"] == 5 and settings["optimizer"] == "adam" and settings["lr"] == 1e-3
    assert run_settings.completed({**vars(args), "model": "resnet18", "dataset": "cifar10"})["normalize"] == "imagenet"
    assert run_settings.completed({**vars(args), "model": "resnet18"})["normalize"] == "none"  # grey MNIST
    assert run_settings.SETTINGS["model"].rule.choices == tuple(sorted(models.MODELS))


def test_every_rule_refuses_what_its_description_excludes():
    cases = {"epochs": ([1, 7], [0, -1, 2.0, True, "3", None]), "seed": ([0, 2**32 - 1], [2**32, -1]),
             "momentum": ([0, 0.5], [1, 1.5, -0.1, math.nan]), "weight_decay": ([0, 1e-4], [-1e-4, math.inf]),
             "augment": ([[], ["crop", "flip"]], [["rotate"], "crop", [1]]), "freeze_backbone": ([True], [1, None]),
             "limit": ([None, 1], [0]), "data": ([None, "/x"], [7])}
    for name, (good, bad) in cases.items():
        assert all(run_settings.problem(name, value) is None for value in good), name
        for value in bad:
            assert run_settings.problem(name, value).startswith("expected "), (name, value)


def test_the_schema_names_every_model_of_the_zoo_and_no_other():
    # run_settings names the models instead of importing minicnn.models (checkpoint.py reads the schema).
    from minicnn import models, run_settings

    assert run_settings.MODELS == tuple(sorted(models.MODELS))
