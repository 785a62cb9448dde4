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
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend
from .errors import CheckpointError, ShapeError
from .nn import build, describe

FORMAT = "minicnn-checkpoint"
VERSION = 1

# A .npz is a zip archive; these are the first bytes of a zip with members and of an empty one.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_SIGNATURE = b"\x93NUMPY"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name with the pid: hidden, obviously temporary, and distinct for concurrent writers.
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as file:
            np.savez(file, **entries)  # a file object, so NumPy adds no '.npz' to the name
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(temporary, path)
    except BaseException:  # KeyboardInterrupt too: never leave a half-written temporary behind
        temporary.unlink(missing_ok=True)
        raise


# ----- loading ------------------------------------------------------------------------------------

def load_checkpoint(path, model=None, optimizer=None, schedule=None):
    """Read a checkpoint written by save_checkpoint; load it into model, optimizer and schedule.

    model None: the model is built from the saved architecture (CheckpointError if
    there is none). A given model must match the saved architecture when both are
    known; its weights are replaced (names and shapes checked first) on its device.
    optimizer, schedule: loaded when given (CheckpointError if the file holds none).
    Nothing is changed unless everything fits. Raises FileNotFoundError for a missing
    file and CheckpointError for anything that is not a minicnn checkpoint.
    """
    path = Path(path)
    entries = _read_entries(path)
    architecture = _json_entry(path, entries, "architecture")
    state = _json_entry(path, entries, "state")
    optimizer_state = _optimizer_state(path, entries)
    schedule_state = _json_entry(path, entries, "schedule")
    weights = {key[len("model/"):]: array for key, array in entries.items() if key.startswith("model/")}

    if optimizer is not None and optimizer_state is None:
        raise CheckpointError(f"checkpoint '{path}' holds no optimizer state to load into {type(optimizer).__name__}")
    if schedule is not None and schedule_state is None:
        raise CheckpointError(f"checkpoint '{path}' holds no schedule state to load into {type(schedule).__name__}")
    if model is None:
        model = _rebuild(path, architecture)
    elif architecture is not None:
        _check_architecture(path, architecture, model)

    # Load one by one, and put back what was already loaded if a later one does not fit.
    loads = [(model, weights)]
    loads += [(optimizer, optimizer_state)] if optimizer is not None else []
    loads += [(schedule, schedule_state)] if schedule is not None else []
    done = []
    try:
        for target, saved in loads:
            previous = target.state_dict()
            try:
                target.load_state_dict(saved)
            except (KeyError, ShapeError, CheckpointError) as error:
                message = error.args[0] if error.args else str(error)
                raise CheckpointError(f"checkpoint '{path}' does not fit the {type(target).__name__}: {message}") from None
            done.append((target, previous))
    except BaseException:
        for target, previous in reversed(done):
            target.load_state_dict(previous)
        raise
    return Checkpoint(model, architecture, state or {}, optimizer_state, schedule_state, path)


def _read_entries(path):
    """Every entry of the .npz at `path` as NumPy arrays, or a CheckpointError saying what is wrong."""
    if not path.exists():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at '{path}'")
    with open(path, "rb") as file:
        start = file.read(len(_NPY_SIGNATURE))
    if start.startswith(_NPY_SIGNATURE):
        raise CheckpointError(f"'{path}' is a single .npy array, not a minicnn checkpoint (.npz)")
    if not start.startswith(_ZIP_SIGNATURES):
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: it is not a .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" in str(error).lower():  # NumPy refuses object arrays when allow_pickle=False
            raise CheckpointError(f"'{path}' holds pickled objects, which minicnn never loads") from None
        raise CheckpointError(f"'{path}' is damaged or truncated: {error}") from None
    except Exception as error:  # zipfile.BadZipFile, zlib.error, EOFError, OSError: a broken archive
        raise CheckpointError(f"'{path}' is damaged or truncated: {type(error).__name__}: {error}") from None

    if "format" not in entries:
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: no 'format' entry")
    found_format = entries["format"]
    if found_format.shape != () or found_format.dtype.kind != "U" or str(found_format) != FORMAT:
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: its format is {found_format!r}, not {FORMAT!r}")
    version = entries.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"'{path}' has no valid 'version' entry (got {version!r})")
    if int(version) != VERSION:
        raise CheckpointError(
            f"'{path}' is a version {int(version)} checkpoint; this minicnn reads version {VERSION}"
        )
    return entries


def _json_entry(path, entries, key):
    """The JSON entry `key` decoded, or None when the file has none."""
    if key not in entries:
        return None
    text = entries[key]
    if text.shape != () or text.dtype.kind != "U":
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' should be a JSON string, got a {text.dtype} array")
    try:
        return json.loads(str(text))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' is not valid JSON ({error})") from None


def _optimizer_state(path, entries):
    """The optimizer's state dict: its JSON entry with the arrays put back where it holds None."""
    state = _json_entry(path, entries, "optimizer")
    if state is None:
        return None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}': the optimizer entry is not a JSON object")
    for key, value in entries.items():
        if not key.startswith("optimizer/"):
            continue
        _, slot, position = key.split("/", 2)
        if not (isinstance(state.get(slot), list) and position.isdigit() and int(position) < len(state[slot])):
            raise CheckpointError(f"checkpoint '{path}': array '{key}' has no place in the optimizer's state")
        state[slot][int(position)] = value
    return state


def _rebuild(path, architecture):
    if architecture is None:
        raise CheckpointError(
            f"checkpoint '{path}' holds no architecture (the model that saved it has no config()); "
            "build the model and pass it: load_checkpoint(path, model=...)"
        )
    try:
        return build(_as_description(architecture))
    except ValueError as error:
        raise CheckpointError(f"checkpoint '{path}': cannot rebuild the model: {error}") from None


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
        return (f"input_shape: checkpoint has {saved['config'].get('input_shape')}, "
                f"model has {current['config'].get('input_shape')}")
    return None


def _describe(entry):
    """'Conv2D(in_channels=1, out_channels=32, ...)' for a layer entry of a Sequential config."""
    if entry is None:
        return "no layer there"
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return repr(entry)
    arguments = ", ".join(f"{key}={value!r}" for key, value in entry["config"].items())
    return f"{entry.get('type')}({arguments})"
