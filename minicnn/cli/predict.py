"""`minicnn predict`: classify picture files with a trained model (minicnn/pictures.py; needs Pillow)."""

import json
import sys
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import DataError
from ..pictures import class_names, classify, load_model, prepare
from .arguments import MODEL_FILE_HELP, count, dataset_flag


def add_to(commands):
    predict = commands.add_parser("predict", help="classify picture files with a trained model",
                                  description="Read each picture (any size, colour or mode; needs Pillow), prepare "
                                              "it as the dataset's images were made and print the top classes "
                                              "with their probabilities. A file that cannot be read is named on "
                                              "stderr, the others are still predicted, and the exit code is 1.")
    predict.add_argument("checkpoint", type=Path, help=MODEL_FILE_HELP)
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="picture files (PNG, JPEG, ...)")
    predict.add_argument("--top", type=count(1), default=3, help="how many classes to show per file (default 3)")
    predict.add_argument("--json", action="store_true",
                         help="print a JSON list: [{file, predictions: [{class, index, probability}]}]")
    dataset_flag(predict, help="default: the dataset the checkpoint was trained on (needed for .onnx files)")
    predict.set_defaults(run=run)


def run(args):
    model, dataset = load_model(runs.resolve_checkpoint(args.checkpoint), args.dataset)
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
        print(json.dumps(results, indent=2, allow_nan=False))
    for result in [] if args.json else results:
        shown = ", ".join(f"{guess['class']} " + ("?" if guess["probability"] is None else f"{guess['probability']:.1%}")
                          for guess in result["predictions"])
        print(f"{result['file']}: {shown}")
        if "warning" in result:
            print(f"{result['file']}: warning: {result['warning']}")
    return 1 if failed else 0
