"""The run settings: what `minicnn train` saves in every checkpoint as state["run"], in one schema.

    SETTINGS["lr"].rule.wanted          # 'a finite number above 0'
    problem("epochs", 0)                # 'expected an integer at least 1, got 0'
    checked(saved, where="last.npz")    # the saved settings with defaults filled in, or CheckpointError

Each setting has a rule (the values it may take), a default (what a saved run that lacks it means)
and, for names, its choices. Three readers use this one schema:
  - the command line's flags (minicnn/cli/arguments.py turns a rule into an argparse type),
  - `minicnn train --resume`, which checks the settings saved in last.npz as the flags are checked,
  - checkpoint.py, which checks state["run"] when it reads any checkpoint: types and ranges only
    (CHECKPOINT_SCHEMA), since the choices are the command line's and a library user may save
    settings of a model of their own.

Settings that are each allowed but do not fit together (a hold-out as large as the data) raise
SettingsError, which names them as its reader does: `validation=10` in a library, `--validation 10`
on the command line.
"""

import math

from . import optim
from .errors import CheckpointError

SEED_LIMIT = 2**32  # seeds are 0 .. 2**32 - 1, which every generator minicnn seeds (NumPy's, CuPy's) accepts
DEFAULT_EPOCHS = 5  # `minicnn train` without --epochs (a resumed run keeps its own)
FETCHED_DATASETS = ("fashion-mnist", "mnist")  # the grey 28x28 IDX datasets, fetched and verified by minicnn.data
PATH_DATASETS = ("cifar10", "imagefolder")  # read from a path (cifar10: the fetched archive when none is given)
DATASETS = FETCHED_DATASETS + PATH_DATASETS
AUGMENTATIONS = ("crop", "flip")
SCHEDULES = ("none", "step", "cosine")
NORMALIZATIONS = ("none", "imagenet")
# The models of minicnn.models by name (a test checks they are the same), each with its optimizer, as in the
# examples and tutorials each model comes from. Named here, not imported: checkpoint.py reads this schema and
# must not load the model zoo.
DEFAULT_OPTIMIZER = {"cnn": "adam", "lenet": "sgd", "fashion_cnn": "adam", "cifar_cnn": "adam", "cnn64": "adam",
                     "resnet": "sgd", "resnet18": "sgd"}
MODELS = tuple(sorted(DEFAULT_OPTIMIZER))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----- rules: what one setting may be ---------------------------------------------------------------

class Count:
    """An integer (not a bool) from minimum to maximum; no upper bound when maximum is None."""

    def __init__(self, minimum, maximum=None):
        self.minimum, self.maximum = minimum, maximum
        bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        self.wanted = f"an integer {bounds}"

    def ok(self, value, choices=True):
        return (isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum
                and (self.maximum is None or value <= self.maximum))


class Rate:
    """A learning rate: a finite number above 0."""

    wanted = "a finite number above 0"

    def ok(self, value, choices=True):
        return _is_number(value) and math.isfinite(value) and value > 0


class Number:
    """A finite number from `minimum` up to, and not including, `below` (no upper bound when below is None)."""

    def __init__(self, minimum, below=None):
        self.minimum, self.below = minimum, below
        self.wanted = f"a finite number >= {minimum}" if below is None else f"a number in [{minimum}, {below})"

    def ok(self, value, choices=True):
        return (_is_number(value) and math.isfinite(value) and value >= self.minimum
                and (self.below is None or value < self.below))


class Name:
    """One of `choices` (a string; any string where the choices are not checked)."""

    def __init__(self, choices):
        self.choices = tuple(choices)
        self.wanted = "a string"
        self.wanted_choice = (" or ".join(map(repr, self.choices)) if len(self.choices) == 2
                              else f"one of {list(self.choices)}")

    def ok(self, value, choices=True):
        return value in self.choices if choices else isinstance(value, str)


class Names:
    """A list of `choices` (of any strings where the choices are not checked, or when choices is None)."""

    def __init__(self, choices=None):
        self.choices = None if choices is None else tuple(choices)
        self.wanted = "a list of strings"
        self.wanted_choice = self.wanted if choices is None else f"a list of {list(self.choices)}"

    def ok(self, value, choices=True):
        allowed = self.choices if choices and self.choices is not None else None
        return isinstance(value, list) and all(
            isinstance(name, str) and (allowed is None or name in allowed) for name in value)


class Text:
    """A path, as a string."""

    wanted = "a path"

    def ok(self, value, choices=True):
        return isinstance(value, str)


class Flag:
    """True or false."""

    wanted = "true or false"

    def ok(self, value, choices=True):
        return isinstance(value, bool)


class Setting:
    """One run setting: its rule; its default (None where a saved run must hold it: `required`);
    optional: None is allowed as well (it means 'not set': no limit, no early stop, ...)."""

    def __init__(self, rule, default=None, optional=False, required=False):
        self.rule, self.default, self.optional, self.required = rule, default, optional, required

    def ok(self, value, choices=True):
        return (self.optional and value is None) or self.rule.ok(value, choices)

    def wanted(self, choices=True):
        wanted = getattr(self.rule, "wanted_choice", self.rule.wanted) if choices else self.rule.wanted
        return f"null or {wanted}" if self.optional and not choices else wanted


# The settings, in the order a run saves them. Defaults that depend on other settings (the optimizer on
# the model, lr on the optimizer, normalize on the model) are filled in by completed() below.
SETTINGS = {
    "model": Setting(Name(MODELS), "cnn", required=True),
    "dataset": Setting(Name(DATASETS), "mnist", required=True),
    "epochs": Setting(Count(1), DEFAULT_EPOCHS, required=True),
    "batch_size": Setting(Count(1), 64, required=True),
    "optimizer": Setting(Name(optim.DEFAULT_LR), required=True),
    "lr": Setting(Rate(), required=True),
    "schedule": Setting(Name(SCHEDULES), "none", optional=True),  # None (an early checkpoint's): no schedule
    "patience": Setting(Count(0), None, optional=True),
    "validation": Setting(Count(0), None, optional=True),
    "shift": Setting(Count(0), 0),
    "limit": Setting(Count(1), None, optional=True),
    "seed": Setting(Count(0, SEED_LIMIT - 1), 0),
    "data": Setting(Text(), None, optional=True),
    "depth": Setting(Count(8), 20),
    "image_size": Setting(Count(1), None, optional=True),
    "pad": Setting(Count(0), 0),
    "augment": Setting(Names(AUGMENTATIONS), []),
    "normalize": Setting(Name(NORMALIZATIONS), "none"),
    "weights": Setting(Text(), None, optional=True),
    "freeze_backbone": Setting(Flag(), False),
    "momentum": Setting(Number(0, 1), optim.DEFAULT_SGD_MOMENTUM),
    "weight_decay": Setting(Number(0), 0.0),
}
# What a run records beside its settings: an imagefolder run's classes, in the order of the model's outputs.
RECORDED = {"class_names": Setting(Names(), None, optional=True)}

# What a saved run that lacks a setting means (the settings a run must hold have none).
DEFAULTS = {name: setting.default for name, setting in SETTINGS.items() if not setting.required}

# checkpoint.py's check of state["run"]: {name: (what it must be, test)}, types and ranges without the choices.
CHECKPOINT_SCHEMA = {name: (setting.wanted(choices=False), lambda value, setting=setting: setting.ok(value, False))
                     for name, setting in {**SETTINGS, **RECORDED}.items()}


def completed(given):
    """The settings of a new run from `given` ({name: value}, None where not given): epochs, the optimizer
    (the model's own), lr (the optimizer's) and normalize (imagenet for resnet18 on colour images or with
    --weights, which take grey images repeated to 3 channels; none otherwise) are filled in."""
    settings = {name: given.get(name) for name in SETTINGS}
    settings["epochs"] = DEFAULT_EPOCHS if settings["epochs"] is None else settings["epochs"]
    settings["optimizer"] = settings["optimizer"] or DEFAULT_OPTIMIZER[settings["model"]]
    settings["lr"] = optim.DEFAULT_LR[settings["optimizer"]] if settings["lr"] is None else settings["lr"]
    colour = settings["dataset"] not in FETCHED_DATASETS or settings["weights"]  # MNIST's are grey: 1 channel
    settings["normalize"] = settings["normalize"] or ("imagenet" if settings["model"] == "resnet18" and colour
                                                      else "none")
    return settings


def problem(name, value):
    """None if `value` is allowed for the setting `name` (choices included), else what is wrong with it."""
    setting = SETTINGS[name] if name in SETTINGS else RECORDED[name]
    return None if setting.ok(value) else f"expected {setting.wanted()}, got {value!r}"


class SettingsError(ValueError):
    """Run settings, each allowed on its own, that cannot make a run together or with the data (a hold-out
    as large as the training set). `words(name)` makes the message, calling name(setting, value=None)
    wherever it names a setting: str() names them as a library caller sets them (`validation=10`, by
    setting_words), worded(name) as another caller does (the command line: `--validation 10`)."""

    def __init__(self, words):
        self.words = words
        super().__init__(words(setting_words))

    def worded(self, name):
        """The message, each setting in it named by name(setting, value=None)."""
        return self.words(name)


def setting_words(name, value=None):
    """A run setting as a library caller's message names it: 'validation', or with a value 'validation=10'."""
    return name if value is None else f"{name}={value!r}"


def checked(saved, where):
    """The settings a run saved (a dict), with the defaults filled in and each one checked as its flag would
    be. Raises CheckpointError naming `where` (the checkpoint) and the first setting that is wrong."""
    settings = {**DEFAULTS, **saved}
    for name in [*SETTINGS, *RECORDED]:
        reason = problem(name, settings.get(name))
        if reason:
            raise CheckpointError(f"{where}: run setting {name}: {reason}")
    return settings
