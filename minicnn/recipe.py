"""A run built from its settings: the data, the transforms, the model, the optimizer and the schedule.

    settings = {**run_settings.DEFAULTS, "model": "cnn", "dataset": "mnist", "epochs": 5, "batch_size": 64,
                "optimizer": "adam", "lr": 1e-3}
    run = recipe.build(settings)                     # run.model, run.optimizer, run.schedule, run.train, ...
    Trainer(run.model, run.optimizer).fit(run.train, epochs=5, validation_data=run.validation)

The settings are those of minicnn/run_settings.py, the ones `minicnn train` saves in its checkpoints, so a
resumed run (and `minicnn evaluate`) rebuilds exactly what the first run built. Each step is also a
function of its own (load_split, hold_out, transforms, build_model, optimizer, schedule) for code that
needs one of them. Building draws from minicnn's random generator only for the model's initial
weights, after the data is loaded, so the same seed gives the same run.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data, models, nn, optim, run_settings, runs
from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .run_settings import SettingsError

LOADERS = {"mnist": data.load_mnist, "fashion-mnist": data.load_fashion_mnist}  # split -> (images, labels)
IMAGE_FOLDER_SIZE = 64  # imagefolder pictures are read at this size when the image_size setting is None


def _setting(settings, name):
    """settings[name], or the schema's default (run_settings.DEFAULTS) where the settings leave it out."""
    return settings.get(name, run_settings.DEFAULTS[name])


def saved_settings(folder):
    """The run settings saved in the folder's last.npz (or best.npz, when a kill came before the first
    last.npz: see runs.resume_checkpoint), each checked as its flag would be (CheckpointError if not)."""
    path = runs.resume_checkpoint(folder)
    if path is None:
        raise FileNotFoundError(f"{folder}: no last.npz or best.npz there, so it is not the folder of a run")
    saved = load_checkpoint(path).state.get("run")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: holds no run settings to resume (state 'run' is {type(saved).__name__})")
    return run_settings.checked(saved, where=path)


# ----- the data -------------------------------------------------------------------------------------

def load_split(settings, split):
    """(images uint8 (N, C, H, W) or (N, H, W), labels int64 (N,), class names) of one split of the run's dataset."""
    dataset = settings["dataset"]
    if dataset == "cifar10":
        images, labels = data.load_cifar10(settings["data"], split)
        return images, labels, data.CIFAR10_CLASSES
    if dataset == "imagefolder":
        folder = image_folder_split(Path(settings["data"]), split)
        return data.load_image_folder(folder, settings.get("image_size") or IMAGE_FOLDER_SIZE)
    images, labels = LOADERS[dataset](split)
    return images, labels, data.class_names(dataset)


def image_folder_split(root, split):
    """root/train for 'train'; root/test, or else root/val, for 'test'."""
    candidates = ["train"] if split == "train" else ["test", "val"]
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no {' or '.join(candidates)} sub-folder; imagefolder expects "
                            f"{root}/train/<class>/... and {root}/test/<class>/... (or val/)")


def validation_count(requested, available, limit):
    """How many of `available` training images to hold out: `requested` (the validation setting), or by default
    a tenth, at most 5000; `limit` is the limit setting, which kept `available`.

    Raises SettingsError, saying what to pass, when the hold-out would leave no training image.
    """
    if requested is None:
        return min(5000, available // 10)
    if requested < 0:
        raise SettingsError(lambda name: f"{name('validation', requested)}: expected 0 or more")
    if requested >= available:
        raise SettingsError(lambda name: (
            f"{name('validation', requested)} leaves no training images ("
            + (f"{name('limit', limit)} keeps {available}" if limit else f"the dataset has {available}")
            + f"); pass a smaller {name('validation')} (such as {available // 10}), or {name('validation', 0)} "
              "for none"))
    return requested


def hold_out(images, labels, validation, seed):
    """((kept images, labels), (held-out images, labels) or None): `validation` training images held out,
    chosen by a fixed permutation of the seed (so a resumed run holds out the same ones)."""
    if validation <= 0:
        return (images, labels), None
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(images))
    kept, held_out = np.sort(order[validation:]), np.sort(order[:validation])
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def load_data(settings):
    """(train, validation or None, test, class names), each split (images, labels), for the run's settings.

    The limit setting keeps the first training images; the validation images are held out of those. Fills in
    settings['validation'] (the count held out) and, for imagefolder, settings['class_names'] (label i is
    class_names[i]), so that the checkpoints record them.
    """
    train_images, train_labels, class_names = load_split(settings, "train")
    test_images, test_labels, _ = load_split(settings, "test")
    if settings["dataset"] == "imagefolder":
        settings["class_names"] = list(class_names)
    if settings["limit"]:
        train_images, train_labels = train_images[: settings["limit"]], train_labels[: settings["limit"]]
    settings["validation"] = validation_count(settings["validation"], len(train_images), settings["limit"])
    train, validation = hold_out(train_images, train_labels, settings["validation"], settings["seed"])
    return train, validation, (test_images, test_labels), class_names


def transforms(settings, channels, height, width):
    """(training transform, evaluation transform) for images (N, channels, height, width) of the run's dataset.

    Both: pad, resize to the model's input (the tutorial's Resize(size * 256 / 224), CenterCrop(size)),
    copy one channel to three for a colour model, normalise. Training adds the augment setting's crops and
    flips after the resize. None where nothing is to be done (the DataLoader still scales uint8 to [0, 1]).
    """
    pad, size = _setting(settings, "pad"), settings.get("image_size")
    shape = [data.Pad(pad)] if pad else []
    height, width = height + 2 * pad, width + 2 * pad
    if size is not None and settings["dataset"] != "imagefolder" and (height, width) != (size, size):
        shape += [data.Resize(round(size * 256 / 224)), data.CenterCrop(size)]
        height = width = size
    augment = []
    augmentations = _setting(settings, "augment")
    if "crop" in augmentations:
        augment.append(data.RandomCrop((height, width), padding=max(1, min(height, width) // 8)))
    if "flip" in augmentations:
        augment.append(data.RandomHorizontalFlip())
    values = []
    if channels == 1 and model_channels(settings, channels) == 3:
        values.append(data.RepeatChannels(3))
    if settings.get("normalize") == "imagenet" and model_channels(settings, channels) != 3:
        raise SettingsError(lambda name: (
            f"{name('normalize', 'imagenet')}: ImageNet's mean and std are for 3 colour channels, and "
            f"{name('model', settings['model'])} takes {settings['dataset']}'s {channels}-channel images; pass "
            f"{name('normalize', 'none')} (or {name('weights')}, whose model takes grey images repeated to 3 "
            "channels)"))
    if settings.get("normalize") == "imagenet":
        values += [data.ToFloat(), data.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]
    train, evaluation = shape + augment + values, shape + values
    return (data.Compose(train) if train else None), (data.Compose(evaluation) if evaluation else None)


# ----- the model, the optimizer, the schedule --------------------------------------------------------

def model_channels(settings, data_channels):
    """The channels the model takes: the data's, except 3 for the colour-only models and pretrained weights."""
    if settings["model"] in ("cifar_cnn", "cnn64") or settings.get("weights"):
        return 3
    return data_channels


def model_arguments(settings, channels, image_size, num_classes):
    """The keyword arguments of models.build for the run's model, on images (channels, image_size, image_size)."""
    name = settings["model"]
    if name in ("cifar_cnn", "cnn64"):  # colour-only, at their own input size
        return {"num_classes": num_classes}
    arguments = {"num_classes": num_classes, "in_channels": channels}
    if name == "resnet":
        arguments["depth"] = _setting(settings, "depth")
    if name in ("cnn", "lenet", "fashion_cnn"):  # their Dense layer's size follows the image size
        arguments["image_size"] = image_size
    return arguments


def build_model(settings, channels, image_size, num_classes, load_weights=True):
    """The run's model for images with `channels` channels (the data's; model_channels decides the model's).

    With the weights setting: torchvision's ImageNet ResNet-18 whose fc is replaced for num_classes (load_weights=False
    builds the same structure without reading the file: a resumed run's weights come from its checkpoint).
    freeze_backbone leaves only fc trainable.
    """
    if settings.get("weights"):
        model = models.build("resnet18", num_classes=1000, in_channels=3,
                             weights=settings["weights"] if load_weights else None)
        if num_classes != 1000:
            model.fc = nn.Dense(512, num_classes)  # the tutorial's model.fc = nn.Linear(512, num_classes)
    else:
        channels = model_channels(settings, channels)
        model = models.build(settings["model"], **model_arguments(settings, channels, image_size, num_classes))
    if settings.get("freeze_backbone"):
        model.requires_grad_(False)
        model.fc.requires_grad_(True)
    return model


def optimizer(settings, model):
    """The run's optimizer (optim.create). It holds every parameter, in the checkpoint's order; frozen ones
    never get a gradient, and the optimizer steps only parameters that have one."""
    options = {}
    if settings["optimizer"] == "sgd":
        options = {"momentum": _setting(settings, "momentum"), "weight_decay": _setting(settings, "weight_decay")}
    return optim.create(settings["optimizer"], model.parameters(), lr=settings["lr"], **options)


def schedule(name, optimizer, epochs):
    """The learning-rate schedule per epoch: 'step' (x0.1 every 2 epochs), 'cosine' (to 0), else None."""
    if name == "step":
        return optim.StepLR(optimizer, step_size=2, gamma=0.1)
    if name == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


# ----- all of it -------------------------------------------------------------------------------------

@dataclass
class Run:
    """What build() makes: the model, its optimizer and schedule, the three DataLoaders (validation None
    without a hold-out), the class names, and `image`: the first test image as the model sees it
    (1, C, H, W), after the evaluation transforms (TensorBoard draws the graph on it)."""

    model: object
    optimizer: object
    schedule: object
    train: data.DataLoader
    validation: object
    test: data.DataLoader
    class_names: list
    image: np.ndarray


def build(settings, device="cpu", shard=None, load_weights=True):
    """The run that `settings` describe, its arrays on `device`; shard (rank, size): this process's part of
    every split in data-parallel training. Call backend.manual_seed(settings['seed']) first for a run that
    repeats. Fills in settings['validation'] and settings['class_names'] as load_data does."""
    (train_images, train_labels), validation, (test_images, test_labels), class_names = load_data(settings)
    channels = 1 if train_images.ndim == 3 else train_images.shape[1]
    height, width = train_images.shape[-2:]
    train_transform, eval_transform = transforms(settings, channels, height, width)
    # The first test image as the model sees it: its side sizes the model.
    image = test_images[:1] if eval_transform is None else eval_transform(
        test_images[:1].reshape(1, channels, height, width))
    input_size = image.shape[-1]
    model = build_model(settings, channels, input_size, len(class_names), load_weights)
    run_optimizer = optimizer(settings, model)
    loader = data.DataLoader(train_images, train_labels, batch_size=settings["batch_size"], shuffle=True,
                             seed=settings["seed"], shift=settings["shift"], device=device,
                             transform=train_transform, shard=shard)
    eval_batch = max(settings["batch_size"], 256 if input_size <= 64 else 16)
    if validation is not None:
        validation = data.DataLoader(*validation, batch_size=eval_batch, device=device, transform=eval_transform,
                                     shard=shard)
    test = data.DataLoader(test_images, test_labels, batch_size=eval_batch, device=device,
                           transform=eval_transform, shard=shard)
    return Run(model, run_optimizer, schedule(settings["schedule"], run_optimizer, settings["epochs"]), loader,
               validation, test, list(class_names), image)
