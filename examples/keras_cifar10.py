"""The Keras CIFAR-10 tutorial CNN, written as Keras writes it: only the import lines differ.

Conv 32, pool, Conv 64, pool, Conv 64, Flatten, Dense 64, Dense 10 on 32x32x3 images
(minicnn.models.cifar_cnn is the same network). Run:
    python3 examples/keras_cifar10.py
which, as Keras does, downloads cifar-10-python.tar.gz once into $MINICNN_DATA/cifar10/ (what
`minicnn fetch cifar10` does: checked against its published MD5), or give the archive with --data.
(10 epochs; --epochs and --limit make it shorter). Or:  minicnn train --model cifar_cnn --dataset cifar10
"""

import argparse
import sys

import minicnn
from minicnn.keras import datasets, layers, losses, models

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default=None,
                    help="cifar-10-python.tar.gz (default: the one in $MINICNN_DATA/cifar10/, downloaded if missing)")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()
minicnn.manual_seed(0)
minicnn.set_default_device(args.device)

try:
    (train_images, train_labels), (test_images, test_labels) = datasets.cifar10.load_data(path=args.data)
except minicnn.DataError as error:  # no archive and no network, a damaged archive: one line, no traceback
    sys.exit(f"keras_cifar10.py: {error}")
train_images, train_labels = train_images[: args.limit], train_labels[: args.limit]
# Normalize pixel values to be between 0 and 1
train_images, test_images = train_images / 255.0, test_images / 255.0

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(10))
model.summary()

model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
history = model.fit(train_images, train_labels, epochs=args.epochs, validation_data=(test_images, test_labels))
test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)
print(f"test accuracy: {test_acc:.4f}")
