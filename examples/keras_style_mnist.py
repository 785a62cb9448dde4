"""The Keras tutorial CNN on MNIST, written as Keras writes it: only the import lines differ.

This is the `cnn` model of `minicnn train`. Run:  python3 examples/keras_style_mnist.py
(5 epochs; --epochs and --limit make it shorter). 10% of the training images are held out
for validation; the test set is used once, at the end.
"""

import argparse

import minicnn
from minicnn.keras import datasets, layers, models

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()
minicnn.manual_seed(0)
minicnn.set_default_device(args.device)

(train_images, train_labels), (test_images, test_labels) = datasets.mnist.load_data()
train_images, train_labels = train_images[: args.limit], train_labels[: args.limit]
train_images, test_images = train_images / 255.0, test_images / 255.0  # (N, 28, 28) in [0, 1]

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(10, activation="softmax"))
model.summary()

model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(train_images, train_labels, epochs=args.epochs, batch_size=64, validation_split=0.1)
test_loss, test_accuracy = model.evaluate(test_images, test_labels, verbose=0)
print(f"test accuracy: {test_accuracy:.4f}")
