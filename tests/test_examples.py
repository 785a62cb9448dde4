"""The example scripts run end to end (on small slices), and the `cnn` model learns real MNIST.

Each starts a Python process and trains: slow tests, run with `python3 -m pytest -m slow`.
"""

import os
import subprocess
import sys
from pathlib import Path


import pytest

import minicnn
from minicnn import models
from minicnn.data import load_mnist
from minicnn.training import Trainer
from test_cifar import _all_files, _python3_pickle, _write_archive

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *arguments, timeout=300):
    """Run examples/<name> with `arguments` in a fresh interpreter on this checkout; returns its stdout."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *arguments], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_cnn_learns_a_real_mnist_subset():
    """Two epochs on 4,000 training images; accuracy on 2,000 test images (measured: 0.938)."""
    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    minicnn.manual_seed(0)
    trainer = Trainer(models.cnn(), optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = trainer.fit(train_images[:4000], train_labels[:4000], epochs=2, batch_size=64, verbose=0)
    result = trainer.evaluate(test_images[:2000], test_labels[:2000])
    assert history["loss"][1] < history["loss"][0] < 1.0
    assert result["accuracy"] >= 0.92


def test_keras_style_example(tmp_path):
    output = run_example("keras_style_mnist.py", "--epochs", "1", "--limit", "2000")
    assert "Total params: 93,322" in output
    accuracy = float(output.strip().splitlines()[-1].split()[-1])
    assert 0.7 < accuracy <= 1.0


def test_pytorch_style_lenet_example():
    output = run_example("pytorch_style_lenet.py", "--epochs", "1", "--limit", "512")
    line = output.strip().splitlines()[-1]
    assert line.startswith("Accuracy of the network on the 10000 test images:")
    assert int(line.split()[-2]) > 30


def test_fashion_mnist_example():
    output = run_example("fashion_mnist.py", "--epochs", "1", "--limit", "512")
    assert "Ankle boot" in output and "accuracy:" in output


def test_cifar10_example_on_a_generated_archive(tmp_path):
    archive = _write_archive(tmp_path / "cifar-10-python.tar.gz",
                             _all_files(lambda number: _python3_pickle(number, 2, True)))
    output = run_example("cifar10_style.py", "--data", str(archive), "--epochs", "1")
    assert "(N, 1024)" in output and "truck" in output


def test_cifar10_example_explains_a_missing_archive(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "cifar10_style.py"), "--data", str(tmp_path / "missing.tar.gz")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)},
    )
    assert completed.returncode != 0
    assert "cifar-10-python.tar.gz" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["keras_cifar10.py", "cifar10_style.py", "resnet18_finetune_cifar10.py"])
def test_cifar10_examples_without_data_or_network_end_in_one_line(tmp_path, name):
    # No --data, an empty cache, and a proxy where nothing listens: as a user without network meets it.
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "MINICNN_DATA": str(tmp_path),
             "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"},
    )
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{name}: cifar10: could not get cifar-10-python.tar.gz (")
    assert "get it from https://www.cs.toronto.edu/~kriz/cifar.html" in last and str(tmp_path / "cifar10") in last
