"""The colour-image examples run end to end: ResNet-18 fine-tuning and the Keras CIFAR-10 CNN on a tiny
CIFAR-10 archive in the official format, the Keras 64x64 CNN on a tiny picture folder. Slow tests."""

import numpy as np
import pytest

from minicnn import models
from minicnn.interop import to_torch_state_dict
from test_cli_images import write_tiny_cifar10
from test_examples import run_example

pytestmark = pytest.mark.slow


def run_example_slowly(name, *arguments):
    """run_example with room for a ResNet-18 on the CPU."""
    return run_example(name, *arguments, timeout=600)


def test_resnet18_finetune_example(tmp_path):
    archive = write_tiny_cifar10(tmp_path / "cifar-10-python.tar.gz")
    weights = tmp_path / "resnet18.pth"
    to_torch_state_dict(models.resnet18(), weights)
    output = run_example_slowly("resnet18_finetune_cifar10.py", "--data", str(archive), "--weights", str(weights),
                          "--limit", "8", "--test-limit", "4")
    line = output.strip().splitlines()[-1]
    assert line.startswith("Accuracy of the network on the 4 test images:")


def test_keras_cifar10_example(tmp_path):
    archive = write_tiny_cifar10(tmp_path / "cifar-10-python.tar.gz", images_per_batch=16)
    output = run_example_slowly("keras_cifar10.py", "--data", str(archive), "--epochs", "1")
    assert "Total params: 122,570" in output  # the tutorial's count
    assert 0.0 <= float(output.strip().splitlines()[-1].split()[-1]) <= 1.0


def test_keras_cnn64_example(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 3)):
        for name, colour in (("cats", 40), ("dogs", 200)):
            (tmp_path / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(colour + rng.normal(0, 20, size=(80, 72, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{index}.jpg")
    output = run_example_slowly("keras_cnn64.py", "--data", str(tmp_path), "--epochs", "3")
    assert "classes: cats, dogs" in output
    assert float(output.strip().splitlines()[-1].split()[-1]) >= 0.5
