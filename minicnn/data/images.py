"""A folder of pictures, one sub-folder per class, read into arrays (torchvision's ImageFolder layout).

    root/cat/001.jpg
    root/cat/002.png
    root/dog/a.jpeg
    root/dog/more/b.png        (files in deeper folders belong to the class of their top folder)

Class names are the sub-folders' names sorted as Python sorts strings, and the
label of a picture is its class's index in that list: the same order as
torchvision's ImageFolder and Keras' image_dataset_from_directory, so a model
trained on either names its outputs in this order. Files are read with Pillow
(the `images` extra), converted to RGB (or grey) and resized to one size with
Pillow's antialiased bilinear filter. Files whose extension is not a picture's
are skipped, as ImageFolder skips them; a picture that cannot be read is an
error that names it, never skipped.
"""

import os
from pathlib import Path

import numpy as np

from ..errors import DataError

# The extensions ImageFolder accepts (compared in lower case); Pillow reads them all.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError('load_image_folder needs Pillow: python3 -m pip install -e ".[images]"') from None
    return Image, UnidentifiedImageError


def find_classes(root):
    """The sorted names of the sub-folders of `root`: the class names, in label order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"load_image_folder: {root} is not a folder")
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not names:
        raise DataError(f"load_image_folder: {root} has no sub-folders; expected one sub-folder per class "
                        "(root/<class>/<image>.png)")
    return names


def image_files(root, class_names):
    """[(path, label)]: every picture under root/<class>, in ImageFolder's order (class, then sorted path)."""
    root = Path(root)
    samples = []
    for label, name in enumerate(class_names):
        found = []
        for folder, _, files in sorted(os.walk(root / name, followlinks=True)):
            found += [Path(folder) / file for file in sorted(files) if file.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError(f"load_image_folder: class folder {root / name} holds no pictures "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, label) for path in found]
    return samples


def _size_pair(image_size):
    values = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"load_image_folder: image_size must be an int >= 1 or (height, width), got {image_size!r}")
    return values


def read_image(path, image_size, color_mode="rgb"):
    """One picture as uint8 (C, height, width): C = 3 for 'rgb', 1 for 'grayscale'. DataError names a bad file."""
    Image, UnidentifiedImageError = _pillow()
    height, width = _size_pair(image_size)
    mode = {"rgb": "RGB", "grayscale": "L"}[color_mode]
    try:
        with Image.open(path) as image:
            image = image.convert(mode)  # decodes the whole file: a truncated one fails here
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)  # Pillow: (width, height)
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"load_image_folder: cannot read picture {path}: {exc}") from None
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_image_folder(root, image_size, color_mode="rgb"):
    """(images, labels, class_names) of a folder with one sub-folder per class.

    image_size: an int (square) or (height, width); every picture is resized to it.
    color_mode: 'rgb' (3 channels) or 'grayscale' (1).
    Returns images uint8 (N, C, height, width), labels int64 (N,) and class_names, a tuple
    of the sub-folder names sorted (label i is class_names[i]).
    """
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"load_image_folder: color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    height, width = _size_pair(image_size)
    _pillow()  # the missing extra is named before the folder is walked
    class_names = find_classes(root)
    samples = image_files(root, class_names)
    images = np.empty((len(samples), 3 if color_mode == "rgb" else 1, height, width), dtype=np.uint8)
    for index, (path, _) in enumerate(samples):
        images[index] = read_image(path, (height, width), color_mode)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return images, labels, tuple(class_names)
