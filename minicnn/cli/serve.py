"""`minicnn serve`: a local page where you draw a digit and watch every layer respond (needs Pillow)."""

from pathlib import Path

from .. import runs
from .arguments import MODEL_FILE_HELP, count, dataset_flag


def add_to(commands):
    serve = commands.add_parser("serve", help="a local page: draw a digit and watch every layer of the model respond",
                                description="Serve an interactive page for CHECKPOINT (and its JSON API) until Ctrl-C: "
                                            "draw a digit, see the probabilities, every layer's output, saliency "
                                            "and Grad-CAM. Works offline; needs Pillow (the images extra).")
    serve.add_argument("checkpoint", type=Path, help=MODEL_FILE_HELP)
    serve.add_argument("--port", type=count(0, 65535), default=8000, help="default 8000 (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1, this computer only; others get a warning)")
    dataset_flag(serve, help="default: the dataset the checkpoint was trained on (class names, test images)")
    serve.set_defaults(run=run)


def run(args):
    from ..serve import serve

    return serve(runs.resolve_checkpoint(args.checkpoint), host=args.host, port=args.port, dataset=args.dataset)
