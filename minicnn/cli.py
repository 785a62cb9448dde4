"""The `minicnn` command: train, evaluate and fetch.

    minicnn train --model cnn --dataset mnist --epochs 5 --out runs/cnn
    minicnn train --resume runs/cnn            # continue an interrupted run
    minicnn evaluate runs/cnn/best.npz
    minicnn fetch mnist
"""

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

from . import backend, data, metrics, models, optim
from .checkpoint import load_checkpoint
from .errors import (
    BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
)
from .training import EarlyStopping, Trainer

LOADERS = {"mnist": data.load_mnist, "fashion-mnist": data.load_fashion_mnist}
DEFAULT_OPTIMIZER = {"cnn": "adam", "lenet": "sgd"}  # as in the two seed examples
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}
SCHEDULES = ("none", "step", "cosine")


def _parser():
    parser = argparse.ArgumentParser(prog="minicnn", description="Train and evaluate small CNNs with minicnn.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (defaults: cnn on MNIST on the CPU)",
                                description="Train a model, writing checkpoints and metrics to --out.")
    train.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    train.add_argument("--dataset", choices=sorted(LOADERS), default="mnist")
    train.add_argument("--epochs", type=int, default=None, help="default 5 (with --resume: the run's own)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                       help="default: adam for cnn, sgd with momentum 0.9 for lenet")
    train.add_argument("--lr", type=float, default=None, help="default: 1e-3 for adam, 0.01 for sgd")
    train.add_argument("--schedule", choices=SCHEDULES, default="none",
                       help="learning-rate schedule per epoch: step (x0.1 every 2 epochs) or cosine to 0")
    train.add_argument("--patience", type=int, default=None,
                       help="stop early when validation accuracy has not improved for this many epochs")
    train.add_argument("--validation", type=int, default=5000,
                       help="training images held out for validation (default 5000; 0: none)")
    train.add_argument("--shift", type=int, default=0, help="augment by random shifts of up to this many pixels")
    train.add_argument("--limit", type=int, default=None, help="train on only the first N training images")
    train.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=Path("runs/latest"), help="folder for checkpoints and metrics")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue the run saved in DIR (its settings are reused; --epochs may extend it)")
    train.add_argument("--quiet", action="store_true", help="no progress bar (still one line per epoch)")

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a test set",
                                   description="Accuracy, per-class precision/recall/F1 and the confusion matrix.")
    evaluate.add_argument("checkpoint", type=Path, help="a .npz checkpoint, or a run folder (uses best.npz)")
    evaluate.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                          help="default: the dataset the checkpoint was trained on")
    evaluate.add_argument("--split", choices=["train", "test"], default="test")
    evaluate.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    evaluate.add_argument("--batch-size", type=int, default=256)

    fetch = commands.add_parser("fetch", help="download and verify a dataset into the cache",
                                description="Fetch a dataset into $MINICNN_DATA or ~/.cache/minicnn.")
    fetch.add_argument("dataset", choices=sorted(LOADERS))
    return parser


def _peak_memory_mib():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _split(images, labels, validation, seed):
    """Hold out `validation` training images, chosen by a fixed permutation of the seed."""
    if validation <= 0:
        return (images, labels), None
    if validation >= len(images):
        raise ValueError(f"--validation {validation} leaves no training images (the dataset has {len(images)})")
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
        "model": args.model, "dataset": args.dataset, "epochs": args.epochs or 5, "batch_size": args.batch_size,
        "optimizer": optimizer, "lr": args.lr if args.lr is not None else DEFAULT_LR[optimizer],
        "schedule": args.schedule, "patience": args.patience, "validation": args.validation,
        "shift": args.shift, "limit": args.limit, "seed": args.seed,
    }


def _settings_of_checkpoint(folder):
    path = Path(folder) / "last.npz"
    if not path.exists():
        raise FileNotFoundError(f"--resume {folder}: no last.npz there (is it the --out folder of a run?)")
    return load_checkpoint(path).state.get("run") or {}


def train(args):
    settings = _run_settings(args)
    if args.resume is not None:
        saved = _settings_of_checkpoint(args.resume)
        settings = {**saved, "epochs": args.epochs or saved["epochs"]}
        args.out = args.resume
    backend.array_module_for(args.device)  # a clear error now if the GPU is missing
    backend.set_default_device(args.device)
    backend.manual_seed(settings["seed"])

    train_images, train_labels = LOADERS[settings["dataset"]]("train")
    test_images, test_labels = LOADERS[settings["dataset"]]("test")
    if settings["limit"]:
        train_images, train_labels = train_images[: settings["limit"]], train_labels[: settings["limit"]]
    (train_images, train_labels), validation = _split(train_images, train_labels, settings["validation"],
                                                      settings["seed"])

    model = models.build(settings["model"])
    trainer = Trainer(model, settings["optimizer"], lr=settings["lr"])
    trainer.schedule = _schedule(settings["schedule"], trainer.optimizer, settings["epochs"])
    trainer.run_info = settings
    if args.resume is not None:
        trainer.resume(args.resume)
    callbacks = [EarlyStopping("val_accuracy", patience=settings["patience"])] if settings["patience"] else []
    loader = data.DataLoader(train_images, train_labels, batch_size=settings["batch_size"], shuffle=True,
                             seed=settings["seed"], shift=settings["shift"], device=args.device)
    print(f"training {settings['model']} on {settings['dataset']} ({loader.num_samples} images, "
          f"{len(validation[0]) if validation else 0} held out) on the {args.device.upper()} with "
          f"{settings['optimizer']} lr {settings['lr']:g}, batch {settings['batch_size']}; checkpoints in {args.out}",
          flush=True)
    history = trainer.fit(loader, epochs=settings["epochs"], validation_data=validation, callbacks=callbacks,
                          checkpoint_dir=args.out, verbose=2 if args.quiet else "auto")

    result = trainer.evaluate(test_images, test_labels, batch_size=256)
    seconds = history.get("seconds", [])
    summary = {
        "run": settings, "device": args.device, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "seconds_per_epoch": seconds, "peak_memory_mib": round(_peak_memory_mib(), 1),
        "confusion_matrix": result["confusion_matrix"].tolist(), "history": dict(history),
    }
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"mean epoch {np.mean(seconds) if seconds else 0:.1f} s  peak memory {summary['peak_memory_mib']:.0f} MiB")
    print(f"wrote {args.out / 'metrics.json'}")
    return 0


def evaluate(args):
    path = args.checkpoint / "best.npz" if args.checkpoint.is_dir() else args.checkpoint
    backend.set_default_device(args.device)
    loaded = load_checkpoint(path)
    model = loaded.model.to(args.device)
    dataset = args.dataset or (loaded.state.get("run") or {}).get("dataset")
    if dataset is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    images, labels = LOADERS[dataset](args.split)
    result = Trainer(model).evaluate(images, labels, batch_size=args.batch_size)
    names = data.FASHION_MNIST_CLASSES if dataset == "fashion-mnist" else data.MNIST_CLASSES
    print(f"{path}: {dataset} {args.split}, {len(labels)} images")
    print(f"loss {result['loss']:.4f}  accuracy {result['accuracy']:.4f}")
    print(metrics.classification_report(result["confusion_matrix"], names))
    print("confusion matrix (row: true class, column: predicted):")
    print(result["confusion_matrix"])
    return 0


def fetch(args):
    folder = data.fetch(args.dataset)
    print(f"{args.dataset}: verified files in {folder}")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    command = {"train": train, "evaluate": evaluate, "fetch": fetch}[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    except (BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
            FileNotFoundError, ValueError) as error:
        print(f"minicnn {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
