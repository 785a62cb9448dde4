"""Checkpoints: a model's weights, its architecture, the optimizer, the schedule and the
training position in one .npz file that loads without pickle.

Entries of the file (np.load(path, allow_pickle=False) reads every one):

    format          "minicnn-checkpoint"            0-d string array
    version         1                               0-d int array
    architecture    JSON of nn.describe(model)      only when the model describes itself
    model/<name>    each parameter and buffer       e.g. model/0.weight, model/1.running_mean
    optimizer       JSON: type, hyperparameters, step counts; null where an array is stored
    optimizer/<slot>/<index>                        e.g. optimizer/velocities/0
    schedule        JSON of schedule.state_dict()
    state           JSON of the caller's training state (epoch, history, ...)

Arrays are stored as NumPy, so a checkpoint written on the GPU loads on the CPU and
the other way round. JSON entries may hold NaN and infinities (a diverged loss in a
history), written as Python's json module writes them.
"""

import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend, run_settings
from . import checkpoint_guards as guards
from .errors import CheckpointError, ShapeError
from .files import write_atomically
from .nn import build, describe, skeleton, state_shapes
from .nn.registry import shorten

FORMAT = "minicnn-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What load_checkpoint read.

    model: the model the weights were loaded into (the one passed, or one rebuilt from
    the architecture); architecture: the saved nn.describe(model), or None; state: the
    training state dict ({} when none was saved); optimizer_state, schedule_state: the
    saved state dicts, or None; path: the file read.
    """

    model: object
    architecture: dict | None
    state: dict
    optimizer_state: dict | None
    schedule_state: dict | None
    path: Path

    @property
    def dataset(self):
        """The dataset the run settings name (state['run']['dataset']), or None."""
        run = self.state.get("run")
        return run.get("dataset") if isinstance(run, dict) else None


# ----- saving ------------------------------------------------------------------------------------

def save_checkpoint(path, model, optimizer=None, schedule=None, state=None):
    """Write model weights (and architecture, optimizer, schedule and `state` when given) to `path`.

    state: a JSON-able dict (numbers, strings, lists, dicts, None; NumPy scalars become
    numbers; tuples come back as lists). The file is replaced atomically: it is written
    to a temporary file in the same folder and renamed over `path`, so an interrupted
    save leaves the previous checkpoint intact. The parent folder is created if missing.
    Returns the path as a Path.
    """
    path = Path(path)
    entries = {"format": np.array(FORMAT), "version": np.array(VERSION)}
    try:
        entries["architecture"] = np.array(_to_json(describe(model), "the model's config()"))
    except NotImplementedError:
        pass  # a custom Module: its weights are saved, its architecture cannot be
    for name, array in model.state_dict().items():
        entries[f"model/{name}"] = backend.to_numpy(array)
    if optimizer is not None:
        described, arrays = _split_arrays(optimizer.state_dict())
        entries["optimizer"] = np.array(_to_json(described, "the optimizer's state"))
        entries.update((f"optimizer/{key}", array) for key, array in arrays.items())
    if schedule is not None:
        entries["schedule"] = np.array(_to_json(schedule.state_dict(), "the schedule's state"))
    if state is not None:
        if not isinstance(state, dict):
            raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
        entries["state"] = np.array(_to_json(state, "the training state"))
    _write_atomically(path, entries)
    return path


def _split_arrays(optimizer_state):
    """(JSON-able state with None where arrays were, {'slot/index': NumPy array})."""
    described, arrays = {}, {}
    for key, value in optimizer_state.items():
        if isinstance(value, list) and any(backend.is_cupy_array(v) or isinstance(v, np.ndarray) for v in value):
            described[key] = [None] * len(value)
            for position, array in enumerate(value):
                if array is not None:
                    arrays[f"{key}/{position}"] = backend.to_numpy(array)
        else:
            described[key] = value
    return described, arrays


def _to_json(value, what):
    def plain(item):  # NumPy scalars (np.float32 from a metric, say) become Python numbers
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"a {type(item).__name__} is not JSON-able")

    try:
        return json.dumps(value, default=plain)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"save_checkpoint: {what} must be JSON-able (numbers, strings, lists, dicts, None): {error}"
        ) from None


def _write_atomically(path, entries):
    write_atomically(path, lambda file: np.savez(file, **entries))  # a file object: NumPy adds no '.npz'


# ----- loading ------------------------------------------------------------------------------------
#
# A checkpoint comes from outside, so every name, shape and size is checked (by checkpoint_guards)
# before any array is read, and nothing is changed unless everything fits.

def load_checkpoint(path, model=None, optimizer=None, schedule=None):
    """Read a checkpoint written by save_checkpoint; load it into model, optimizer and schedule.

    model None: the model is built from the saved architecture (CheckpointError if
    there is none), straight from the stored arrays. A given model must match the saved
    architecture when both are known; its weights are replaced (names and shapes checked
    first) on its device. optimizer, schedule: loaded when given (CheckpointError if the
    file holds none). Every name, shape and size is checked before any array is read,
    and nothing is changed unless everything fits. Raises FileNotFoundError for a missing
    file and CheckpointError, one line naming the file and the entry, for anything else.
    """
    path = Path(path)
    guards.check_signature(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return _load(path, archive, model, optimizer, schedule)
    except (CheckpointError, FileNotFoundError):
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as error:
        raise CheckpointError(f"'{path}' is damaged or truncated: {type(error).__name__}: {error}") from None


def _load(path, archive, model, optimizer, schedule):
    members = guards.members_of(path, archive)
    _check_format(path, archive, members)  # first, so that any other .npz is named as such
    guards.check_member_names(path, members)
    architecture = guards.json_entry(path, archive, members, "architecture")
    state = guards.json_entry(path, archive, members, "state")
    optimizer_json = guards.json_entry(path, archive, members, "optimizer")
    schedule_state = guards.json_entry(path, archive, members, "schedule")
    _check_schemas(path, state, optimizer_json, schedule_state)
    if optimizer is not None and optimizer_json is None:
        raise CheckpointError(f"checkpoint '{path}' holds no optimizer state to load into {type(optimizer).__name__}")
    if schedule is not None and schedule_state is None:
        raise CheckpointError(f"checkpoint '{path}' holds no schedule state to load into {type(schedule).__name__}")

    target = _target(path, architecture, model)
    expected = state_shapes(target)
    parameter_shapes = [tuple(parameter.shape) for parameter in target.parameters()]
    # Each array's .npy header, checked against its size and the shape it must have, before any data is read.
    headers = {key: guards.array_header(path, archive, members[key], key)
               for key in members if key.startswith(("model/", "optimizer/"))}
    guards.check_model_arrays(path, target, expected, headers)
    optimizer_places = guards.check_optimizer_arrays(path, optimizer_json, parameter_shapes, headers)

    # Everything fits on paper: now read the arrays, each exactly its declared size.
    arrays = {key: guards.read_array(path, archive, members[key], key, header) for key, header in headers.items()}
    weights = {key[len("model/"):]: array for key, array in arrays.items() if key.startswith("model/")}
    optimizer_state = None
    if optimizer_json is not None:
        optimizer_state = optimizer_json
        for key, (slot, position) in optimizer_places.items():
            optimizer_state[slot][position] = arrays[key]

    if model is None:
        model = build(_description(path, architecture), weights=weights)
        loads = []
    else:
        loads = [(model, weights)]
    loads += [(optimizer, optimizer_state)] if optimizer is not None else []
    loads += [(schedule, schedule_state)] if schedule is not None else []
    _load_all(path, loads)
    return Checkpoint(model, architecture, state or {}, optimizer_state, schedule_state, path)


def _target(path, architecture, model):
    """What the arrays must fit: the given model, or the saved architecture built as placeholders."""
    if model is None:
        description = _description(path, architecture)
        try:
            return skeleton(description)
        except ValueError as error:
            raise CheckpointError(f"checkpoint '{path}': entry 'architecture': cannot rebuild the model: "
                                  f"{error}") from None
    if architecture is not None:
        _check_architecture(path, architecture, model)
    return model


def _load_all(path, loads):
    """Load each (target, state) in turn; put back what was already loaded if a later one does not fit."""
    done = []
    try:
        for target, saved in loads:
            previous = target.state_dict()
            try:
                target.load_state_dict(saved)
            except (KeyError, ShapeError, CheckpointError, TypeError, ValueError) as error:
                message = error.args[0] if error.args else str(error)
                raise CheckpointError(f"checkpoint '{path}' does not fit the {type(target).__name__}: {message}") from None
            done.append((target, previous))
    except BaseException:
        for target, previous in reversed(done):
            target.load_state_dict(previous)
        raise


def _check_format(path, archive, members):
    found_format = guards.small_entry(path, archive, members, "format", guards.SMALL_CAP)
    if found_format is None:
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: no 'format' entry")
    if found_format.shape != () or found_format.dtype.kind != "U" or str(found_format) != FORMAT:
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: its format is {found_format!r}, not {FORMAT!r}")
    version = guards.small_entry(path, archive, members, "version", guards.SMALL_CAP)
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"'{path}' has no valid 'version' entry (got {version!r})")
    if int(version) != VERSION:
        raise CheckpointError(
            f"'{path}' is a version {int(version)} checkpoint; this minicnn reads version {VERSION}"
        )


# ----- the schema of the JSON entries -------------------------------------------------------------

def _is_int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The keys Trainer.save writes into `state`; any other key a caller saves is kept as it is.
STATE_SCHEMA = {
    "epoch": ("an int >= 0", _is_int),
    "step": ("an int >= 0", _is_int),
    "sums": ("null or [loss sum, correct, seen]",
             lambda v: v is None or (isinstance(v, list) and len(v) == 3 and _is_number(v[0])
                                     and _is_int(v[1]) and _is_int(v[2]))),
    "history": ("an object of lists of numbers",
                lambda v: isinstance(v, dict) and all(isinstance(values, list) and all(
                    value is None or _is_number(value) for value in values) for values in v.values())),
    "cpu_rng": ("null or a generator state object", lambda v: v is None or isinstance(v, dict)),
    "run": ("null or an object of run settings", lambda v: v is None or isinstance(v, dict)),
    "best_value": ("null or a number", lambda v: v is None or _is_number(v)),
    "best_epoch": ("null or an int >= 0", lambda v: v is None or _is_int(v)),
}

# The settings `minicnn train` saves as state["run"]: their one schema is run_settings's.
RUN_SCHEMA = run_settings.CHECKPOINT_SCHEMA


def _check_fields(path, entry, value, schema):
    for field, (wanted, ok) in schema.items():
        if field in value and not ok(value[field]):
            raise CheckpointError(f"checkpoint '{path}': entry '{entry}': '{field}' must be {wanted}, "
                                  f"got {shorten(value[field], 80)}")


def _check_schemas(path, state, optimizer_json, schedule_state):
    for key, value in (("state", state), ("optimizer", optimizer_json), ("schedule", schedule_state)):
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(f"checkpoint '{path}': entry '{key}' must be a JSON object, "
                                  f"got {type(value).__name__}")
    if state is not None:
        _check_fields(path, "state", state, STATE_SCHEMA)
        if state.get("run") is not None:
            _check_fields(path, "state.run", state["run"], RUN_SCHEMA)
        rng = state.get("cpu_rng")
        if rng is not None and not _same_layout(rng, backend.cpu_rng().bit_generator.state):
            raise CheckpointError(f"checkpoint '{path}': entry 'state': 'cpu_rng' is not a state of minicnn's "
                                  f"{backend.cpu_rng().bit_generator.state.get('bit_generator')} generator")
    for key, value in (("optimizer", optimizer_json), ("schedule", schedule_state)):
        if value is not None and not isinstance(value.get("type"), str):
            raise CheckpointError(f"checkpoint '{path}': entry '{key}' has no 'type' naming its class")


def _same_layout(saved, current):
    """True when `saved` has the keys and value types of the generator state `current` (and equal strings)."""
    if isinstance(current, dict):
        return isinstance(saved, dict) and saved.keys() == current.keys() and all(
            _same_layout(saved[key], current[key]) for key in current)
    if isinstance(current, str):
        return saved == current
    return _is_int(saved, low=-(2**128)) and saved < 2**128


def _description(path, architecture):
    if architecture is None:
        raise CheckpointError(
            f"checkpoint '{path}' holds no architecture (the model that saved it has no config()); "
            "build the model and pass it: load_checkpoint(path, model=...)"
        )
    return _as_description(architecture)


def _as_description(architecture):
    """Checkpoints written before the registry stored a Sequential's config at the top level."""
    if isinstance(architecture, dict) and architecture.get("type") == "Sequential" and "layers" in architecture:
        return {"type": "Sequential", "config": architecture}
    return architecture


def _check_architecture(path, architecture, model):
    try:
        expected = describe(model)
    except NotImplementedError:
        return  # the model cannot describe itself; names and shapes are still checked on loading
    difference = _first_difference(_as_description(architecture), expected)
    if difference is not None:
        raise CheckpointError(
            f"checkpoint '{path}' was saved from a different architecture: {difference}; "
            "build the model as it was saved, or call load_checkpoint(path) to rebuild it"
        )


def _layers(description):
    """The layer list of a Sequential's description, or None for anything else."""
    if isinstance(description, dict) and description.get("type") == "Sequential":
        config = description.get("config")
        if isinstance(config, dict) and isinstance(config.get("layers"), list):
            return config["layers"]
    return None


def _first_difference(saved, current, where="layer "):
    """A sentence naming the first layer where two architecture descriptions differ, or None if they are equal."""
    if saved == current:
        return None
    saved_layers, current_layers = _layers(saved), _layers(current)
    if saved_layers is None or current_layers is None:
        return f"checkpoint has {_describe(saved)}, model has {_describe(current)}"
    for position in range(max(len(saved_layers), len(current_layers))):
        ours = saved_layers[position] if position < len(saved_layers) else None
        theirs = current_layers[position] if position < len(current_layers) else None
        if ours == theirs:
            continue
        if _layers(ours) is not None and _layers(theirs) is not None:
            return _first_difference(ours, theirs, f"{where}{position}.")
        return f"{where}{position}: checkpoint has {_describe(ours)}, model has {_describe(theirs)}"
    if saved.get("config", {}).get("input_shape") != current.get("config", {}).get("input_shape"):
        return (f"input_shape: checkpoint has {shorten(saved['config'].get('input_shape'), 80)}, "
                f"model has {shorten(current['config'].get('input_shape'), 80)}")
    return None


def _describe(entry):
    """'Conv2D(in_channels=1, out_channels=32, ...)' for a layer entry of a Sequential config, cut
    to a few hundred characters (it comes from a file: names are shown escaped, as repr does)."""
    if entry is None:
        return "no layer there"
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return shorten(entry, 200)
    arguments = ", ".join(f"{key}={value!r}" for key, value in list(entry["config"].items())[:20])
    described = f"{entry.get('type')!s}({arguments})"
    return described if described.isprintable() and len(described) <= 300 else shorten(described, 300)
