"""The CIFAR-10 CNN: Conv 32, pool, Conv 64, pool, Conv 64, Dense 64, Dense 10 on 3x32x32 images.

It reads the python-format archive cifar-10-python.tar.gz (163 MB), given with --data, or else
the one `minicnn fetch cifar10` downloads into $MINICNN_DATA/cifar10/ (fetched here if missing):
    python3 examples/cifar10_style.py [--data path/to/cifar-10-python.tar.gz]
The archive's batches are Python pickles; minicnn reads them without unpickling.
"""

import argparse
import sys

import minicnn
from minicnn import metrics, models
from minicnn.data import CIFAR10_CLASSES, fetch_archive, load_cifar10
from minicnn.training import Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default=None, help="cifar-10-python.tar.gz or its extracted cifar-10-batches-py folder "
                                                "(default: the one in $MINICNN_DATA/cifar10/, downloaded if missing)")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()

minicnn.manual_seed(0)
minicnn.set_default_device(args.device)
try:
    archive = args.data or fetch_archive("cifar10")  # from the cache, else downloaded and checked
    x_train, y_train = load_cifar10(archive, "train")  # uint8 (50000, 3, 32, 32), int64 (50000,)
    x_test, y_test = load_cifar10(archive, "test")
except minicnn.DataError as error:  # no archive and no network, a damaged archive: one line, no traceback
    sys.exit(f"cifar10_style.py: {error}")

x_train, y_train = x_train[: args.limit], y_train[: args.limit]
held_out = max(1, len(x_train) // 10)  # validate on the last tenth of the training images; test once, at the end
model = models.cnn(in_channels=3, image_size=32)  # Flatten gives 64 * 4 * 4 = 1024 features
model.summary()
trainer = Trainer(model, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
trainer.fit(x_train[:-held_out], y_train[:-held_out], epochs=args.epochs, batch_size=64, shift=2,
            validation_data=(x_train[-held_out:], y_train[-held_out:]))
result = trainer.evaluate(x_test, y_test)
print(metrics.classification_report(result["confusion_matrix"], CIFAR10_CLASSES))
