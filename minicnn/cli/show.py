"""`minicnn show`: pictures of a trained model on one image: feature maps, filters, saliency, Grad-CAM."""

import json
import sys
from pathlib import Path

from .. import data, recipe, runs
from ..viz.plots import (
    require_matplotlib, save_confusion_matrix, save_feature_maps, save_filters, save_saliency, save_training_curves,
)
from ..viz.saliency import named_layers
from .arguments import CHECKPOINT_HELP, count, dataset_flag, dataset_of, folder_to_write


def add_to(commands):
    show = commands.add_parser("show", help="write pictures of a trained model: feature maps, filters, saliency",
                               description="For one image of the dataset, write PNGs of every Conv2D layer's "
                                           "feature maps and filters and the image's saliency and Grad-CAM maps "
                                           "(Grad-CAM of --layer, default the last convolution's ReLU); "
                                           "and, when the checkpoint's folder holds metrics.json, the training "
                                           "curves and the confusion matrix. Needs matplotlib.")
    show.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    show.add_argument("--image-index", type=count(0), default=0, help="which image of the split (default 0)")
    show.add_argument("--out", type=folder_to_write, default=None,
                      help="folder for the PNGs (default: CHECKPOINT's folder/show)")
    dataset_flag(show)
    show.add_argument("--split", choices=["train", "test"], default="test")
    show.add_argument("--layer", default=None, metavar="NAME_OR_INDEX",
                      help="the layer Grad-CAM explains: its position ('3') or name ('3 Conv2D'); default the "
                           "output of the last convolution (after its ReLU), a 3x3 map for cnn. An earlier layer "
                           "gives a finer map, e.g. --layer 4 (11x11, the second convolution's ReLU) for cnn")
    show.set_defaults(run=run)


def run(args):
    require_matplotlib()
    path = runs.resolve_checkpoint(args.checkpoint)
    loaded = runs.read_checkpoint(path)
    model = loaded.model
    dataset = dataset_of(path, loaded, args.dataset)
    if dataset not in recipe.LOADERS:
        raise ValueError(f"{path}: `minicnn show` reads {' and '.join(recipe.LOADERS)}, not {dataset}")
    images, labels = recipe.LOADERS[dataset](args.split)
    if not 0 <= args.image_index < len(images):
        raise ValueError(f"--image-index must lie in [0, {len(images)}) for {dataset} {args.split}, "
                         f"got {args.image_index}")
    image, label = images[args.image_index], int(labels[args.image_index])
    layer = _layer(model, args.layer)
    names = data.class_names(dataset)
    out = args.out or path.parent / "show"
    print(f"{path}: {dataset} {args.split} image {args.image_index} (class {names[label]})")
    written = save_feature_maps(model, image, out)
    written += save_filters(model, out)
    written.append(save_saliency(model, image, out / "saliency.png", label=label, class_names=names, layer=layer))
    written += _run_pictures(path, out, names)
    for written_path in written:
        print(f"wrote {written_path}")
    return 0


def _layer(model, given):
    """The layer name --layer gives (a position '3' or a name '3 Conv2D'); None without the flag."""
    if given is None:
        return None
    layers = [name for name, _ in named_layers(model)]
    layer = next((name for name in layers if given in (name, name.split()[0])), None)
    if layer is None:
        raise ValueError(f"--layer {given!r} is not a layer of the model; give a position or a name from {layers}")
    return layer


def _run_pictures(checkpoint, out, names):
    """The training curves and confusion matrix of the run's metrics.json, when there is one beside `checkpoint`:
    best.npz's confusion matrix for best.npz (metrics.json's `best`), the final weights' for last.npz."""
    metrics_path = checkpoint.parent / "metrics.json"
    if not metrics_path.exists():
        return []
    written = []
    try:
        summary = json.loads(metrics_path.read_text(encoding="utf-8"))
        if summary.get("history"):
            written.append(save_training_curves(summary["history"], out / "training_curves.png"))
        best = summary.get("best") if checkpoint.name == "best.npz" else None
        confusion = (best or {}).get("confusion_matrix") or summary.get("confusion_matrix")
        if confusion:
            written.append(save_confusion_matrix(confusion, out / "confusion_matrix.png", names))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:  # damaged or foreign
        print(f"note: {metrics_path} is not a run's metrics.json ({type(error).__name__}: "
              f"{str(error)[:120]!r}); its curves and confusion matrix are left out", file=sys.stderr)
    return written
