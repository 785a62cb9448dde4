"""keras.datasets.mnist.load_data() and fashion_mnist.load_data(), read through minicnn.data.

Each returns ((x_train, y_train), (x_test, y_test)): uint8 images (N, 28, 28) and
integer labels (N,), fetched once and verified by SHA-256 (see minicnn.data).
"""

import types

from .. import data


def _loader(load):
    def load_data():
        return load("train"), load("test")

    return types.SimpleNamespace(load_data=load_data)


mnist = _loader(data.load_mnist)
fashion_mnist = _loader(data.load_fashion_mnist)
