"""The `minicnn` command: train, evaluate, fetch, and look inside a model (graph, show, export, predict, serve).

    minicnn train --model cnn --epochs 5       # a fresh folder runs/cnn-YYYYmmdd-N; runs/latest points at it
    minicnn train --out runs/cnn               # a folder of your choice (refused if it holds a run); runs/latest -> it
    minicnn train --resume runs/latest         # continue an interrupted run
    minicnn train --profile --health           # time each operation in epoch 1; write health.png
    mpiexec -n 2 minicnn train --distributed   # one model on 2 processes (needs the dist extra)
    minicnn evaluate runs/latest/best.npz       # or an .onnx file
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

One module per command (train.py, evaluate.py, ...), each with its arguments beside its run(args);
arguments.py holds the argument types. The commands parse and print: the work is the library's
(recipe.py builds a run, runs.py keeps run folders, run_settings.py checks settings).

This package is an entry point, so it is where process-wide settings are made: `train` and
`evaluate` call backend.keep_freed_memory() first (--no-keep-freed-memory leaves malloc alone).
"""

import argparse
import os
import sys
import traceback

from .. import __version__, backend, distributed
from ..errors import BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError
from ..training import TrainingInterrupted
from . import evaluate, export, fetch, graph, predict, serve, show, train

COMMANDS = (train, evaluate, fetch, graph, show, export, predict, serve)  # in the order `minicnn --help` lists them
# A user's mistake (a bad file, flag or folder) is one line naming it, never a traceback.
# ImportError: an extra (matplotlib, onnx, Pillow) is missing.
USER_ERRORS = (BackendUnavailableError, CheckpointError, DataError, ShapeError, TrainingDivergedError, OSError,
               ImportError, ValueError)


class OneLineErrors(argparse.ArgumentParser):
    """argparse's parser, whose error (a bad or missing flag) is one line on stderr, exit status 2:
    `minicnn train: argument --epochs: expected an integer at least 1, got 0 (see minicnn train --help)`.
    argparse's own prints the command's whole usage first, a dozen lines above the one that matters."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, but a flag no command knows is named with the command it was given to."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(2, f"{prog}: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
        return parsed


def build_parser():
    """The argparse parser of the `minicnn` command; each sub-command's `run` is its parsed `args.run`."""
    parser = OneLineErrors(prog="minicnn", description="Train and evaluate small CNNs with minicnn.")
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv=None):
    """Run the command in argv (default sys.argv[1:]); returns the exit code: 0, 1 (one line on stderr:
    `minicnn <command>: ...`), 130 (interrupted). A bad flag exits with 2 from the parser (one line too)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "keep_freed_memory", False):
        backend.keep_freed_memory()  # process-wide, so made here at the entry point and not on import
    args.comm = None
    try:
        if getattr(args, "distributed", False):
            args.comm = _start_distributed(args)
        return args.run(args)
    except KeyboardInterrupt as stop:
        if args.comm is not None and args.comm.size > 1 and not isinstance(stop, TrainingInterrupted):
            # Not the stop every rank agreed on (the Trainer's own): the others may be waiting.
            args.comm.abort("interrupted", code=130)
        print("stopped.", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.comm is not None and args.comm.size > 1 and isinstance(error, distributed.RanksDisagreeError):
            args.comm.abort_together(f"minicnn {args.command}: {error}")  # every rank has it: rank 0 says it
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
