"""The `minicnn` command: train, evaluate, fetch, and look inside a model (graph, show).

    minicnn train --model cnn --dataset mnist --epochs 5 --out runs/cnn
    minicnn train --resume runs/cnn            # continue an interrupted run
    minicnn train --profile --health           # time each operation in epoch 1; write health.png
    minicnn evaluate runs/cnn/best.npz
    minicnn fetch mnist
    minicnn graph --model cnn --out graph.svg  # the computation graph of one training step
    minicnn show runs/cnn/best.npz --image-index 7 --out runs/cnn/show
"""

import argparse
import contextlib
import json
import resource
import sys
from pathlib import Path

import numpy as np

from . import backend, data, metrics, models, optim
from . import functional as F
from .checkpoint import load_checkpoint
from .errors import (
    BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
)
from .profiler import profile
from .tensor import Tensor
from .training import EarlyStopping, Trainer
from .viz.graph import export_graph
from .viz.health import HealthMonitor
from .viz.plots import (
    require_matplotlib, save_confusion_matrix, save_feature_maps, save_filters, save_health, save_saliency,
    save_training_curves,
)

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
    train.add_argument("--profile", action="store_true",
                       help="time every operation during the first epoch's batches and print the table")
    train.add_argument("--health", action="store_true",
                       help="record per-layer activation and gradient statistics; write health.png to --out "
                            "(needs matplotlib)")

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

    graph = commands.add_parser("graph", help="draw the computation graph of one training step",
                                description="Build the model, a random batch and its loss, and write the graph "
                                            "of operations behind the loss (.svg, .png and .pdf need Graphviz's "
                                            "`dot`; .dot needs nothing).")
    graph.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    graph.add_argument("--out", type=Path, default=Path("graph.svg"), help="a .svg, .png, .pdf or .dot file")
    graph.add_argument("--batch-size", type=int, default=8)

    show = commands.add_parser("show", help="write pictures of a trained model: feature maps, filters, saliency",
                               description="For one image of the dataset, write PNGs of every Conv2D layer's "
                                           "feature maps and filters and the image's saliency and Grad-CAM maps; "
                                           "and, when the checkpoint's folder holds metrics.json, the training "
                                           "curves and the confusion matrix. Needs matplotlib.")
    show.add_argument("checkpoint", type=Path, help="a .npz checkpoint, or a run folder (uses best.npz)")
    show.add_argument("--image-index", type=int, default=0, help="which image of the split (default 0)")
    show.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: CHECKPOINT's folder/show)")
    show.add_argument("--dataset", choices=sorted(LOADERS), default=None,
                      help="default: the dataset the checkpoint was trained on")
    show.add_argument("--split", choices=["train", "test"], default="test")
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
    if args.health:
        require_matplotlib()  # fail before training, not after it
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
    monitor = HealthMonitor(model) if args.health else None
    profiler = _ProfileFirstEpoch(len(loader)) if args.profile else None
    callbacks += [callback for callback in (monitor, profiler) if callback is not None]
    try:
        history = trainer.fit(loader, epochs=settings["epochs"], validation_data=validation, callbacks=callbacks,
                              checkpoint_dir=args.out, verbose=2 if args.quiet else "auto")
    finally:
        if profiler is not None:
            profiler.recording.close()  # ends the profile if the first epoch was interrupted

    result = trainer.evaluate(test_images, test_labels, batch_size=256)
    seconds = history.get("seconds", [])
    summary = {
        "run": settings, "device": args.device, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
        "seconds_per_epoch": seconds, "peak_memory_mib": round(_peak_memory_mib(), 1),
        "gpu_pool_mib_per_epoch": history.get("gpu_pool_mib"),
        "confusion_matrix": result["confusion_matrix"].tolist(), "history": dict(history),
    }
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"mean epoch {np.mean(seconds) if seconds else 0:.1f} s  peak memory {summary['peak_memory_mib']:.0f} MiB")
    print(f"wrote {args.out / 'metrics.json'}")
    if monitor is not None:
        monitor.remove()
        print(f"wrote {save_health(monitor.history, args.out / 'health.png')}")
    return 0


def _checkpoint_path(path):
    """A run folder means its best.npz."""
    return path / "best.npz" if path.is_dir() else path


def evaluate(args):
    path = _checkpoint_path(args.checkpoint)
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


def graph(args):
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    backend.manual_seed(0)
    model = models.build(args.model)
    rng = np.random.default_rng(0)
    images = Tensor(rng.random((args.batch_size, *model.input_shape), dtype=np.float32))
    labels = Tensor(rng.integers(0, 10, size=args.batch_size))
    loss = F.cross_entropy(model(images), labels)
    title = f"minicnn {args.model}: one training step's graph, batch of {args.batch_size}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = export_graph(loss, args.out, model=model, title=title)
    except RuntimeError as error:  # Graphviz's `dot` is missing or failed; render kept the .dot text
        print(f"minicnn graph: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


def show(args):
    require_matplotlib()
    path = _checkpoint_path(args.checkpoint)
    loaded = load_checkpoint(path)
    model = loaded.model
    dataset = args.dataset or (loaded.state.get("run") or {}).get("dataset")
    if dataset is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass --dataset")
    images, labels = LOADERS[dataset](args.split)
    if not 0 <= args.image_index < len(images):
        raise ValueError(f"--image-index must lie in [0, {len(images)}) for {dataset} {args.split}, "
                         f"got {args.image_index}")
    image, label = images[args.image_index], int(labels[args.image_index])
    names = data.FASHION_MNIST_CLASSES if dataset == "fashion-mnist" else data.MNIST_CLASSES
    out = args.out or path.parent / "show"
    print(f"{path}: {dataset} {args.split} image {args.image_index} (class {names[label]})")
    written = save_feature_maps(model, image, out)
    written += save_filters(model, out)
    written.append(save_saliency(model, image, out / "saliency.png", label=label, class_names=names))
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


def main(argv=None):
    args = _parser().parse_args(argv)
    command = {"train": train, "evaluate": evaluate, "fetch": fetch, "graph": graph, "show": show}[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    except (BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError,
            FileNotFoundError, ImportError, ValueError) as error:  # ImportError: matplotlib is missing
        print(f"minicnn {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
