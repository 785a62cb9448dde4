"""The argument types of the `minicnn` command: each flag's type= function, so the parser's error names the flag.

The rules for run settings (ranges, choices, defaults) are minicnn/run_settings.py's; `setting(name)` gives
the add_argument keywords of one. A value the parser refuses ends the command with exit code 2 and one line,
`minicnn <command>: argument --flag: expected ..., got ... (see minicnn <command> --help)`.
"""

import argparse
from pathlib import Path

from .. import data, run_settings
from ..errors import CheckpointError, DataError
from ..run_settings import SETTINGS

CHECKPOINT_HELP = "a .npz checkpoint, or a run folder (uses best.npz)"
MODEL_FILE_HELP = "a .npz checkpoint, a run folder (uses best.npz) or an .onnx file"


def count(minimum, maximum=None):
    """An argparse type: an integer from minimum to maximum (no upper bound when maximum is None)."""
    return _checked(int, run_settings.Count(minimum, maximum))


def _checked(parse, rule):
    """An argparse type: the text parsed by `parse` (int, float), then checked by the run_settings rule."""

    def value_of(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule.wanted}, got {text!r}") from None
        if not rule.ok(value):
            raise argparse.ArgumentTypeError(f"expected {rule.wanted}, got {value!r}")
        return value

    value_of.__name__ = rule.wanted  # what argparse says for a value it could not convert
    return value_of


def augmentations(text):
    """An argparse type: a comma-separated list of run_settings.AUGMENTATIONS ('' or 'none': none)."""
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in run_settings.AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation(s) {unknown}; choose from "
                                         f"{list(run_settings.AUGMENTATIONS)}")
    return sorted(set(names))


def setting(name, **overrides):
    """add_argument's type= (or choices=, action=) and default= for the run setting `name` (see run_settings)."""
    rule, default = SETTINGS[name].rule, SETTINGS[name].default
    if isinstance(rule, run_settings.Name):
        keywords = {"choices": list(rule.choices), "default": default}
    elif isinstance(rule, run_settings.Names):
        keywords = {"type": augmentations, "default": default, "metavar": ",".join(rule.choices)}
    elif isinstance(rule, run_settings.Text):
        keywords = {"type": Path, "default": default, "metavar": "PATH"}
    elif isinstance(rule, run_settings.Flag):
        keywords = {"action": "store_true"}
    else:
        keywords = {"type": _checked(int if isinstance(rule, run_settings.Count) else float, rule), "default": default}
    return {**keywords, **overrides}


def flag_words(name, value=None):
    """A run setting as the command line names it, by its flag: '--validation', or with a value
    '--validation 10' (run_settings.SettingsError.worded words a library's message for the command line)."""
    flag = "--" + name.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def _blocking_file(path):
    """The first of `path` and its ancestors that exists and is not a folder (so `path` cannot be a folder)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def folder_to_write(text):
    """An argparse type: a folder that exists or could be made (no file in the way); writing is tried later."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    path = Path(text)
    blocking = _blocking_file(path)
    if blocking == path:
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, so {path} cannot be a folder under it")
    return path


def file_to_write(text):
    """An argparse type: a file name that is not a folder and whose folder could be made."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got an empty name")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, so {path} cannot be written under it")
    return path


def dataset_flag(command, help="default: the dataset the checkpoint was trained on"):
    """--dataset of the commands that read a checkpoint: one of the datasets minicnn fetches."""
    command.add_argument("--dataset", choices=list(run_settings.FETCHED_DATASETS), default=None, help=help)


def malloc_flag(command):
    command.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                         help="leave glibc's malloc settings alone (by default freed memory is kept for reuse, "
                              "which saves page faults each step; see minicnn.backend.keep_freed_memory)")


def dataset_of(path, loaded, given):
    """The dataset a command reads: --dataset (`given`), or the one the checkpoint's run settings name."""
    if given is not None:
        return given
    dataset = loaded.dataset
    if dataset is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    if dataset not in run_settings.DATASETS:
        raise CheckpointError(f"{path}: names the dataset {dataset!r}, which minicnn does not know "
                              f"({', '.join(run_settings.DATASETS)}); pass --dataset")
    return dataset


# ----- train's flags as a run's settings ----------------------------------------------------------------

def settings_of_flags(args):
    """The settings that define a run (run_settings.SETTINGS), saved in its checkpoints so --resume can reuse them."""
    _check_image_flags(args)
    given = {**vars(args), "augment": list(args.augment)}
    for name in ("data", "weights"):  # saved as absolute paths, so that a resumed run finds them from anywhere
        given[name] = None if given[name] is None else str(given[name].resolve())
    return run_settings.completed(given)


def _check_image_flags(args):
    """The flags of the image pipeline (--data, --weights, --freeze-backbone) that only make sense together."""
    if args.dataset in data.ARCHIVES and args.data is None:
        try:  # the archive `minicnn fetch` downloaded and checked, checked again here (once per process)
            args.data = data.fetch_archive(args.dataset, sources="cache", verbose=False)
        except DataError as error:
            raise DataError(f"--dataset {args.dataset} without --data reads the archive in the cache, which "
                            f"`minicnn fetch {args.dataset}` downloads; {error}") from None
    if args.dataset in run_settings.PATH_DATASETS and args.data is None:
        raise ValueError(f"--dataset {args.dataset} reads --data PATH; pass the "
                         + ("cifar-10-python.tar.gz archive" if args.dataset == "cifar10" else "picture folder"))
    if args.dataset not in run_settings.PATH_DATASETS and args.data is not None:
        raise ValueError(f"--data is for --dataset {' or '.join(run_settings.PATH_DATASETS)}; {args.dataset} is "
                         "fetched by minicnn")
    if args.weights is not None and args.model != "resnet18":
        raise ValueError(f"--weights loads a PyTorch ResNet-18 state dict; use it with --model resnet18, "
                         f"not {args.model}")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    if args.freeze_backbone and args.model not in ("resnet", "resnet18"):
        raise ValueError(f"--freeze-backbone trains only the layer fc, which --model {args.model} does not have")
