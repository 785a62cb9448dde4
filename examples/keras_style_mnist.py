"""The Keras tutorial CNN on MNIST, compiled and fitted Keras-style.

This is the `cnn` model of `minicnn train`. Run:  python3 examples/keras_style_mnist.py
(about 5 epochs; --epochs and --limit make it shorter).
"""

import argparse

import minicnn
from minicnn import nn
from minicnn.data import load_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()

minicnn.manual_seed(0)
minicnn.set_default_device(args.device)
x_train, y_train = load_mnist("train")  # uint8 (60000, 28, 28), int64 (60000,)
x_test, y_test = load_mnist("test")
x_train, y_train = x_train[: args.limit], y_train[: args.limit]

model = nn.Sequential(
    nn.Conv2D(1, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2D(2),
    nn.Conv2D(32, 64, kernel_size=3), nn.ReLU(), nn.MaxPool2D(2),
    nn.Conv2D(64, 64, kernel_size=3), nn.ReLU(),
    nn.Flatten(),
    nn.Dense(64 * 3 * 3, 64), nn.ReLU(),
    nn.Dense(64, 10),
)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary(input_shape=(1, 28, 28))

# uint8 images are scaled to [0, 1] and given their channel axis: (N, 28, 28) -> (N, 1, 28, 28)
history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test))
result = model.evaluate(x_test, y_test)
print(f"test accuracy: {result['accuracy']:.4f}")
