"""`minicnn train`: check the flags, lock the run folder, build the run (minicnn/recipe.py), fit, report.

    minicnn train --model cnn --epochs 5       # a fresh folder runs/cnn-YYYYmmdd-N; runs/latest points at it
    minicnn train --out runs/cnn               # a folder of your choice (refused if it holds a run); runs/latest -> it
    minicnn train --resume runs/latest         # continue an interrupted run with its saved settings

At the end it evaluates on the test set both the final weights (last.npz) and best.npz, which the other
commands read, and writes both results to metrics.json.
"""

import contextlib
import sys
from pathlib import Path

from .. import backend, distributed, optim, recipe, run_settings, runs
from ..profiler import ProfileFirstEpoch
from ..tensorboard import TensorBoard
from ..training import EarlyStopping, Trainer, TrainingInterrupted
from ..viz.health import HealthMonitor
from ..viz.plots import require_matplotlib, save_health
from . import train_report
from .arguments import flag_words, folder_to_write, malloc_flag, setting, settings_of_flags


def add_to(commands):
    train = commands.add_parser("train", help="train a model (defaults: cnn on MNIST on the CPU)",
                                description="Train a model, writing checkpoints and metrics to a fresh folder "
                                            "runs/MODEL-DATE-N (runs/latest points at the newest) or to --out.")
    _model_and_data_flags(train)
    _run_flags(train)
    malloc_flag(train)
    train.set_defaults(run=run)


def _model_and_data_flags(train):
    train.add_argument("--model", **setting("model"))
    train.add_argument("--dataset", **setting("dataset"),
                       help="cifar10 and imagefolder read --data (imagefolder: DIR/train and DIR/test or DIR/val, "
                            "one sub-folder per class)")
    train.add_argument("--data", **setting("data"),
                       help="cifar-10-python.tar.gz (or its cifar-10-batches-py folder), or the picture folder; "
                            "cifar10 without --data reads the archive `minicnn fetch cifar10` put in the cache")
    train.add_argument("--depth", **setting("depth"), help="--model resnet: depth 6n+2 (default 20)")
    train.add_argument("--image-size", **setting("image_size"),
                       help="the model's input size: imagefolder pictures are read at this size (default 64); other "
                            "datasets are resized as the tutorial does (Resize(size * 256 / 224), CenterCrop(size))")
    train.add_argument("--pad", **setting("pad"),
                       help="pad each side with this many zero pixels first (Fashion-MNIST 28x28 -> 32x32: --pad 2)")
    train.add_argument("--augment", **setting("augment"),
                       help="training-time augmentation: crop (RandomCrop(size, padding=size // 8)), "
                            "flip (RandomHorizontalFlip)")
    train.add_argument("--normalize", **setting("normalize", default=None),
                       help="per-channel normalisation (default: imagenet for resnet18 on colour images or "
                            "with --weights, none otherwise)")
    train.add_argument("--weights", **setting("weights"),
                       help="--model resnet18: start from a PyTorch state dict (torchvision's resnet18-*.pth); "
                            "fc is replaced by a new Dense(512, classes)")
    train.add_argument("--freeze-backbone", **setting("freeze_backbone"),
                       help="train only the final layer fc (fine-tuning a pretrained --weights)")


def _run_flags(train):
    train.add_argument("--momentum", **setting("momentum"), help="SGD momentum (default %(default)s)")
    train.add_argument("--weight-decay", **setting("weight_decay"), help="SGD weight decay (default %(default)s)")
    train.add_argument("--epochs", **setting("epochs", default=None),
                       help=f"default {run_settings.DEFAULT_EPOCHS} (with --resume: the run's own)")
    train.add_argument("--batch-size", **setting("batch_size"))
    train.add_argument("--optimizer", **setting("optimizer", default=None),
                       help="default: the model's own: " + ", ".join(
                           f"{opt} for {model}" for model, opt in run_settings.DEFAULT_OPTIMIZER.items())
                       + f" (sgd with momentum {run_settings.DEFAULTS['momentum']})")
    train.add_argument("--lr", **setting("lr"), help="default: " + ", ".join(
        f"{rate:g} for {name}" for name, rate in optim.DEFAULT_LR.items()))
    train.add_argument("--schedule", **setting("schedule"),
                       help="learning-rate schedule per epoch: step (x0.1 every 2 epochs) or cosine to 0")
    train.add_argument("--patience", **setting("patience"),
                       help="stop early when validation accuracy has not improved for this many epochs "
                            "(default, or 0: never stop early)")
    train.add_argument("--validation", **setting("validation"),
                       help="training images held out for validation (default: a tenth of the training images "
                            "used, at most 5000; 0: none)")
    train.add_argument("--shift", **setting("shift"), help="augment by random shifts of up to this many pixels")
    train.add_argument("--limit", **setting("limit"), help="train on only the first N training images")
    train.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    train.add_argument("--seed", **setting("seed"))
    train.add_argument("--out", type=folder_to_write, default=None,
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
    train.add_argument("--tensorboard", type=folder_to_write, default=None, metavar="DIR",
                       help="write TensorBoard logs to DIR (view: tensorboard --logdir DIR); with --health they hold "
                            "its statistics too (needs the tensorboard extra)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training on the processes mpiexec started (needs the dist extra); "
                            "--batch-size is per process")
    train.add_argument("--backend", choices=distributed.BACKENDS, default="auto",
                       help="with --distributed: how the processes talk (default auto: nccl when every process "
                            "has a GPU, else mpi)")


# ----- the command ----------------------------------------------------------------------------------------

def run(args):
    """Check everything the arguments name (the GPU, the output folder, a resumed run) before loading data,
    then train with the run folder locked."""
    if args.health:
        require_matplotlib()  # fail before training, not after it
    backend.array_module_for(args.device)  # a clear error now if the GPU is missing
    writes = _writes(args)
    with contextlib.ExitStack() as folder:
        if args.resume is not None:
            args.resume = runs.follow_latest(args.resume)
            if args.out is not None and args.out.resolve() != args.resume.resolve():
                raise ValueError(f"--resume continues the run in its own folder ({args.resume}); leave out --out")
            if not args.resume.is_dir():
                raise FileNotFoundError(f"--resume {args.resume}: no such folder (is it the folder of a run?)")
            if writes:
                folder.enter_context(runs.run_folder(args.resume, "--resume"))
            saved = recipe.saved_settings(args.resume)
            settings = {**saved, "epochs": saved["epochs"] if args.epochs is None else args.epochs}
        else:
            settings = settings_of_flags(args)
            if args.out is not None and writes:
                folder.enter_context(runs.run_folder(args.out, "--out"))
                runs.check_out_folder(args.out, args.overwrite)
            elif writes:
                # A fresh folder is made there after the data loads.
                runs.made_and_writable(runs.RUNS, "the runs folder")
        return _train(args, settings, folder)


def _continues(args):
    """Whether this run loads a checkpoint: --resume of a folder with last.npz. A folder that holds best.npz
    alone (a kill before epoch 1's last.npz) starts again from epoch 1 with the settings saved there."""
    return args.resume is not None and runs.resume_checkpoint(args.resume).name == "last.npz"


def _writes(args):
    """Whether this process writes the run's files and prints: always, except ranks 1, 2, ... of --distributed."""
    return getattr(args, "comm", None) is None or args.comm.rank == 0


def _train(args, settings, folder):
    backend.set_default_device(args.device)
    backend.manual_seed(settings["seed"])
    comm = getattr(args, "comm", None)
    shard = (comm.rank, comm.size) if comm is not None and comm.size > 1 else None  # each process its part
    try:
        built = recipe.build(settings, args.device, shard, load_weights=not _continues(args))  # resumed: last.npz's
    except run_settings.SettingsError as error:
        raise ValueError(error.worded(flag_words)) from None  # the settings were given as flags
    trainer = Trainer(built.model, built.optimizer, comm=comm)
    trainer.schedule = built.schedule
    trainer.run_info = settings
    out = _checkpoint_folder(args, trainer, settings, folder, len(built.train))
    print(f"training {settings['model']} on {settings['dataset']} ({built.train.num_samples} images, "
          f"{settings['validation']} held out) on the {args.device.upper()} with "
          f"{settings['optimizer']} lr {settings['lr']:g}, batch {settings['batch_size']}"
          + (f" per process x {comm.size} processes ({comm.name})" if comm is not None and comm.size > 1 else "")
          + f"; checkpoints in {out}", flush=True)
    history, monitor = _fit(args, settings, trainer, built, out)
    result = trainer.evaluate(built.test)
    best = train_report.best_result(args, trainer, built.test, out, result)
    if _writes(args):
        monitor_name = "val_accuracy" if built.validation is not None else "accuracy"
        train_report.report(args, settings, history, (result, best, monitor_name), len(built.train), out)
        if monitor is not None:
            monitor.remove()
            print(f"wrote {save_health(monitor.history, out / 'health.png')}")
    return 0


def _checkpoint_folder(args, trainer, settings, folder, steps_per_epoch):
    """Where the run's checkpoints go (None on ranks 1, 2, ...); a resumed trainer is loaded from its folder."""
    if args.resume is not None or args.out is not None:
        out = args.out if args.resume is None else args.resume
        if _writes(args):
            runs.point_latest(out)  # runs/latest follows every run, wherever it went
        if _continues(args):
            loaded = trainer.resume(args.resume)
            print(train_report.resume_line(args.resume, loaded.state, steps_per_epoch, settings["epochs"]), flush=True)
        elif args.resume is not None:
            print(f"resuming {args.resume} from the start: it holds best.npz but no last.npz (stopped before "
                  f"epoch 1's last.npz was written), so epoch 1 runs again and best.npz is written again",
                  flush=True)
        return out
    if _writes(args):
        return folder.enter_context(runs.run_folder(runs.fresh_run_folder(settings["model"]), "the run folder"))
    return None  # ranks 1, 2, ... of a distributed run write nothing


def _fit(args, settings, trainer, built, out):
    """trainer.fit with the callbacks the flags ask for; (history, the --health monitor or None)."""
    callbacks = [EarlyStopping("val_accuracy", patience=settings["patience"])] if settings["patience"] else []
    monitor = HealthMonitor(built.model) if args.health else None
    profiler = ProfileFirstEpoch(len(built.train)) if args.profile else None
    board = _tensorboard(args.tensorboard, built.model, built.image, monitor)
    callbacks += [callback for callback in (board or monitor, profiler) if callback is not None]
    try:
        history = trainer.fit(built.train, epochs=settings["epochs"], validation_data=built.validation,
                              callbacks=callbacks, checkpoint_dir=out, verbose=2 if args.quiet else "auto")
    except KeyboardInterrupt as stop:
        if isinstance(stop, TrainingInterrupted) and out is not None and _writes(args):  # it saved last.npz
            print(f"continue with `minicnn train --resume {out}`", file=sys.stderr, flush=True)
        raise
    except OSError as error:  # a full disk or a folder made read-only: Trainer.save's error names the file
        if out is None:
            raise
        if runs.resume_checkpoint(out) is None:
            raise type(error)(f"{error}; no checkpoint was written: once {out} can be written, train again") \
                from error
        raise type(error)(f"{error}; {out} keeps its last whole checkpoints: once it can be written, continue "
                          f"with --resume {out}") from error
    finally:
        if profiler is not None:
            profiler.close()  # ends the profile if the first epoch was interrupted
        if board is not None:
            board.close()
    return history, monitor


def _tensorboard(folder, model, image, monitor):
    """The --tensorboard callback (None without the flag), showing `image`'s feature maps; it drives the
    --health monitor, when there is one, so that each epoch's statistics are averaged before they are written."""
    if folder is None:
        return None
    board = TensorBoard(folder, model=model, image=image, health=monitor or False)
    print(f"TensorBoard logs in {folder} (view them with: tensorboard --logdir {folder})", flush=True)
    return board
