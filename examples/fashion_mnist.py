"""The `cnn` model on Fashion-MNIST (clothes instead of digits; the same shapes as MNIST).

Run:  python3 examples/fashion_mnist.py   (the data comes from Debian's dataset-fashion-mnist)
"""

import argparse

import minicnn
from minicnn import metrics, models
from minicnn.data import FASHION_MNIST_CLASSES, load_fashion_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()

minicnn.manual_seed(0)
minicnn.set_default_device(args.device)
x_train, y_train = load_fashion_mnist("train")
x_test, y_test = load_fashion_mnist("test")

model = models.cnn()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train[: args.limit], y_train[: args.limit], epochs=args.epochs, batch_size=64,
          validation_data=(x_test, y_test))
result = model.evaluate(x_test, y_test)
print(metrics.classification_report(result["confusion_matrix"], FASHION_MNIST_CLASSES))
