"""The models of the examples and the command line: `cnn` (the Keras tutorial CNN) and `lenet`."""

from . import nn


def cnn(in_channels=1, image_size=28, num_classes=10):
    """Conv 32@3x3, pool, Conv 64@3x3, pool, Conv 64@3x3, Dense 64, Dense num_classes; ReLU after each.

    (N, in_channels, image_size, image_size) -> (N, num_classes) logits. With 28x28
    MNIST images the feature maps are 26 -> 13 -> 11 -> 5 -> 3, so Flatten gives 64*3*3 = 576;
    with 32x32 CIFAR-10 images 30 -> 15 -> 13 -> 6 -> 4, i.e. 1024.
    """
    side = ((image_size - 2) // 2 - 2) // 2 - 2
    return nn.Sequential(
        nn.Conv2D(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Dense(64 * side * side, 64), nn.ReLU(),
        nn.Dense(64, num_classes),
        input_shape=(in_channels, image_size, image_size),
    )


def lenet(in_channels=1, image_size=28, num_classes=10):
    """LeNet-5 with ReLU and max pooling: Conv 6@5x5 (padding 2), pool, Conv 16@5x5, pool, Dense 120, 84, num_classes.

    (N, in_channels, 28, 28) -> (N, num_classes): 28 -> 14 -> 10 -> 5, so Flatten gives 16*5*5 = 400.
    """
    side = ((image_size + 4 - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2D(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(16 * side * side, 120), nn.ReLU(),
        nn.Dense(120, 84), nn.ReLU(),
        nn.Dense(84, num_classes),
        input_shape=(in_channels, image_size, image_size),
    )


MODELS = {"cnn": cnn, "lenet": lenet}


def build(name, **kwargs):
    """The model called `name` ('cnn' or 'lenet'), built with kwargs (in_channels, image_size, num_classes)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
