"""The `minicnn` command: train, evaluate, fetch, and look inside a model (graph, show).

    minicnn train --model cnn --epochs 5       # a fresh folder runs/cnn-YYYYmmdd-N; runs/latest points at it
    minicnn train --out runs/cnn               # a folder of your choice (refused if it holds a run)
    minicnn train --resume runs/latest         # continue an interrupted run
    minicnn train --profile --health           # time each operation in epoch 1; write health.png
    mpiexec -n 2 minicnn train --distributed   # one model on 2 processes (needs the dist extra)
    minicnn evaluate runs/latest/best.npz
    minicnn fetch mnist
    minicnn graph --model cnn --out graph.svg  # the computation graph of one training step
    minicnn show runs/latest/best.npz --image-index 7 --layer 3
    minicnn export runs/latest/best.npz cnn.onnx --softmax   # needs the onnx extra
    minicnn predict runs/latest/best.npz seven.png photo.jpg --top 3 [--json]   # needs Pillow
    minicnn train --model resnet --depth 20 --dataset fashion-mnist --pad 2 --augment crop,flip --optimizer sgd --lr 0.1
    minicnn train --model resnet18 --dataset cifar10 --data cifar-10-python.tar.gz --weights resnet18-f37072fd.pth \
        --freeze-backbone --image-size 224 --batch-size 4 --optimizer sgd --lr 0.001   # the fine-tuning tutorial
    minicnn train --model cnn64 --dataset imagefolder --data pictures/ --image-size 64   # pictures/{train,test}/<class>/
    minicnn serve runs/latest/best.npz         # a local page: draw a digit, watch every layer (Ctrl-C stops)

This module is an entry point, so it is where process-wide settings are made: `train` and
`evaluate` call backend.keep_freed_memory() first (--no-keep-freed-memory leaves malloc alone).
"""

import argparse
import contextlib
import datetime
import fcntl
import json
import math
import os
import re
import resource
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np

from . import __version__, backend, data, distributed, metrics, models, nn, optim
from . import functional as F
from .checkpoint import load_checkpoint
from .files import write_bytes_atomically
from .errors import (
    BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
)
from .onnx import export as export_to_onnx, read as read_onnx  # the `onnx` package is imported only when used
from .profiler import profile
from .tensorboard import TensorBoard
from .tensor import Tensor
from .training import EarlyStopping, Trainer
from .viz.graph import export_graph
from .viz.health import HealthMonitor
from .viz.saliency import named_layers
from .viz.plots import (
    require_matplotlib, save_confusion_matrix, save_feature_maps, save_filters, save_health, save_saliency,
    save_training_curves,
)

LOADERS = {"mnist": data.load_mnist, "fashion-mnist": data.load_fashion_mnist}
# Datasets read from a path the user gives (--data): the CIFAR-10 archive, a folder of pictures per class.
PATH_DATASETS = ("cifar10", "imagefolder")
DATASETS = sorted(LOADERS) + list(PATH_DATASETS)
AUGMENTATIONS = ("crop", "flip")
DEFAULT_OPTIMIZER = {"cnn": "adam", "lenet": "sgd", "cifar_cnn": "adam", "cnn64": "adam", "resnet": "sgd",
                     "resnet18": "sgd"}  # as in the examples and tutorials each model comes from
SCHEDULES = ("none", "step", "cosine")
RUNS = Path("runs")  # where a run without --out gets its own folder
RUN_FILES = ("last.npz", "best.npz", "metrics.json")  # a folder holding any of them holds a run
LOCK_FILE = ".lock"  # in a run folder while a `train` writes there: the holder's process id
# What an interrupted write of a run file leaves: the dot-name with the writer's pid that
# checkpoint.save_checkpoint (and the metrics.json write below) renames into place when done.
TEMPORARY = re.compile(r"\.(?:" + "|".join(re.escape(name) for name in RUN_FILES) + r")\.tmp-\d+")
SEED_LIMIT = 2**32  # seeds are 0 .. 2**32 - 1, which every generator minicnn seeds (NumPy's, CuPy's) accepts
GRAPH_BATCH_LIMIT = 1024  # `graph` builds a random batch of this many images; its graph is the same for any size


# ----- checking the arguments: each flag's type= function, so the parser's error names the flag ------------

def _range_text(minimum, maximum):
    return f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"


def _count_problem(value, minimum, maximum=None):
    """None if `value` is an integer (not a bool) in [minimum, maximum], else what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer {_range_text(minimum, maximum)}, got {value!r}"
    if value < minimum or (maximum is not None and value > maximum):
        return f"expected an integer {_range_text(minimum, maximum)}, got {value}"
    return None


def _at_least(minimum, maximum=None):
    """An argparse type: an integer in [minimum, maximum] (no upper bound when maximum is None)."""

    def count(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer {_range_text(minimum, maximum)}, got {text!r}") from None
        problem = _count_problem(value, minimum, maximum)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    count.__name__ = f"integer {_range_text(minimum, maximum)}"
    return count


def _rate_problem(value):
    """None if `value` is a finite number above 0 (a learning rate), else what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a finite number above 0, got {value!r}"
    if not (math.isfinite(value) and value > 0):
        return f"expected a finite number above 0, got {value}"
    return None


def _positive_float(text):
    """An argparse type: a finite number above 0 (nan, inf, 0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}") from None
    problem = _rate_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _at_least_zero_float(text):
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _augmentations(text):
    """An argparse type: a comma-separated list of AUGMENTATIONS ('' or 'none': none)."""
    names = [name.strip() for name in text.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}")
    return sorted(set(names))


def _fraction(text):
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _blocking_file(path):
    """The first of `path` and its ancestors that exists and is not a folder (so `path` cannot be a folder)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _folder_to_write(text):
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


def _file_to_write(text):
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


def _parser():
    parser = argparse.ArgumentParser(prog="minicnn", description="Train and evaluate small CNNs with minicnn.")
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (defaults: cnn on MNIST on the CPU)",
                                description="Train a model, writing checkpoints and metrics to a fresh folder "
                                            "runs/MODEL-DATE-N (runs/latest points at the newest) or to --out.")
    train.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    train.add_argument("--dataset", choices=DATASETS, default="mnist",
                       help="cifar10 and imagefolder read --data (imagefolder: DIR/train and DIR/test or DIR/val, "
                            "one sub-folder per class)")
    train.add_argument("--data", type=Path, default=None, metavar="PATH",
                       help="cifar-10-python.tar.gz (or its cifar-10-batches-py folder), or the picture folder")
    train.add_argument("--depth", type=_at_least(8), default=20, help="--model resnet: depth 6n+2 (default 20)")
    train.add_argument("--image-size", type=_at_least(1), default=None,
                       help="the model's input size: imagefolder pictures are read at this size (default 64); other "
                            "datasets are resized as the tutorial does (Resize(size * 256 / 224), CenterCrop(size))")
    train.add_argument("--pad", type=_at_least(0), default=0,
                       help="pad each side with this many zero pixels first (Fashion-MNIST 28x28 -> 32x32: --pad 2)")
    train.add_argument("--augment", type=_augmentations, default=[], metavar="crop,flip",
                       help="training-time augmentation: crop (RandomCrop(size, padding=size // 8)), "
                            "flip (RandomHorizontalFlip)")
    train.add_argument("--normalize", choices=["none", "imagenet"], default=None,
                       help="per-channel normalisation (default: imagenet for resnet18, none otherwise)")
    train.add_argument("--weights", type=Path, default=None, metavar="PATH",
                       help="--model resnet18: start from a PyTorch state dict (torchvision's resnet18-*.pth); "
                            "fc is replaced by a new Dense(512, classes)")
    train.add_argument("--freeze-backbone", action="store_true",
                       help="train only the final layer fc (fine-tuning a pretrained --weights)")
    train.add_argument("--momentum", type=_fraction, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=_at_least_zero_float, default=0.0, help="SGD weight decay (default 0)")
    train.add_argument("--epochs", type=_at_least(1), default=None, help="default 5 (with --resume: the run's own)")
    train.add_argument("--batch-size", type=_at_least(1), default=64)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                       help="default: adam for cnn, sgd with momentum 0.9 for lenet")
    train.add_argument("--lr", type=_positive_float, default=None, help="default: 1e-3 for adam, 0.01 for sgd")
    train.add_argument("--schedule", choices=SCHEDULES, default="none",
                       help="learning-rate schedule per epoch: step (x0.1 every 2 epochs) or cosine to 0")
    train.add_argument("--patience", type=_at_least(0), default=None,
                       help="stop early when validation accuracy has not improved for this many epochs "
                            "(default, or 0: never stop early)")
    train.add_argument("--validation", type=_at_least(0), default=None,
                       help="training images held out for validation (default: a tenth of the training images "
                            "used, at most 5000; 0: none)")
    train.add_argument("--shift", type=_at_least(0), default=0, help="augment by random shifts of up to this many pixels")
    train.add_argument("--limit", type=_at_least(1), default=None, help="train on only the first N training images")
    train.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    train.add_argument("--seed", type=_at_least(0, SEED_LIMIT - 1), default=0)
    train.add_argument("--out", type=_folder_to_write, default=None,
                       help="folder for checkpoints and metrics (default: a fresh runs/MODEL-DATE-N); "
                            "refused when it already holds a run, unless --overwrite")
    train.add_argument("--overwrite", action="store_true", help="let --out replace the run already there")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue the run saved in DIR (its settings are reused; --epochs may extend it)")
    train.add_argument("--quiet", action="store_true", help="no progress bar (still one line per epoch)")
    train.add_argument("--profile", action="store_true",
                       help="time every operation during the first epoch's batches and print the table")
    train.add_argument("--health", action="store_true",
                       help="record per-layer activation and gradient statistics; write health.png to --out "
                            "(needs matplotlib)")
    train.add_argument("--tensorboard", type=_folder_to_write, default=None, metavar="DIR",
                       help="write TensorBoard logs to DIR (view: tensorboard --logdir DIR); with --health they hold "
                            "its statistics too (needs the tensorboard extra)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training on the processes mpiexec started (needs the dist extra); "
                            "--batch-size is per process")
    train.add_argument("--backend", choices=distributed.BACKENDS, default="auto",
                       help="with --distributed: how the processes talk (default auto: nccl when every process "
                            "has a GPU, else mpi)")
    _malloc_flag(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a test set",
                                   description="Accuracy, per-class precision/recall/F1 and the confusion matrix.")
    evaluate.add_argument("checkpoint", type=Path, help="a .npz checkpoint, or a run folder (uses best.npz)")
    evaluate.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                          help="default: the dataset the checkpoint was trained on")
    evaluate.add_argument("--split", choices=["train", "test"], default="test")
    evaluate.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    evaluate.add_argument("--batch-size", type=_at_least(1), default=256)
    _malloc_flag(evaluate)

    fetch = commands.add_parser("fetch", help="download and verify a dataset into the cache",
                                description="Fetch a dataset into $MINICNN_DATA or ~/.cache/minicnn.")
    fetch.add_argument("dataset", choices=sorted(LOADERS))

    graph = commands.add_parser("graph", help="draw the computation graph of one training step",
                                description="Build the model, a random batch and its loss, and write the graph "
                                            "of operations behind the loss (.svg, .png and .pdf need Graphviz's "
                                            "`dot`; without it the .dot file is written, with the command that "
                                            "draws it).")
    graph.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    graph.add_argument("--out", type=_file_to_write, default=Path("graph.svg"), help="a .svg, .png, .pdf or .dot file")
    graph.add_argument("--batch-size", type=_at_least(1, GRAPH_BATCH_LIMIT), default=8,
                       help=f"the random batch's size, at most {GRAPH_BATCH_LIMIT} (the graph is the same for any)")

    show = commands.add_parser("show", help="write pictures of a trained model: feature maps, filters, saliency",
                               description="For one image of the dataset, write PNGs of every Conv2D layer's "
                                           "feature maps and filters and the image's saliency and Grad-CAM maps "
                                           "(Grad-CAM of --layer, default the last convolution's ReLU); "
                                           "and, when the checkpoint's folder holds metrics.json, the training "
                                           "curves and the confusion matrix. Needs matplotlib.")
    show.add_argument("checkpoint", type=Path, help="a .npz checkpoint, or a run folder (uses best.npz)")
    show.add_argument("--image-index", type=_at_least(0), default=0, help="which image of the split (default 0)")
    show.add_argument("--out", type=_folder_to_write, default=None, help="folder for the PNGs (default: CHECKPOINT's folder/show)")
    show.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                      help="default: the dataset the checkpoint was trained on")
    show.add_argument("--split", choices=["train", "test"], default="test")
    show.add_argument("--layer", default=None, metavar="NAME_OR_INDEX",
                      help="the layer Grad-CAM explains: its position ('3') or name ('3 Conv2D'); default the "
                           "output of the last convolution (after its ReLU), a 3x3 map for cnn. An earlier layer "
                           "gives a finer map, e.g. --layer 4 (11x11, the second convolution's ReLU) for cnn")

    export = commands.add_parser("export", help="write a checkpoint's model as ONNX (needs the onnx extra)",
                                 description="Write the model of CHECKPOINT as an ONNX file (opset 17, dynamic batch "
                                             "axis), checked by onnx.checker, for onnxruntime and other tools.")
    export.add_argument("checkpoint", type=Path, help="a .npz checkpoint, or a run folder (uses best.npz)")
    export.add_argument("out", type=_file_to_write, help="the .onnx file to write")
    export.add_argument("--softmax", action="store_true", help="end with a Softmax: the file gives probabilities")
    predict = commands.add_parser("predict", help="classify picture files with a trained model",
                                  description="Read each picture (any size, colour or mode; needs Pillow), prepare "
                                              "it as the dataset's images were made and print the top classes "
                                              "with their probabilities. A file that cannot be read is named on "
                                              "stderr, the others are still predicted, and the exit code is 1.")
    predict.add_argument("checkpoint", type=Path, help="a .npz checkpoint, a run folder (uses best.npz) or an .onnx file")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="picture files (PNG, JPEG, ...)")
    predict.add_argument("--top", type=_at_least(1), default=3, help="how many classes to show per file (default 3)")
    predict.add_argument("--json", action="store_true",
                         help="print a JSON list: [{file, predictions: [{class, index, probability}]}]")
    predict.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                         help="default: the dataset the checkpoint was trained on (needed for .onnx files)")
    serve = commands.add_parser("serve", help="a local page: draw a digit and watch every layer of the model respond",
                                description="Serve an interactive page for CHECKPOINT (and its JSON API) until Ctrl-C: "
                                            "draw a digit, see the probabilities, every layer's output, saliency "
                                            "and Grad-CAM. Works offline; needs Pillow (the images extra).")
    serve.add_argument("checkpoint", type=Path, help="a .npz checkpoint, a run folder (uses best.npz) or an .onnx file")
    serve.add_argument("--port", type=_at_least(0, 65535), default=8000, help="default 8000 (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this computer only; others get a warning)")
    serve.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                       help="default: the dataset the checkpoint was trained on (class names, test images)")
    return parser


def _malloc_flag(command):
    command.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                         help="leave glibc's malloc settings alone (by default freed memory is kept for reuse, "
                              "which saves page faults each step; see minicnn.backend.keep_freed_memory)")


def _peak_memory_mib():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _validation_count(requested, available, limit):
    """How many of `available` training images to hold out: `requested`, or by default a tenth, at most 5000.

    Raises ValueError, saying what to pass, when the hold-out would leave no training image.
    """
    if requested is None:
        return min(5000, available // 10)
    if requested < 0:
        raise ValueError(f"--validation must be 0 or more, got {requested}")
    if requested >= available:
        source = f"--limit {limit} keeps {available}" if limit else f"the dataset has {available}"
        raise ValueError(f"--validation {requested} leaves no training images ({source}); pass a smaller "
                         f"--validation (such as {available // 10}), or --validation 0 for none")
    return requested


def _split(images, labels, validation, seed):
    """Hold out `validation` training images, chosen by a fixed permutation of the seed."""
    if validation <= 0:
        return (images, labels), None
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(images))
    kept, held_out = np.sort(order[validation:]), np.sort(order[:validation])
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def _schedule(name, optimizer, epochs):
    if name == "step":
        return optim.StepLR(optimizer, step_size=2, gamma=0.1)
    if name == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def _run_settings(args):
    """The settings that define a run, saved in its checkpoints so --resume can reuse them."""
    optimizer = args.optimizer or DEFAULT_OPTIMIZER[args.model]
    return {
        "model": args.model, "dataset": args.dataset, "epochs": 5 if args.epochs is None else args.epochs, "batch_size": args.batch_size,
        "optimizer": optimizer, "lr": args.lr if args.lr is not None else optim.DEFAULT_LR[optimizer],
        "schedule": args.schedule, "patience": args.patience, "validation": args.validation,
        "shift": args.shift, "limit": args.limit, "seed": args.seed,
        **_image_settings(args),
    }


def _image_settings(args):
    """The run settings of the image pipeline (--data, --image-size, --augment, --weights, ...), checked."""
    if args.dataset in PATH_DATASETS and args.data is None:
        raise ValueError(f"--dataset {args.dataset} reads --data PATH; pass the "
                         + ("cifar-10-python.tar.gz archive" if args.dataset == "cifar10" else "picture folder"))
    if args.dataset not in PATH_DATASETS and args.data is not None:
        raise ValueError(f"--data is for --dataset {' or '.join(PATH_DATASETS)}; {args.dataset} is fetched by minicnn")
    if args.weights is not None and args.model != "resnet18":
        raise ValueError(f"--weights loads a PyTorch ResNet-18 state dict; use it with --model resnet18, "
                         f"not {args.model}")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    if args.freeze_backbone and args.model not in ("resnet", "resnet18"):
        raise ValueError(f"--freeze-backbone trains only the layer fc, which --model {args.model} does not have")
    return {
        "data": None if args.data is None else str(args.data.resolve()), "depth": args.depth,
        "image_size": args.image_size, "pad": args.pad, "augment": list(args.augment),
        "normalize": args.normalize or ("imagenet" if args.model == "resnet18" else "none"),
        "weights": None if args.weights is None else str(args.weights.resolve()),
        "freeze_backbone": args.freeze_backbone, "momentum": args.momentum, "weight_decay": args.weight_decay,
    }


def _model_arguments(settings, channels, num_classes):
    """The keyword arguments of models.build for the run's model, on images with `channels` channels."""
    name = settings["model"]
    if name in ("cifar_cnn", "cnn64"):
        return {"num_classes": num_classes}
    if name == "resnet":
        return {"depth": settings.get("depth", 20), "num_classes": num_classes, "in_channels": channels}
    if name == "resnet18":
        return {"num_classes": num_classes, "in_channels": channels}
    return {"num_classes": num_classes, "in_channels": channels}  # cnn, lenet: image_size is set in _build_model


def _model_channels(settings, data_channels):
    """The channels the model takes: the data's, except 3 for the colour-only models and pretrained weights."""
    if settings["model"] in ("cifar_cnn", "cnn64") or settings.get("weights"):
        return 3
    return data_channels


def _build_model(settings, channels, image_size, num_classes, load_weights=True):
    """The run's model; with --weights, torchvision's ImageNet ResNet-18 whose fc is replaced for num_classes."""
    arguments = _model_arguments(settings, channels, num_classes)
    if settings["model"] in ("cnn", "lenet"):
        arguments["image_size"] = image_size
    if settings.get("weights"):  # a resumed run rebuilds the same structure; its weights come from the checkpoint
        model = models.build("resnet18", num_classes=1000, in_channels=3,
                             weights=settings["weights"] if load_weights else None)
        if num_classes != 1000:
            model.fc = nn.Dense(512, num_classes)  # the tutorial's model.fc = nn.Linear(512, num_classes)
    else:
        model = models.build(settings["model"], **arguments)
    if settings.get("freeze_backbone"):
        model.requires_grad_(False)
        model.fc.requires_grad_(True)
    return model


def _load_split(settings, split):
    """(images uint8 (N, C, H, W) or (N, H, W), labels int64 (N,), class names) of one split of the run's dataset."""
    dataset = settings["dataset"]
    if dataset == "cifar10":
        images, labels = data.load_cifar10(settings["data"], split)
        return images, labels, data.CIFAR10_CLASSES
    if dataset == "imagefolder":
        folder = _image_folder_split(Path(settings["data"]), split)
        images, labels, names = data.load_image_folder(folder, settings.get("image_size") or 64)
        return images, labels, names
    images, labels = LOADERS[dataset](split)
    return images, labels, data.class_names(dataset)


def _image_folder_split(root, split):
    candidates = ["train"] if split == "train" else ["test", "val"]
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"--data {root}: no {' or '.join(candidates)} sub-folder; imagefolder expects "
                            f"{root}/train/<class>/... and {root}/test/<class>/... (or val/)")


def _transforms(settings, channels, height, width):
    """(training transform, evaluation transform) for images (N, channels, height, width) of the run's dataset.

    Both: pad, resize to the model's input (the tutorial's Resize(size * 256 / 224), CenterCrop(size)),
    copy one channel to three for a colour model, normalise. Training adds the --augment crops and flips
    after the resize. None where nothing is to be done (the DataLoader still scales uint8 to [0, 1]).
    """
    pad, size = settings.get("pad", 0), settings.get("image_size")
    shape = [data.Pad(pad)] if pad else []
    height, width = height + 2 * pad, width + 2 * pad
    if size is not None and settings["dataset"] != "imagefolder" and (height, width) != (size, size):
        shape += [data.Resize(round(size * 256 / 224)), data.CenterCrop(size)]
        height = width = size
    augment = []
    if "crop" in settings.get("augment", []):
        augment.append(data.RandomCrop((height, width), padding=max(1, min(height, width) // 8)))
    if "flip" in settings.get("augment", []):
        augment.append(data.RandomHorizontalFlip())
    values = []
    if channels == 1 and _model_channels(settings, channels) == 3:
        values.append(data.RepeatChannels(3))
    if settings.get("normalize") == "imagenet":
        values += [data.ToFloat(), data.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]
    train, evaluation = shape + augment + values, shape + values
    return (data.Compose(train) if train else None), (data.Compose(evaluation) if evaluation else None)


def _optimizer(settings, model):
    """The run's optimizer. It holds every parameter, in the checkpoint's order; frozen ones never get a gradient,
    and the optimizer steps only parameters that have one."""
    if settings["optimizer"] == "sgd":
        return optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings.get("momentum", 0.9),
                         weight_decay=settings.get("weight_decay", 0.0))
    return settings["optimizer"]


# What each saved run setting may be, checked when --resume reuses them as the flags are checked when given.
RESUMED_COUNTS = {"epochs": (1, None), "batch_size": (1, None), "shift": (0, None), "seed": (0, SEED_LIMIT - 1),
                  "depth": (8, None), "pad": (0, None)}
RESUMED_OPTIONAL_COUNTS = {"patience": 0, "validation": 0, "limit": 1, "image_size": 1}  # None allowed; else at least
RESUMED_DEFAULTS = {"schedule": "none", "patience": None, "validation": None, "shift": 0, "limit": None, "seed": 0,
                    "data": None, "depth": 20, "image_size": None, "pad": 0, "augment": [], "normalize": "none",
                    "weights": None, "freeze_backbone": False, "momentum": 0.9, "weight_decay": 0.0}


def _settings_of_checkpoint(folder):
    """The run settings saved in folder/last.npz, each checked as its flag would be (CheckpointError if not)."""
    path = Path(folder) / "last.npz"
    if not path.exists():
        raise FileNotFoundError(f"--resume {folder}: no last.npz there (is it the folder of a run?)")
    saved = load_checkpoint(path).state.get("run")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: holds no run settings to resume (state 'run' is {type(saved).__name__})")
    settings = {**RESUMED_DEFAULTS, **saved}
    choices = {"model": sorted(models.MODELS), "dataset": DATASETS, "optimizer": sorted(optim.DEFAULT_LR),
               "schedule": list(SCHEDULES)}
    for key, allowed in choices.items():
        if settings.get(key) not in allowed:
            raise CheckpointError(f"{path}: run setting {key} is {settings.get(key)!r}; expected one of {allowed}")
    problems = {key: _count_problem(settings.get(key), *bounds) for key, bounds in RESUMED_COUNTS.items()}
    problems.update({key: _count_problem(settings[key], minimum) for key, minimum in RESUMED_OPTIONAL_COUNTS.items()
                     if settings[key] is not None})
    problems["lr"] = _rate_problem(settings.get("lr"))
    problems.update(_image_setting_problems(settings))
    for key, problem in problems.items():
        if problem:
            raise CheckpointError(f"{path}: run setting {key}: {problem}")
    return settings


def _image_setting_problems(settings):
    """{setting: problem} for the image-pipeline settings a checkpoint saved (empty when all are as flags give)."""
    augment, momentum, decay = settings.get("augment"), settings.get("momentum"), settings.get("weight_decay")
    return {key: problem for key, problem in {
        "augment": None if isinstance(augment, list) and set(augment) <= set(AUGMENTATIONS)
        else f"expected a list of {list(AUGMENTATIONS)}, got {augment!r}",
        "normalize": None if settings.get("normalize") in ("none", "imagenet")
        else f"expected 'none' or 'imagenet', got {settings.get('normalize')!r}",
        "momentum": None if isinstance(momentum, (int, float)) and 0 <= momentum < 1
        else f"expected a number in [0, 1), got {momentum!r}",
        "weight_decay": None if isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0
        else f"expected a finite number >= 0, got {decay!r}",
        "data": None if settings.get("data") is None or isinstance(settings["data"], str)
        else f"expected a path, got {settings['data']!r}",
        "weights": None if settings.get("weights") is None or isinstance(settings["weights"], str)
        else f"expected a path, got {settings['weights']!r}",
        "freeze_backbone": None if isinstance(settings.get("freeze_backbone"), bool)
        else f"expected true or false, got {settings.get('freeze_backbone')!r}",
    }.items() if problem}


def _follow_latest(path):
    """`path` with runs/latest replaced by the run folder it names, so that messages name the real folder.

    runs/latest is a symlink, or a text file holding the folder's name where symlinks are not allowed.
    """
    path = Path(path)
    for depth in range(1, len(path.parts) + 1):
        prefix = Path(*path.parts[:depth])
        if prefix.name != "latest":
            continue
        if prefix.is_symlink():
            return (prefix.parent / os.readlink(prefix)).joinpath(*path.parts[depth:])
        if prefix.is_file():
            return (prefix.parent / prefix.read_text().strip()).joinpath(*path.parts[depth:])
    return path


def _check_out_folder(out, overwrite):
    """Refuse an --out folder that holds a run, unless --overwrite."""
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not overwrite:
        raise ValueError(f"--out {out} already holds a run ({', '.join(held)}); choose another --out, leave --out "
                         f"out for a fresh folder under {RUNS}/, add --overwrite to replace it, or continue it "
                         f"with --resume {out}")


def _made_and_writable(folder, flag):
    """Make `folder` (and its parents) and write and remove a probe file in it, so a folder that cannot hold
    the run is refused before any work, naming `flag`. Returns whether the folder was made here."""
    made = not folder.is_dir()
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"minicnn")
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {folder}: cannot make or write this folder "
                         f"({error.strerror or error}{f': {error.filename}' if error.filename else ''})") from None
    return made


class _RunLock:
    """An exclusive lock on a run folder while a `train` writes there: folder/.lock holds the holder's pid.

    The lock itself is an flock on that file, which the system drops when its process dies, however it dies;
    so a .lock whose flock is free was left by a process that is gone, and is taken over (with a note).
    """

    def __init__(self, folder, flag):
        self.folder, self.flag, self.path, self.file = folder, flag, folder / LOCK_FILE, None

    def __enter__(self):
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process
                holder = self._holder(file)
                file.close()
                raise ValueError(f"{self.flag} {self.folder} is in use by another minicnn train "
                                 f"(process {holder or 'unknown'}, which holds {self.path}); wait for it to end, "
                                 f"or choose another folder") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            file.close()  # the holder removed the file between our open and our flock: lock the new one
        previous = self._holder(file)
        if previous is not None:
            print(f"note: {self.path} was left by process {previous}, which has ended; taking the lock over",
                  file=sys.stderr)
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exception):
        self.path.unlink(missing_ok=True)  # while still holding the flock, so no one locks the old file
        self.file.close()

    @staticmethod
    def _holder(file):
        file.seek(0)
        text = file.read(64).strip()
        return text or None


def _remove_temporaries(folder):
    """Remove the temporary files an interrupted write left in a run folder (run with its lock held)."""
    left = sorted(path for path in folder.iterdir() if TEMPORARY.fullmatch(path.name))
    for path in left:
        path.unlink(missing_ok=True)
    if left:
        print(f"note: removed {len(left)} temporary file{'s' if len(left) > 1 else ''} an interrupted run left in "
              f"{folder}: {', '.join(path.name for path in left)}", file=sys.stderr)


@contextlib.contextmanager
def _run_folder(folder, flag):
    """`folder` made, checked writable, locked and cleared of temporaries while the block runs.

    A folder made here that is still empty at the end (the run failed before writing) is removed again.
    """
    made = _made_and_writable(folder, flag)
    try:
        with _RunLock(folder, flag):
            _remove_temporaries(folder)
            yield folder
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _fresh_run_folder(model, root=RUNS):
    """Make and return root/<model>-<YYYYmmdd>-<n>, n the first number not yet taken; point root/latest at it.

    root/latest is a relative symlink; where symlinks cannot be made it is a text file
    holding the folder's name, which the commands follow too. A `latest` that is a real
    folder (an earlier version's default) is left alone.
    """
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{model}-{datetime.date.today():%Y%m%d}"
    number = 1
    while True:
        folder = root / f"{stem}-{number}"
        try:
            folder.mkdir()  # fails if it exists, so two runs started at once never share a folder
            break
        except FileExistsError:
            number += 1
    latest = root / "latest"
    if latest.is_dir() and not latest.is_symlink():
        print(f"note: {latest} is a folder of an earlier run, left as it is; it does not point at {folder}",
              file=sys.stderr)
        return folder
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    try:
        latest.symlink_to(folder.name, target_is_directory=True)
    except OSError:
        latest.write_text(folder.name + "\n")
    return folder


def _resume_line(folder, state, steps_per_epoch, epochs):
    epoch, step = int(state["epoch"]), int(state.get("step", 0))
    if epoch >= epochs:
        return f"{folder} has finished its {epoch} epochs; pass --epochs above {epoch} to train it further"
    where = (f"epoch {epoch + 1}, step {step + 1} of {steps_per_epoch} ({step} steps of that epoch were done)"
             if step else f"the start of epoch {epoch + 1}")
    return f"resuming {folder} at {where}, to {epochs} epochs"


def _mean_epoch_seconds(history, steps_per_epoch):
    """(mean seconds over the whole epochs timed, how many partial epochs were left out).

    An epoch resumed mid-way was timed over its remaining steps only, so it is left out.
    """
    seconds = list(history.get("seconds", []))
    steps = list(history.get("steps", []))
    steps = [steps_per_epoch] * (len(seconds) - len(steps)) + steps  # older checkpoints did not record steps
    whole = [second for second, count in zip(seconds, steps) if count == steps_per_epoch]
    return (float(np.mean(whole)) if whole else None), len(seconds) - len(whole)


class _ProfileFirstEpoch:
    """A Trainer callback that profiles the batches of the first epoch it sees, then prints the table.

    The profile starts when this object is made (just before fit) and ends after
    that epoch's last optimizer step, so the validation pass is not part of it.
    """

    def __init__(self, batches_per_epoch):
        self.batches_per_epoch = batches_per_epoch
        self.recording = contextlib.ExitStack()
        self.profile = self.recording.enter_context(profile())

    def on_batch_end(self, trainer, epoch, step):
        if step == self.batches_per_epoch - 1:
            self.recording.close()

    def on_epoch_end(self, trainer, epoch, logs):
        self.recording.close()  # already closed after the last batch; a no-op then
        if self.profile is not None:
            print(f"operations during the training batches of epoch {epoch + 1}:")
            print(self.profile.table(), flush=True)
            self.profile = None


def train(args):
    """Check everything the arguments name (the GPU, the output folder, a resumed run) before loading data,
    then train with the run folder locked."""
    if args.health:
        require_matplotlib()  # fail before training, not after it
    backend.array_module_for(args.device)  # a clear error now if the GPU is missing
    writes = _writes(args)
    with contextlib.ExitStack() as folder:
        if args.resume is not None:
            args.resume = _follow_latest(args.resume)
            if args.out is not None and args.out.resolve() != args.resume.resolve():
                raise ValueError(f"--resume continues the run in its own folder ({args.resume}); leave out --out")
            if not args.resume.is_dir():
                raise FileNotFoundError(f"--resume {args.resume}: no such folder (is it the folder of a run?)")
            if writes:
                folder.enter_context(_run_folder(args.resume, "--resume"))
            saved = _settings_of_checkpoint(args.resume)
            settings = {**saved, "epochs": saved["epochs"] if args.epochs is None else args.epochs}
        else:
            settings = _run_settings(args)
            if args.out is not None and writes:
                folder.enter_context(_run_folder(args.out, "--out"))
                _check_out_folder(args.out, args.overwrite)
            elif writes:
                _made_and_writable(RUNS, "the runs folder")  # a fresh folder is made there after the data loads
        return _train(args, settings, folder)


def _writes(args):
    """Whether this process writes the run's files and prints: always, except ranks 1, 2, ... of --distributed."""
    return getattr(args, "comm", None) is None or args.comm.rank == 0


def _tensorboard(folder, model, image, monitor):
    """The --tensorboard callback (None without the flag), showing `image`'s feature maps; it drives the
    --health monitor, when there is one, so that each epoch's statistics are averaged before they are written."""
    if folder is None:
        return None
    board = TensorBoard(folder, model=model, image=image, health=monitor or False)
    print(f"TensorBoard logs in {folder} (view them with: tensorboard --logdir {folder})", flush=True)
    return board


def _train(args, settings, folder):
    backend.set_default_device(args.device)
    backend.manual_seed(settings["seed"])

    train_images, train_labels, class_names = _load_split(settings, "train")
    test_images, test_labels, _ = _load_split(settings, "test")
    if settings["dataset"] == "imagefolder":
        settings["class_names"] = list(class_names)  # kept in the checkpoints: label i is class_names[i]
    if settings["limit"]:
        train_images, train_labels = train_images[: settings["limit"]], train_labels[: settings["limit"]]
    settings["validation"] = _validation_count(settings["validation"], len(train_images), settings["limit"])
    (train_images, train_labels), validation = _split(train_images, train_labels, settings["validation"],
                                                      settings["seed"])

    channels = 1 if train_images.ndim == 3 else train_images.shape[1]
    height, width = train_images.shape[-2:]
    train_transform, eval_transform = _transforms(settings, channels, height, width)
    # The first test image as the model sees it: its side sizes the model, and TensorBoard draws the graph on it.
    shown = test_images[:1] if eval_transform is None else eval_transform(test_images[:1].reshape(
        1, channels, height, width))
    input_size = shown.shape[-1]
    model = _build_model(settings, _model_channels(settings, channels), input_size, len(class_names),
                         load_weights=args.resume is None)  # a resumed run's weights come from its checkpoint
    comm = getattr(args, "comm", None)
    shard = (comm.rank, comm.size) if comm is not None and comm.size > 1 else None  # each process its part
    trainer = Trainer(model, _optimizer(settings, model), lr=settings["lr"], comm=comm)
    trainer.schedule = _schedule(settings["schedule"], trainer.optimizer, settings["epochs"])
    trainer.run_info = settings
    callbacks = [EarlyStopping("val_accuracy", patience=settings["patience"])] if settings["patience"] else []
    loader = data.DataLoader(train_images, train_labels, batch_size=settings["batch_size"], shuffle=True,
                             seed=settings["seed"], shift=settings["shift"], device=args.device,
                             transform=train_transform, shard=shard)
    eval_batch = max(settings["batch_size"], 256 if input_size <= 64 else 16)
    if validation is not None:
        validation = data.DataLoader(*validation, batch_size=eval_batch, device=args.device, transform=eval_transform,
                                     shard=shard)
    test_loader = data.DataLoader(test_images, test_labels, batch_size=eval_batch, device=args.device,
                                  transform=eval_transform, shard=shard)
    if args.resume is not None:
        out = args.resume
        loaded = trainer.resume(out)
        print(_resume_line(out, loaded.state, len(loader), settings["epochs"]), flush=True)
    elif args.out is not None:
        out = args.out
    elif _writes(args):
        out = folder.enter_context(_run_folder(_fresh_run_folder(settings["model"]), "the run folder"))
    else:
        out = None  # ranks 1, 2, ... of a distributed run write nothing
    print(f"training {settings['model']} on {settings['dataset']} ({loader.num_samples} images, "
          f"{settings['validation']} held out) on the {args.device.upper()} with "
          f"{settings['optimizer']} lr {settings['lr']:g}, batch {settings['batch_size']}"
          + (f" per process x {comm.size} processes ({comm.name})" if comm is not None and comm.size > 1 else "")
          + f"; checkpoints in {out}", flush=True)
    monitor = HealthMonitor(model) if args.health else None
    profiler = _ProfileFirstEpoch(len(loader)) if args.profile else None
    board = _tensorboard(args.tensorboard, model, shown[0], monitor)
    callbacks += [callback for callback in (board or monitor, profiler) if callback is not None]
    try:
        history = trainer.fit(loader, epochs=settings["epochs"], validation_data=validation, callbacks=callbacks,
                              checkpoint_dir=out, verbose=2 if args.quiet else "auto")
    finally:
        if profiler is not None:
            profiler.recording.close()  # ends the profile if the first epoch was interrupted
        if board is not None:
            board.close()

    result = trainer.evaluate(test_loader)
    mean_seconds, partial = _mean_epoch_seconds(history, len(loader))
    summary = {
        "run": settings, "device": args.device, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "seconds_per_epoch": history.get("seconds", []), "mean_epoch_seconds": mean_seconds,
        "peak_memory_mib": round(_peak_memory_mib(), 1), "gpu_pool_mib_per_epoch": history.get("gpu_pool_mib"),
        "confusion_matrix": result["confusion_matrix"].tolist(), "history": dict(history),
    }
    if not _writes(args):
        return 0
    write_bytes_atomically(out / "metrics.json", json.dumps(summary, indent=1).encode())
    mean_text = "-" if mean_seconds is None else f"{mean_seconds:.1f} s"
    left_out = f" (leaving out {partial} epoch{'s' if partial > 1 else ''} resumed mid-way)" if partial else ""
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  mean epoch {mean_text}{left_out}"
          f"  peak memory {summary['peak_memory_mib']:.0f} MiB")
    print(f"wrote {out / 'metrics.json'}")
    if monitor is not None:
        monitor.remove()
        print(f"wrote {save_health(monitor.history, out / 'health.png')}")
    return 0


def _checkpoint_path(path):
    """A run folder means its best.npz; runs/latest is followed even where it is a text file."""
    path = _follow_latest(path)
    return path / "best.npz" if path.is_dir() else path


def _dataset_of(path, loaded, given):
    """The dataset to evaluate on: --dataset, or the one the checkpoint's run settings name."""
    if given is not None:
        return given
    dataset = loaded.dataset
    if dataset is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    if dataset not in DATASETS:
        raise CheckpointError(f"{path}: names the dataset {dataset!r}, which minicnn does not know "
                              f"({', '.join(DATASETS)}); pass --dataset")
    return dataset


def evaluate(args):
    path = _checkpoint_path(args.checkpoint)
    backend.set_default_device(args.device)
    loaded = load_checkpoint(path)
    model = loaded.model.to(args.device)
    dataset = _dataset_of(path, loaded, args.dataset)
    run = loaded.state.get("run") if isinstance(loaded.state.get("run"), dict) else {}
    if dataset in PATH_DATASETS and (run.get("dataset") != dataset or not run.get("data")):
        raise ValueError(f"{path}: evaluating on {dataset} needs the --data path its run was trained with, "
                         "which the checkpoint does not hold")
    settings = {**RESUMED_DEFAULTS, "model": "", **run, "dataset": dataset}
    images, labels, names = _load_split(settings, args.split)
    names = run.get("class_names") or names  # an imagefolder run's classes, in the order of the outputs
    channels = 1 if images.ndim == 3 else images.shape[1]
    _, eval_transform = _transforms(settings, channels, *images.shape[-2:])
    loader = data.DataLoader(images, labels, batch_size=args.batch_size, transform=eval_transform)
    result = Trainer(model).evaluate(loader)
    print(f"{path}: {dataset} {args.split}, {len(labels)} images, loss {result['loss']:.4f}")
    print(metrics.classification_report(result["confusion_matrix"], names))  # ends with the accuracy
    print("confusion matrix (row: true class, column: predicted):")
    print(result["confusion_matrix"])
    return 0


def fetch(args):
    folder = data.fetch(args.dataset)
    print(f"{args.dataset}: verified files in {folder}")
    return 0


def graph(args):
    backend.manual_seed(0)
    model = models.build(args.model)
    rng = np.random.default_rng(0)
    images = Tensor(rng.random((args.batch_size, *model.input_shape), dtype=np.float32))
    labels = Tensor(rng.integers(0, 10, size=args.batch_size))
    loss = F.cross_entropy(model(images), labels)
    title = f"minicnn {args.model}: one training step's graph, batch of {args.batch_size}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() != ".dot" and shutil.which("dot") is None:
        # Drawing needs Graphviz; the DOT text is the graph all the same, and renders anywhere later.
        dot_path = export_graph(loss, args.out.with_suffix(".dot"), model=model, title=title)
        print(f"wrote {dot_path}")
        print(f"Graphviz's `dot` is not installed, so {args.out} was not drawn; install Graphviz "
              f"(apt-get install graphviz, brew install graphviz) and run:\n"
              f"  dot -T{args.out.suffix[1:].lower()} {dot_path} -o {args.out}")
        return 0
    try:
        written = export_graph(loss, args.out, model=model, title=title)
    except RuntimeError as error:  # Graphviz's `dot` failed
        print(f"minicnn graph: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


def show(args):
    require_matplotlib()
    path = _checkpoint_path(args.checkpoint)
    loaded = read_onnx(path) if path.suffix.lower() == ".onnx" else load_checkpoint(path)
    model = loaded.model
    dataset = _dataset_of(path, loaded, args.dataset)
    if dataset not in LOADERS:
        raise ValueError(f"{path}: `minicnn show` reads {' and '.join(LOADERS)}, not {dataset}")
    images, labels = LOADERS[dataset](args.split)
    if not 0 <= args.image_index < len(images):
        raise ValueError(f"--image-index must lie in [0, {len(images)}) for {dataset} {args.split}, "
                         f"got {args.image_index}")
    image, label = images[args.image_index], int(labels[args.image_index])
    layer = None
    if args.layer is not None:
        layers = [name for name, _ in named_layers(model)]
        layer = next((name for name in layers if args.layer in (name, name.split()[0])), None)
        if layer is None:
            raise ValueError(f"--layer {args.layer!r} is not a layer of the model; give a position or a name "
                             f"from {layers}")
    names = data.class_names(dataset)
    out = args.out or path.parent / "show"
    print(f"{path}: {dataset} {args.split} image {args.image_index} (class {names[label]})")
    written = save_feature_maps(model, image, out)
    written += save_filters(model, out)
    written.append(save_saliency(model, image, out / "saliency.png", label=label, class_names=names, layer=layer))
    metrics_path = path.parent / "metrics.json"
    if metrics_path.exists():
        summary = json.loads(metrics_path.read_text())
        if summary.get("history"):
            written.append(save_training_curves(summary["history"], out / "training_curves.png"))
        if summary.get("confusion_matrix"):
            written.append(save_confusion_matrix(summary["confusion_matrix"], out / "confusion_matrix.png", names))
    for written_path in written:
        print(f"wrote {written_path}")
    return 0


def export_onnx(args):
    path = _checkpoint_path(args.checkpoint)
    loaded = load_checkpoint(path)
    dataset = loaded.dataset
    written = export_to_onnx(loaded.model, args.out, softmax=args.softmax,
                             metadata={"minicnn.dataset": dataset} if isinstance(dataset, str) else None)
    print(f"wrote {written}")
    return 0


def predict_files(args):
    from .predict import class_names, classify, load_model, prepare

    model, dataset = load_model(_checkpoint_path(args.checkpoint), args.dataset)
    prepared, sources, failed = [], [], 0
    for path in args.images:
        try:
            prepared.append(prepare(path, dataset))
            sources.append(str(path))
        except DataError as error:  # this file only: the others are still predicted
            print(f"minicnn predict: {error}", file=sys.stderr)
            failed += 1
    results = classify(model, np.stack(prepared) if prepared else [], class_names(dataset), args.top, sources)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in [] if args.json else results:
        shown = ", ".join(f"{guess['class']} {guess['probability']:.1%}" for guess in result["predictions"])
        print(f"{result['file']}: {shown}")
    return 1 if failed else 0


def serve_page(args):
    from .serve import serve

    return serve(_checkpoint_path(args.checkpoint), host=args.host, port=args.port, dataset=args.dataset)


def main(argv=None):
    args = _parser().parse_args(argv)
    command = {"train": train, "evaluate": evaluate, "fetch": fetch, "graph": graph, "show": show,
               "export": export_onnx, "predict": predict_files, "serve": serve_page}[args.command]
    if getattr(args, "keep_freed_memory", False):
        backend.keep_freed_memory()  # process-wide, so made here at the entry point and not on import
    args.comm = None
    try:
        if getattr(args, "distributed", False):
            args.comm = _start_distributed(args)
        return command(args)
    except KeyboardInterrupt as stop:
        if args.comm is not None and args.comm.size > 1 and not stop.args:
            # Not the stop every rank agreed on (Trainer's carries the signal's name): the others may be waiting.
            args.comm.abort("interrupted", code=130)
        print("stopped.", file=sys.stderr)
        return 130
    except (BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
            OSError, ImportError, ValueError) as error:  # ImportError: matplotlib is missing
        # A user's mistake (a bad file, flag or folder) is one line naming it, never a traceback.
        if args.comm is not None and args.comm.size > 1:
            args.comm.abort(f"minicnn {args.command}: {error}")  # the other processes would wait for this one
        print(f"minicnn {args.command}: {error}", file=sys.stderr)
        return 1
    except Exception:
        if args.comm is None or args.comm.size == 1:
            raise
        traceback.print_exc()
        args.comm.abort(f"minicnn {args.command} failed (traceback above)")


def _start_distributed(args):
    """The communicator of a --distributed run; ranks 1, 2, ... print nothing to stdout (rank 0 speaks for all)."""
    comm = distributed.init(args.backend)
    if comm.rank == 0:
        print(f"{comm.size} process{'es' if comm.size > 1 else ''} ({comm.name}):\n{comm.describe()}", flush=True)
    else:
        comm.describe()  # a collective: every rank takes part
        sys.stdout = open(os.devnull, "w")  # process-wide, made here at the entry point
        args.health, args.profile, args.tensorboard = False, False, None  # rank 0 draws and logs
    return comm


if __name__ == "__main__":
    sys.exit(main())
