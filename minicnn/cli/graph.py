"""`minicnn graph`: the computation graph of one training step, as .svg, .png, .pdf (Graphviz) or .dot."""

import shutil
import sys
from pathlib import Path

import numpy as np

from .. import backend, models
from .. import functional as F
from ..tensor import Tensor
from ..viz.graph import export_graph
from .arguments import count, file_to_write

BATCH_LIMIT = 1024  # the random batch's size at most; its graph is the same for any size


def add_to(commands):
    graph = commands.add_parser("graph", help="draw the computation graph of one training step",
                                description="Build the model, a random batch and its loss, and write the graph "
                                            "of operations behind the loss (.svg, .png and .pdf need Graphviz's "
                                            "`dot`; without it the .dot file is written, with the command that "
                                            "draws it).")
    graph.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    graph.add_argument("--out", type=file_to_write, default=Path("graph.svg"), help="a .svg, .png, .pdf or .dot file")
    graph.add_argument("--batch-size", type=count(1, BATCH_LIMIT), default=8,
                       help=f"the random batch's size, at most {BATCH_LIMIT} (the graph is the same for any)")
    graph.set_defaults(run=run)


def run(args):
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
