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

Links to folders are never followed, at any depth (unlike ImageFolder): a class is a real
sub-folder of root (root itself may be a link), and a linked folder inside a class is not
walked. So a link loop cannot hang the walk, a link to `/` cannot walk the file system, and
no picture is loaded twice. A link to a picture file is read like the file.

Every picture file, here and in minicnn.pictures, is read by read_picture: regular files only
(a FIFO or a device is refused before it is read, so nothing blocks), only the formats in
PICTURE_FORMATS (Pillow is told so: no other decoder, and no external program such as
Ghostscript, ever runs on a file), and at most MAX_PICTURE_PIXELS pixels, checked from the
header before any pixel is decoded.
"""

import os
from pathlib import Path

import numpy as np

from ..backend import format_bytes, memory_limit
from ..errors import MAX_SHOWN, DataError, shown
from ..files import open_regular_file

# The extensions ImageFolder accepts (compared in lower case); Pillow reads them all.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The formats Pillow may decode, by its names: all decoded inside Pillow, none hands the file to
# another program (Pillow's EPS reader runs Ghostscript, which is why the list is explicit).
PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# The largest picture read, in pixels (8192 x 8192, a 64-megapixel photo): refused from the header,
# before decoding. Pillow holds at most 4 bytes a pixel, so a decoded picture takes at most 256 MiB.
MAX_PICTURE_PIXELS = 2**26


def require_pillow():
    """(PIL.Image, PIL.ImageOps): Pillow, the `images` extra, imported only when a picture is read; an
    ImportError naming the extra when it is missing."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError('reading pictures needs Pillow: python3 -m pip install -e ".[images]"') from None
    return Image, ImageOps


def decoded_bytes(image):
    """The bytes Pillow takes for an opened picture once decoded: width * height * bytes a pixel."""
    bands = len(image.getbands())
    sample = 2 if image.mode.startswith("I;16") else 4 if image.mode in ("I", "F") else 1
    per_pixel = 4 if bands == 3 and sample == 1 else bands * sample  # Pillow pads RGB to 4 bytes
    return image.width * image.height * per_pixel


def check_picture_size(image, path):
    """DataError naming `path` when an opened (not yet decoded) picture is over MAX_PICTURE_PIXELS
    or its decoded size over backend.memory_limit()."""
    pixels, needed = image.width * image.height, decoded_bytes(image)
    if pixels > MAX_PICTURE_PIXELS or needed > memory_limit():
        raise DataError(f"{shown(path, quoted=False)}: a {image.width}x{image.height} {image.mode} picture "
                        f"({pixels:,} pixels, {format_bytes(needed)} decoded) is over the limit of "
                        f"{MAX_PICTURE_PIXELS:,} pixels (minicnn.data.images.MAX_PICTURE_PIXELS) or "
                        f"{format_bytes(memory_limit())} (backend.set_memory_limit); shrink it first")


def read_picture(path):
    """The picture file at `path`, decoded by Pillow: a PIL image in the file's own mode (size as stored).

    Refused with DataError '<path>: <reason>' (one line): a missing file, a folder, anything that is
    not a regular file (a FIFO, a device: checked on the opened descriptor, never read), an empty
    file, a format outside PICTURE_FORMATS, a picture over MAX_PICTURE_PIXELS, a damaged file.
    """
    Image, _ = require_pillow()
    where = shown(path, quoted=False)
    try:
        file = open_regular_file(path, "a picture", DataError)
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except OSError as error:
        raise DataError(f"{where}: cannot be opened ({error.strerror})") from None
    with file:
        if os.fstat(file.fileno()).st_size == 0:
            raise DataError(f"{where}: empty file")
        try:
            image = Image.open(file, formats=PICTURE_FORMATS)
        except Image.UnidentifiedImageError:
            raise DataError(f"{where}: not a readable image (its content is none of the formats "
                            f"minicnn reads: {', '.join(PICTURE_FORMATS)})") from None
        except Exception as error:  # a damaged header: Pillow's plugins raise many kinds of error
            raise DataError(f"{where}: not a readable image ({_reason(error)})") from None
        check_picture_size(image, path)
        try:
            image.load()  # decodes the whole file now, so that a truncated one fails here and names itself
        except Exception as error:  # OSError, SyntaxError, EOFError, MemoryError, ...: the file is damaged
            raise DataError(f"{where}: not a readable image ({_reason(error)})") from None
    return image


def convert_picture(image, mode, path):
    """image.convert(mode), with DataError naming `path` for a mode Pillow cannot convert (LAB to RGB, ...)."""
    try:
        return image.convert(mode)
    except (ValueError, OSError, MemoryError) as error:
        raise DataError(f"{shown(path, quoted=False)}: cannot convert its {image.mode} pixels to {mode} "
                        f"({_reason(error)})") from None


def _reason(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return repr(text[:MAX_SHOWN])[1:-1]  # escaped, one line


def find_classes(root):
    """The sorted names of the sub-folders of `root`: the class names, in label order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"load_image_folder: {root} is not a folder")
    # A class is a real folder: links to folders are not followed (see the module's docstring).
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False))
    if not names:
        raise DataError(f"load_image_folder: {shown(root, quoted=False)} has no sub-folders; expected one "
                        "sub-folder per class (root/<class>/<image>.png; links to folders are not followed)")
    return names


def image_files(root, class_names):
    """[(path, label)]: every picture under root/<class>, in ImageFolder's order (class, then sorted path).

    Links to folders are not followed (os.walk's followlinks=False): each real folder is walked once.
    """
    root = Path(root)
    samples = []
    for label, name in enumerate(class_names):
        found = []
        for folder, _, files in sorted(os.walk(root / name, followlinks=False)):
            found += [Path(folder) / file for file in sorted(files) if file.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DataError(f"load_image_folder: class folder {shown(root / name, quoted=False)} holds no pictures "
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
    Image, _ = require_pillow()
    height, width = _size_pair(image_size)
    mode = {"rgb": "RGB", "grayscale": "L"}[color_mode]
    try:
        image = convert_picture(read_picture(path), mode, path)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)  # Pillow: (width, height)
        pixels = np.asarray(image, dtype=np.uint8)
    except DataError as error:
        raise DataError(f"load_image_folder: cannot read picture {error}") from None
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
    require_pillow()  # the missing extra is named before the folder is walked
    class_names = find_classes(root)
    samples = image_files(root, class_names)
    images = np.empty((len(samples), 3 if color_mode == "rgb" else 1, height, width), dtype=np.uint8)
    for index, (path, _) in enumerate(samples):
        images[index] = read_image(path, (height, width), color_mode)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return images, labels, tuple(class_names)
