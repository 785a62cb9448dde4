"""`minicnn train` on colour images: CIFAR-10 archives, picture folders, ResNets, pretrained weights, augmentation.

The flag checks run in a moment; the training runs are slow tests (`python3 -m pytest -m slow`),
on a tiny CIFAR-10 archive and a tiny picture folder written here in the official layouts.
"""

import io
import json
import pickle
import tarfile

import numpy as np
import pytest

from minicnn import data, models, recipe
from minicnn.checkpoint import load_checkpoint
from minicnn.cli import main
from minicnn.recipe import transforms as _transforms
from minicnn.data import CIFAR10_CLASSES


def write_tiny_cifar10(path, images_per_batch=4, seed=0):
    """cifar-10-python.tar.gz in the official layout, with `images_per_batch` random images per batch."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{number}" for number in range(1, 6)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, images_per_batch)],
                     b"data": rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8)}
            content = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def _fails(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_the_new_flags_are_checked_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "run")]
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "empty-cache"))  # no fetched archive to fall back on
    _fails(["train", "--dataset", "cifar10", *out], "--dataset cifar10 without --data reads the archive in the cache, "
           "which `minicnn fetch cifar10` downloads", capsys)
    _fails(["train", "--model", "cnn", "--weights", str(tmp_path / "w.pth"), *out], "use it with --model resnet18",
           capsys)
    _fails(["train", "--model", "resnet18", "--weights", str(tmp_path / "w.pth"), *out], "no such file", capsys)
    _fails(["train", "--model", "lenet", "--freeze-backbone", *out], "does not have", capsys)
    _fails(["train", "--data", str(tmp_path), *out], "--data is for --dataset", capsys)
    with pytest.raises(SystemExit):
        main(["train", "--augment", "crop,rotate"])
    assert "unknown augmentation(s) ['rotate']" in capsys.readouterr().err


def test_resnet18_on_grey_images_normalizes_by_default_only_where_imagenet_means_fit(tmp_path, capsys):
    from minicnn import run_settings

    def normalize(**given):
        return run_settings.completed({"model": "resnet18", "dataset": "mnist", **given})["normalize"]

    assert normalize() == "none"  # grey MNIST, a 1-channel model: ImageNet's three means would not fit
    assert normalize(weights="w.pth") == "imagenet"  # pretrained: grey repeated to 3 channels, as ImageNet's
    assert normalize(dataset="cifar10") == "imagenet" and normalize(normalize="none") == "none"
    settings = {"dataset": "mnist", "model": "resnet18", "normalize": "imagenet"}
    with pytest.raises(ValueError, match="^normalize='imagenet': .*; pass normalize='none' "):
        _transforms(settings, 1, 28, 28)  # settings, not flags: the command line words it by its flags
    assert main(["train", "--model", "resnet18", "--normalize", "imagenet", "--limit", "64", "--validation", "0",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--normalize imagenet" in error and "pass --normalize none" in error


def test_the_tutorial_pipeline_and_the_fashion_mnist_augmentation():
    settings = {"dataset": "cifar10", "model": "resnet18", "image_size": 224, "pad": 0, "augment": [],
                "normalize": "imagenet", "weights": "w.pth"}
    train, evaluation = _transforms(settings, 3, 32, 32)
    assert repr(evaluation) == repr(data.Compose([
        data.Resize(256), data.CenterCrop(224), data.ToFloat(), data.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]))
    assert repr(train) == repr(evaluation)
    settings = {"dataset": "fashion-mnist", "model": "resnet", "image_size": None, "pad": 2,
                "augment": ["crop", "flip"], "normalize": "none"}
    train, evaluation = _transforms(settings, 1, 28, 28)
    assert repr(train) == repr(data.Compose([data.Pad(2), data.RandomCrop(32, padding=4),
                                             data.RandomHorizontalFlip()]))
    assert repr(evaluation) == repr(data.Compose([data.Pad(2)]))


@pytest.mark.slow
def test_resnet18_fine_tuning_recipe_on_a_cifar10_archive(tmp_path, capsys):
    """The tutorial's command, end to end: pretrained weights, fc replaced, backbone frozen, 224x224 inputs."""
    archive = write_tiny_cifar10(tmp_path / "cifar-10-python.tar.gz")
    weights = tmp_path / "resnet18.pth"
    pretrained = models.resnet18()
    from minicnn.interop import to_torch_state_dict

    to_torch_state_dict(pretrained, weights)
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet18", "--dataset", "cifar10", "--data", str(archive), "--weights",
                 str(weights), "--freeze-backbone", "--image-size", "224", "--batch-size", "4", "--optimizer", "sgd",
                 "--lr", "0.001", "--epochs", "1", "--limit", "8", "--validation", "0", "--quiet",
                 "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0  # frozen again, weights not re-read
    weights.unlink()
    trained = load_checkpoint(out / "last.npz").model
    assert load_checkpoint(out / "last.npz").state["epoch"] == 2
    np.testing.assert_array_equal(trained.conv1.weight.numpy(), pretrained.conv1.weight.numpy())  # frozen
    np.testing.assert_array_equal(trained.layer4[1].bn2.weight.numpy(), pretrained.layer4[1].bn2.weight.numpy())
    assert trained.fc.weight.shape == (512, 10)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["run"]["momentum"] == 0.9 and summary["run"]["normalize"] == "imagenet"
    capsys.readouterr()
    assert main(["evaluate", str(out / "last.npz")]) == 0
    report = capsys.readouterr().out
    assert "cifar10 test, 4 images" in report and CIFAR10_CLASSES[0] in report


@pytest.mark.slow
def test_picture_folder_run_keeps_its_class_names(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path / "pictures"
    colours = {"red": (250, 10, 10), "green": (10, 250, 10), "blue": (10, 10, 250)}
    for split, count in (("train", 6), ("test", 2)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (70 + index, 64), colour).save(root / split / name / f"{index}.png")
    out = tmp_path / "run"
    assert main(["train", "--model", "cnn64", "--dataset", "imagefolder", "--data", str(root), "--image-size", "64",
                 "--augment", "flip", "--epochs", "1", "--validation", "0", "--batch-size", "6", "--quiet",
                 "--out", str(out)]) == 0
    assert load_checkpoint(out / "best.npz").state["run"]["class_names"] == ["blue", "green", "red"]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "green" in capsys.readouterr().out


@pytest.mark.slow
def test_resnet_on_padded_fashion_mnist_with_crops_and_flips(tmp_path, monkeypatch):
    monkeypatch.setitem(recipe.LOADERS, "fashion-mnist", lambda split: tuple(
        array[:200] for array in data.load_fashion_mnist(split)))
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet", "--depth", "8", "--dataset", "fashion-mnist", "--pad", "2",
                 "--augment", "crop,flip", "--optimizer", "sgd", "--lr", "0.05", "--epochs", "1", "--limit", "128",
                 "--validation", "32", "--batch-size", "32", "--quiet", "--out", str(out)]) == 0
    run = load_checkpoint(out / "last.npz")
    assert run.state["run"]["augment"] == ["crop", "flip"] and run.model.conv1.weight.shape == (16, 1, 3, 3)


@pytest.mark.parametrize("key, value, wanted", [
    ("augment", ["rotate"], "expected a list of ['crop', 'flip']"),
    ("pad", -1, "an integer at least 0"),
    ("momentum", 1.5, "a number in [0, 1)"),
    ("normalize", "zca", "expected 'none' or 'imagenet'"),
])
def test_a_resumed_run_checks_the_saved_image_settings(tmp_path, capsys, key, value, wanted):
    from minicnn import nn
    from minicnn.checkpoint import save_checkpoint

    run = {"model": "cnn", "dataset": "mnist", "epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.1, key: value}
    save_checkpoint(tmp_path / "last.npz", nn.Sequential(nn.Dense(2, 2)), state={"epoch": 1, "run": run})
    assert main(["train", "--resume", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    # One line naming the setting and what it must be: load_checkpoint's schema (run_settings) refuses wrong
    # types and ranges, --resume what no flag would accept (a choice the command line does not know).
    assert error.count("\n") == 1 and (f"run setting {key}: " in error or f"'state.run': '{key}'" in error)
    assert wanted in error, error
