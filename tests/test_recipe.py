"""minicnn/recipe.py: a run built from its settings, as `minicnn train` builds it."""

import numpy as np
import pytest

from minicnn import backend, models, nn, optim, recipe, run_settings


def _settings(**changes):
    given = {name: setting.default for name, setting in run_settings.SETTINGS.items()}
    return run_settings.completed({**given, "epochs": None, "optimizer": None, "lr": None, "normalize": None,
                                   **changes})


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_each_model_gets_the_arguments_it_takes(model):
    arguments = recipe.model_arguments(_settings(model=model, depth=8), 1, 28, 10)
    assert ("image_size" in arguments) == (model in ("cnn", "lenet", "fashion_cnn"))
    assert ("in_channels" in arguments) == (model not in ("cifar_cnn", "cnn64"))
    assert arguments.get("depth") == (8 if model == "resnet" else None)


def test_build_makes_the_run_the_settings_describe(monkeypatch):
    rng = np.random.default_rng(0)
    fake = {split: (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count))
            for split, count in (("train", 50), ("test", 20))}
    monkeypatch.setitem(recipe.LOADERS, "mnist", lambda split: fake[split])
    settings = _settings(model="lenet", batch_size=8, schedule="step", limit=40, validation=None)
    backend.manual_seed(0)
    run = recipe.build(settings)
    assert settings["validation"] == 4 and run.train.num_samples == 36 and run.validation.num_samples == 4
    assert isinstance(run.optimizer, optim.SGD) and run.optimizer.lr == 0.01 and run.optimizer.momentum == 0.9
    assert isinstance(run.schedule, optim.StepLR) and run.image.shape == (1, 28, 28)
    assert run.model.input_shape == (1, 28, 28) and run.class_names == [str(digit) for digit in range(10)]
    backend.manual_seed(0)
    again = recipe.build(dict(settings))
    for first, second in zip(run.model.parameters(), again.model.parameters()):
        np.testing.assert_array_equal(first.numpy(), second.numpy())  # the same seed, the same run


def test_a_hold_out_that_leaves_nothing_says_what_to_pass_naming_the_settings():
    # A library caller set settings, not flags: the command line words it by its flags (test_cli_arguments).
    with pytest.raises(run_settings.SettingsError) as error:
        recipe.validation_count(10, 10, 10)
    assert str(error.value) == ("validation=10 leaves no training images (limit=10 keeps 10); pass a smaller "
                                "validation (such as 1), or validation=0 for none")
    with pytest.raises(ValueError, match=r"^validation=50 leaves no training images \(the dataset has 20\)"):
        recipe.validation_count(50, 20, None)
    assert recipe.validation_count(None, 100_000, None) == 5000


def test_settings_left_out_take_the_defaults_of_the_one_schema(monkeypatch):
    # recipe repeats no default: a change in run_settings is what a run without the setting gets.
    for name, value in (("momentum", 0.5), ("weight_decay", 0.25), ("depth", 14), ("pad", 1)):
        monkeypatch.setitem(run_settings.DEFAULTS, name, value)
    settings = _settings(model="resnet")
    for name in ("momentum", "weight_decay", "depth", "pad"):
        del settings[name]
    optimizer = recipe.optimizer(settings, nn.Dense(2, 3))
    assert (optimizer.momentum, optimizer.weight_decay) == (0.5, 0.25)
    assert recipe.model_arguments(settings, 1, 28, 10)["depth"] == 14
    train, _ = recipe.transforms(settings, 1, 28, 28)
    assert train(np.zeros((1, 1, 28, 28), np.uint8)).shape == (1, 1, 30, 30)
