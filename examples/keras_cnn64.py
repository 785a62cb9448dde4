"""The Keras CNN on 64x64x3 pictures, written as Keras writes it: only the import lines and load_data differ.

The tutorial's `load_data()` stands for a folder of pictures, one sub-folder per class:
    pictures/train/<class>/*.png|jpg      pictures/test/<class>/*.png|jpg
minicnn.data.load_image_folder reads it (with Pillow, the `images` extra), resizing every picture
to 64x64; the classes are the sub-folders, sorted. Conv 32 3x3, pool, Flatten, Dense 64, Dense classes
(minicnn.models.cnn64). Run:
    python3 examples/keras_cnn64.py --data pictures/
Or:  minicnn train --model cnn64 --dataset imagefolder --data pictures/ --image-size 64
"""

import argparse
from pathlib import Path

import minicnn
from minicnn.data import load_image_folder
from minicnn.keras import layers, models

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", required=True, help="a folder holding train/ and test/, one sub-folder per class")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()
minicnn.manual_seed(0)
minicnn.set_default_device(args.device)


def load_data(root):
    """((x_train, y_train), (x_test, y_test), class_names): uint8 pictures channels-last (N, 64, 64, 3)."""
    train_images, train_labels, class_names = load_image_folder(Path(root) / "train", 64)
    test_images, test_labels, test_classes = load_image_folder(Path(root) / "test", 64)
    assert test_classes == class_names, f"train has classes {class_names}, test {test_classes}"
    channels_last = (0, 2, 3, 1)  # load_image_folder gives (N, 3, 64, 64), Keras's layout is (N, 64, 64, 3)
    return ((train_images.transpose(channels_last), train_labels),
            (test_images.transpose(channels_last), test_labels), class_names)


(train_images, train_labels), (test_images, test_labels), class_names = load_data(args.data)
train_images, test_images = train_images / 255.0, test_images / 255.0

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(64, 64, 3)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(len(class_names), activation="softmax"))
model.summary()

model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train_images, train_labels, epochs=args.epochs, validation_split=0.1)
test_loss, test_accuracy = model.evaluate(test_images, test_labels, verbose=0)
print(f"classes: {', '.join(class_names)}")
print(f"test accuracy: {test_accuracy:.4f}")
