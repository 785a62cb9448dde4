"""The Keras tutorial CNN on Fashion-MNIST (clothes instead of digits; the same shapes as MNIST).

Run:  python3 examples/fashion_mnist.py   (the data comes from Debian's dataset-fashion-mnist)
10% of the training images are held out for validation; the test set is used once, at the end.
"""

import argparse

import minicnn
from minicnn import metrics
from minicnn.data import FASHION_MNIST_CLASSES
from minicnn.keras import datasets, layers, models

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()
minicnn.manual_seed(0)
minicnn.set_default_device(args.device)

(train_images, train_labels), (test_images, test_labels) = datasets.fashion_mnist.load_data()
train_images, train_labels = train_images[: args.limit], train_labels[: args.limit]
train_images, test_images = train_images / 255.0, test_images / 255.0

model = models.Sequential([
    layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.Flatten(),
    layers.Dense(64, activation="relu"),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train_images, train_labels, epochs=args.epochs, batch_size=64, validation_split=0.1)

predictions = model.predict(test_images, batch_size=256).argmax(axis=1)
confusion = metrics.confusion_matrix(test_labels, predictions, num_classes=10)
print(metrics.classification_report(confusion, FASHION_MNIST_CLASSES))
