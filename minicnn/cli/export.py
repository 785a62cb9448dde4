"""`minicnn export`: a checkpoint's model as an ONNX file (the `onnx` extra)."""

from pathlib import Path

from .. import runs
from ..checkpoint import load_checkpoint
from ..onnx import export as export_to_onnx  # the `onnx` package is imported only when used
from .arguments import CHECKPOINT_HELP, file_to_write


def add_to(commands):
    export = commands.add_parser("export", help="write a checkpoint's model as ONNX (needs the onnx extra)",
                                 description="Write the model of CHECKPOINT as an ONNX file (opset 17, dynamic batch "
                                             "axis), checked by onnx.checker, for onnxruntime and other tools.")
    export.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    export.add_argument("out", type=file_to_write, help="the .onnx file to write")
    export.add_argument("--softmax", action="store_true", help="end with a Softmax: the file gives probabilities")
    export.set_defaults(run=run)


def run(args):
    path = runs.resolve_checkpoint(args.checkpoint)
    loaded = load_checkpoint(path)
    dataset = loaded.dataset
    written = export_to_onnx(loaded.model, args.out, softmax=args.softmax,
                             metadata={"minicnn.dataset": dataset} if isinstance(dataset, str) else None)
    print(f"wrote {written}")
    return 0
