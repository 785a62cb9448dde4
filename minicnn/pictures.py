"""Predicting on image files: read any picture, prepare it as the training images were, classify it.

    import minicnn
    minicnn.predict("runs/latest/best.npz", ["seven.png", "photo.jpg"], top=3)
    # [{'file': 'seven.png', 'predictions': [{'class': '7', 'index': 7, 'probability': 0.998}, ...]}, ...]

    minicnn predict runs/latest/best.npz seven.png photo.jpg --top 3 [--json]

Pictures are read with Pillow (the `images` extra: python3 -m pip install -e ".[images]"), in any size,
colour or mode, and turned into what the model was trained on: a 1x28x28 grey image in [0, 1] with light
ink on a black background. The steps (prepare() below), and why each one is there:

 1. Grey: EXIF rotation is applied; a transparent picture is laid on a background that contrasts with
    its opaque pixels (black under light ink, white under dark ink); colour becomes luma (Pillow's "L",
    ITU-R 601-2). Values are scaled to [0, 1].
 2. Polarity: MNIST and Fashion-MNIST are light on dark. The background is the median of the border
    pixels (the outer frame, BORDER_FRACTION of the shorter side wide, at least 1 pixel). If it is
    brighter than mid-grey (0.5), the picture is dark-on-light (ink on paper, a product on white) and is
    inverted.
 3. Contrast: the background level is subtracted and the brightest pixel scaled to 1, so that grey
    paper or faint ink look like the training images' exact black and full white (values clipped to [0, 1]).
 4. Shape, as each dataset was made:
    - MNIST (as NIST's digits were normalised, LeCun et al.): crop the bounding box of the ink (pixels
      above INK_THRESHOLD after step 3), scale it so that its longer side is 20 pixels keeping the aspect
      ratio (Pillow's Lanczos filter, on float pixels, so the edges are anti-aliased), and paste it into
      a black 28x28 image so that its centre of mass lands on pixel (14, 14) (the MNIST test images'
      mean centre of mass is (13.99, 14.01) in row, column pixel indices).
    - Fashion-MNIST (as Zalando's product photos were converted: trim, longest edge to 28, centre):
      crop the bounding box of the pixels that differ from the background (above INK_THRESHOLD),
      scale the longer side to 28 keeping the aspect ratio, and centre it geometrically in 28x28.
      (The dataset's Gaussian sharpening step is not repeated.)
 5. Classes: the digits '0'..'9' for MNIST, data.FASHION_MNIST_CLASSES for Fashion-MNIST. The
    probabilities are the softmax of the model's logits.

Files are read by data.images.read_picture: regular files only, the formats in PICTURE_FORMATS (PNG,
JPEG, BMP, GIF, TIFF, WebP, PPM; no external program runs), at most MAX_PICTURE_PIXELS (64 megapixels)
checked from the header before decoding. A picture that cannot be read (missing, empty, not an image,
another format, too large, damaged, a mode with no grey) raises DataError naming the file; given
several files, predict() and `minicnn predict` report that one line for it and still predict the
others (`minicnn predict` then exits with 1). A blank or fully transparent picture is predicted with
a 'warning' (BLANK_WARNING): the model had nothing to go on.
"""

from pathlib import Path

import numpy as np

from . import data, nn
from . import functional as F
from .data.images import convert_picture, read_picture, require_pillow
from .errors import CheckpointError, DataError, ShapeError, shown
from .runs import read_checkpoint, resolve_checkpoint
from .tensor import Tensor
from .training import Trainer

SIDE = 28  # the models' input: (1, 28, 28)
MNIST_BOX = 20  # NIST digits were scaled to fit a 20x20 box, then centred in 28x28
MNIST_CENTRE = 14  # where the centre of mass is put (row and column index)
INK_THRESHOLD = 0.1  # after the contrast step: brighter than this is ink (bounding box only; pixels are kept)
BORDER_FRACTION = 1 / 28  # the frame whose median is the background: one pixel of a 28x28 image
DATASETS = ("mnist", "fashion-mnist")
BLANK_WARNING = "blank picture (one flat colour, or fully transparent): the predictions are a guess"
NON_FINITE_WARNING = ("the model's outputs are NaN or infinite (its weights diverged in training?): these "
                      "predictions mean nothing, and their probabilities are given as null")


def class_names(dataset):
    """The class names of a dataset, in the order of the model's outputs."""
    return list(data.class_names(dataset))


# ----- reading and preparing one picture ----------------------------------------------------------------

def read_grey(image):
    """A picture as a float32 (H, W) array of luma in [0, 1] (step 1 above).

    image: a path (str or Path), a PIL image, or an array: (H, W) grey or (H, W, 3|4) RGB(A),
    uint8 (0..255) or float (0..1). A file is read by data.images.read_picture (regular files, the
    formats in PICTURE_FORMATS, at most MAX_PICTURE_PIXELS); one that cannot be read, or whose mode
    cannot become grey, raises DataError naming it.
    """
    _, ImageOps = require_pillow()
    if isinstance(image, (str, Path)):
        picture, where = ImageOps.exif_transpose(read_picture(image)), shown(image, quoted=False)
    elif isinstance(image, np.ndarray):
        return _grey_of_array(image)
    else:
        picture, where = image, shown(getattr(image, "filename", "") or "image", quoted=False)
    if picture.width == 0 or picture.height == 0:
        raise DataError(f"{where}: has no pixels")
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        picture = _flatten_transparency(convert_picture(picture, "RGBA", where))
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float pictures: their own range. Widened to float32 by Pillow (4 bytes a pixel,
        # as Pillow holds them), never to float64.
        grey = np.asarray(convert_picture(picture, "F", where), dtype=np.float32)
        low, high = float(grey.min()), float(grey.max())
        if high <= low:
            return np.zeros_like(grey)
        grey = (grey - np.float32(low)) * np.float32(1 / (high - low))
        return np.clip(grey, 0, 1, out=grey)
    return np.asarray(convert_picture(picture, "L", where), dtype=np.float32) / np.float32(255)


def _grey_of_array(array):
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # as "L"
    elif array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"an image array must be (H, W), (1, H, W) or (H, W, 3|4), got shape {array.shape}")
    scale = 255 if np.issubdtype(array.dtype, np.integer) or array.max() > 1 else 1
    return np.clip(array.astype(np.float32) / np.float32(scale), 0, 1)


def _flatten_transparency(rgba):
    """Lay an RGBA picture on black or white, whichever contrasts with its opaque pixels' mean luma."""
    Image, _ = require_pillow()
    pixels = np.asarray(rgba, dtype=np.float32) / 255
    alpha = pixels[..., 3]
    luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ink = float((luma * alpha).sum() / alpha.sum()) if alpha.sum() > 0 else 1.0
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if ink > 0.5 else (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def border_median(grey):
    """The median of the outer frame of a (H, W) picture: its background level."""
    width = max(1, int(round(min(grey.shape) * BORDER_FRACTION)))
    frame = np.ones(grey.shape, dtype=bool)
    frame[width:-width, width:-width] = False
    return float(np.median(grey[frame]))


def light_on_dark(grey):
    """(H, W) in [0, 1] -> the same picture as light ink on a black background (steps 2 and 3 above)."""
    if border_median(grey) > 0.5:  # dark-on-light: ink on paper, a product on white
        grey = 1 - grey
    background = border_median(grey)
    brightest = float(grey.max())
    if brightest - background <= 1e-6:
        return np.zeros_like(grey)  # a blank picture: nothing to see
    return np.clip((grey - background) / (brightest - background), 0, 1).astype(np.float32)


def _ink_box(grey):
    """(top, bottom, left, right) of the pixels above INK_THRESHOLD; None when there are none."""
    rows = np.flatnonzero((grey > INK_THRESHOLD).any(axis=1))
    columns = np.flatnonzero((grey > INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return None
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def _scaled(grey, longer_side):
    """The (H, W) array resized (Lanczos, float pixels) so that its longer side is `longer_side`."""
    Image, _ = require_pillow()
    height, width = grey.shape
    scale = longer_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow: (width, height)
    resized = Image.fromarray(grey.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)  # Lanczos rings a little below 0 and above 1


def _paste(patch, top, left):
    """A black SIDE x SIDE image with patch placed at (top, left); what falls outside is cut off."""
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    height, width = patch.shape
    rows = slice(max(top, 0), min(top + height, SIDE))
    columns = slice(max(left, 0), min(left + width, SIDE))
    canvas[rows, columns] = patch[rows.start - top:rows.stop - top, columns.start - left:columns.stop - left]
    return canvas


def centre_of_mass(grey):
    """(row, column) of the intensity-weighted centre of a (H, W) array, in pixel indices."""
    total = grey.sum()
    rows, columns = np.arange(grey.shape[0]), np.arange(grey.shape[1])
    return float(grey.sum(axis=1) @ rows / total), float(grey.sum(axis=0) @ columns / total)


def prepare(image, dataset="mnist"):
    """A picture prepared as the dataset's images were: float32 (28, 28) in [0, 1], light on dark.

    image: a path, a PIL image or an array (see read_grey). dataset: 'mnist' or 'fashion-mnist'.
    The steps are in this module's docstring. Raises DataError for a file that cannot be read.
    """
    if dataset not in DATASETS:
        raise ValueError(f"predict: images are prepared for {', '.join(DATASETS)}; got dataset {dataset!r}")
    grey = light_on_dark(read_grey(image))
    box = _ink_box(grey)
    if box is None:
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    top, bottom, left, right = box
    cropped = grey[top:bottom, left:right]
    if dataset == "fashion-mnist":
        patch = _scaled(cropped, SIDE)
        height, width = patch.shape
        # An odd margin puts its extra pixel above and to the left, as in most Fashion-MNIST images.
        return _paste(patch, (SIDE - height + 1) // 2, (SIDE - width + 1) // 2)
    patch = _scaled(cropped, MNIST_BOX)
    if patch.sum() == 0:
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    row, column = centre_of_mass(patch)
    return _paste(patch, int(round(MNIST_CENTRE - row)), int(round(MNIST_CENTRE - column)))


# ----- the model ---------------------------------------------------------------------------------------

def load_model(checkpoint, dataset=None):
    """(model, dataset) from a checkpoint path: a .npz, a run folder (its best.npz; runs/latest is followed)
    or an .onnx file.

    The dataset is `dataset` when given, else the one the checkpoint names (a .npz's run settings;
    an .onnx file's metadata when minicnn exported it). model is a callable: batch float32
    (N, 1, 28, 28) -> logits (N, classes) as a NumPy array.
    """
    path = resolve_checkpoint(checkpoint)
    loaded = read_checkpoint(path)
    if dataset is None:
        dataset = loaded.dataset
    return _as_function(loaded.model, path), _checked_dataset(path, dataset)


def _checked_dataset(path, dataset):
    if dataset is None:
        raise ValueError(f"{path} does not say which dataset it was trained on; pass dataset= (--dataset) "
                         f"{' or '.join(DATASETS)}")
    if dataset not in DATASETS:
        raise CheckpointError(f"{path}: was trained on {dataset!r}; predicting on image files supports "
                              f"{' and '.join(DATASETS)} models")
    return dataset


def _as_function(model, where):
    """A minicnn model as a function from NumPy batches to logits; its input must be 1x28x28."""
    shape = tuple(getattr(model, "input_shape", None) or ())
    if shape and shape != (1, SIDE, SIDE):
        raise ShapeError(f"{where}: the model takes {shape} inputs; predicting on image files supports "
                         f"1x{SIDE}x{SIDE} (MNIST, Fashion-MNIST) models")
    outputs = Trainer(model).predict
    layers = getattr(model, "layers", None)
    if layers and isinstance(layers[-1], nn.Softmax):
        # The model ends in Softmax (an ONNX file exported with softmax=True, say): its outputs are
        # probabilities already; their logarithms are logits that the softmax below gives back unchanged.
        return lambda batch: np.log(np.maximum(outputs(batch), np.finfo(np.float64).tiny))
    return outputs


def softmax(logits):
    """(N, classes) logits -> probabilities in float64, by minicnn's stable softmax."""
    return F.softmax(Tensor(np.asarray(logits, dtype=np.float64)), axis=1).numpy()


def classify(model, batch, names, top=3, sources=None):
    """Predictions for prepared images: batch float32 (N, 28, 28) or (N, 1, 28, 28).

    model: a callable batch -> logits (see load_model). names: the class names. Returns one dict per
    image: {'file': source, 'predictions': [{'class', 'index', 'probability'}, ...top of them, best first]},
    plus 'warning': BLANK_WARNING when the prepared image is all black (a blank or fully transparent
    picture: the model still answers, but it has nothing to go on), or NON_FINITE_WARNING when the
    model's outputs are NaN or infinite (their probabilities are then None, which JSON writes as null).
    """
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[:, None]
    if len(batch) == 0:
        return []
    probabilities = softmax(model(batch))
    top = max(1, min(int(top), probabilities.shape[1]))
    sources = sources if sources is not None else [None] * len(batch)
    results = []
    for source, image, row in zip(sources, batch, probabilities):
        best = np.argsort(-row, kind="stable")[:top]
        results.append({"file": source, "predictions": [
            {"class": names[index] if index < len(names) else str(index), "index": int(index),
             "probability": float(row[index]) if np.isfinite(row[index]) else None} for index in best]})
        if not np.isfinite(row).all():
            results[-1]["warning"] = NON_FINITE_WARNING
        elif not image.any():
            results[-1]["warning"] = BLANK_WARNING
    return results


def predict(model, images, top=3, dataset=None, batch_size=256):
    """Class predictions for picture files (or PIL images, or arrays), best `top` classes each.

    model: a checkpoint path (.npz, run folder, .onnx) or a minicnn model (then give dataset=,
    'mnist' or 'fashion-mnist'). images: a path or a list of them (PIL images and arrays work too).
    Returns a list with one dict per image, in order:
        {'file': 'seven.png', 'predictions': [{'class': '7', 'index': 7, 'probability': 0.998}, ...]}
    ('file' is None for an image that is not a path), plus 'warning' (a string) for a blank or fully
    transparent picture (see classify). Given one path, a picture that cannot be read raises
    DataError naming it; in a list, it gets {'file': ..., 'error': '<path>: <reason>', 'predictions': []}
    and the others are still predicted. The preparation is in this module's docstring.
    """
    if isinstance(model, (str, Path)):
        run, dataset = load_model(model, dataset)
    else:
        run, dataset = _as_function(model, type(model).__name__), _checked_dataset("the model", dataset)
    single = isinstance(images, (str, Path)) or isinstance(images, np.ndarray) and images.ndim == 2
    images = [images] if single else list(images)
    names = class_names(dataset)
    results = []
    for start in range(0, len(images), batch_size):
        prepared, sources, errors = [], [], {}
        for position, image in enumerate(images[start:start + batch_size]):
            source = str(image) if isinstance(image, (str, Path)) else None
            try:
                prepared.append(prepare(image, dataset))
                sources.append(source)
            except DataError as error:
                if single:
                    raise
                errors[position] = {"file": source, "error": str(error), "predictions": []}
        predicted = iter(classify(run, np.stack(prepared) if prepared else np.zeros((0, SIDE, SIDE)), names,
                                  top, sources))
        results += [errors[position] if position in errors else next(predicted)
                    for position in range(len(images[start:start + batch_size]))]
    return results
