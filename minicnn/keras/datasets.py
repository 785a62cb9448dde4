"""keras.datasets.mnist, fashion_mnist and cifar10 .load_data(), read through minicnn.data.

Each returns ((x_train, y_train), (x_test, y_test)). MNIST and Fashion-MNIST: uint8
images (N, 28, 28), fetched once and verified by SHA-256 (see minicnn.data).
CIFAR-10: uint8 images channels-last (N, 32, 32, 3), as Keras gives them, read from
the python-version archive without unpickling: load_data(path=...) reads the archive
given, load_data() the one in $MINICNN_DATA/cifar10/ (by default ~/.cache/minicnn/cifar10/),
downloaded there first as Keras does when it is not there yet (minicnn.data.fetch_archive,
checked against its published MD5). Labels are int64 (N,) for all three (Keras
gives CIFAR-10's as (N, 1); minicnn's losses take class indices (N,)).
"""

import types
from pathlib import Path

from .. import data

CIFAR10_ARCHIVE = data.ARCHIVES["cifar10"].file


def _loader(load):
    def load_data():
        return load("train"), load("test")

    return types.SimpleNamespace(load_data=load_data)


def _cifar10_load_data(path=None):
    """((x_train (50000, 32, 32, 3), y_train (50000,)), (x_test (10000, 32, 32, 3), y_test (10000,)))."""
    if path is None:
        path = data.fetch_archive("cifar10")  # DataError in one line, saying where to get it, when it cannot

    def load(split):
        images, labels = data.load_cifar10(Path(path), split)
        return images.transpose(0, 2, 3, 1), labels  # (N, 3, 32, 32) -> Keras's (N, 32, 32, 3)

    return load("train"), load("test")


mnist = _loader(data.load_mnist)
fashion_mnist = _loader(data.load_fashion_mnist)
cifar10 = types.SimpleNamespace(load_data=_cifar10_load_data)
