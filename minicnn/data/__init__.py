"""Data for minicnn: IDX files read and written, MNIST and Fashion-MNIST fetched and checked by
SHA-256 into a local cache, CIFAR-10's archive fetched and checked by its published MD5 and read without unpickling, folders of pictures (one per class), batch transforms (resize, crops, flips,
normalisation), and a DataLoader that turns NumPy arrays into reproducible, resumable batches of Tensors.
"""

from .cifar import CIFAR10_CLASSES, load_cifar10
from .datasets import (
    ARCHIVES, DATASETS, FASHION_MNIST_CLASSES, MNIST_CLASSES, ArchiveSpec, DatasetSpec, class_names, data_dir, fetch,
    fetch_archive, load_dataset, load_fashion_mnist, load_mnist,
)
from .idx import read_idx, write_idx
from .images import load_image_folder
from .loader import DataLoader
from .transforms import (
    IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, Grayscale, Normalize, Pad, RandomCrop, RandomHorizontalFlip,
    RandomShift, RepeatChannels, Resize, ToFloat, Transform,
)

__all__ = [
    "ARCHIVES", "ArchiveSpec", "CIFAR10_CLASSES", "DATASETS", "DataLoader", "DatasetSpec", "fetch_archive", "FASHION_MNIST_CLASSES", "class_names", "MNIST_CLASSES", "data_dir", "fetch", "load_cifar10",
    "load_dataset", "load_fashion_mnist", "load_image_folder", "load_mnist", "read_idx", "write_idx",
    # transforms of whole batches (N, C, H, W)
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCrop", "Compose", "Grayscale", "Normalize", "Pad", "RandomCrop",
    "RandomHorizontalFlip", "RandomShift", "RepeatChannels", "Resize", "ToFloat", "Transform",
]
