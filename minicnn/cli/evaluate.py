"""`minicnn evaluate`: a checkpoint's (or an ONNX file's) accuracy, per-class report and confusion matrix on a
split of its dataset."""

from pathlib import Path

from .. import backend, data, metrics, nn, recipe, run_settings, runs
from ..training import Trainer
from .arguments import MODEL_FILE_HELP, count, dataset_flag, dataset_of, malloc_flag


def add_to(commands):
    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a test set",
                                   description="Accuracy, per-class precision/recall/F1 and the confusion matrix.")
    evaluate.add_argument("checkpoint", type=Path, help=MODEL_FILE_HELP)
    dataset_flag(evaluate, help="default: the dataset the checkpoint was trained on (needed for .onnx files "
                                "that do not name it)")
    evaluate.add_argument("--split", choices=["train", "test"], default="test")
    evaluate.add_argument("--device", choices=list(backend.DEVICES), default="cpu")
    evaluate.add_argument("--batch-size", type=count(1), default=256)
    malloc_flag(evaluate)
    evaluate.set_defaults(run=run)


def run(args):
    path = runs.resolve_checkpoint(args.checkpoint)
    backend.set_default_device(args.device)
    loaded = runs.read_checkpoint(path)
    model = _logits_model(loaded.model).to(args.device)
    dataset = dataset_of(path, loaded, args.dataset)
    saved = loaded.state.get("run") if isinstance(loaded.state.get("run"), dict) else {}
    if dataset in run_settings.PATH_DATASETS and (saved.get("dataset") != dataset or not saved.get("data")):
        raise ValueError(f"{path}: evaluating on {dataset} needs the --data path its run was trained with, "
                         "which the checkpoint does not hold")
    settings = {**run_settings.DEFAULTS, "model": "", **saved, "dataset": dataset}
    images, labels, names = recipe.load_split(settings, args.split)
    names = saved.get("class_names") or names  # an imagefolder run's classes, in the order of the outputs
    channels = 1 if images.ndim == 3 else images.shape[1]
    _, eval_transform = recipe.transforms(settings, channels, *images.shape[-2:])
    loader = data.DataLoader(images, labels, batch_size=args.batch_size, transform=eval_transform)
    result = Trainer(model).evaluate(loader)
    print(f"{path}: {dataset} {args.split}, {len(labels)} images, loss {result['loss']:.4f}")
    print(metrics.classification_report(result["confusion_matrix"], names))  # ends with the accuracy
    print("confusion matrix (row: true class, column: predicted):")
    print(result["confusion_matrix"])
    return 0


def _logits_model(model):
    """The model, giving logits: a final Softmax (an ONNX file exported with --softmax) is left out, so the
    loss is the cross-entropy of the model's logits; the predicted classes are the same."""
    layers = getattr(model, "layers", None)
    if layers and isinstance(layers[-1], nn.Softmax):
        model.layers = layers[:-1]  # this copy, just read from the file; Softmax has no weights
    return model
