"""Transforms of whole batches of images: NumPy arrays (N, C, H, W) in, arrays out.

Each transform is called as `transform(images, rng)`. The random ones draw from
`rng`, a NumPy Generator; the DataLoader passes one seeded with (seed, epoch,
batch index), so a batch gets the same augmentation whether the run went
straight through or was resumed in the middle (without `rng`, minicnn's seeded
CPU generator, backend.cpu_rng(), is used). Deterministic transforms ignore it.

    train = Compose([Pad(2), RandomCrop(32), RandomHorizontalFlip()])       # uint8 stays uint8
    test = Compose([ToFloat(), Resize(256), CenterCrop(224), Normalize(IMAGENET_MEAN, IMAGENET_STD)])

uint8 batches stay uint8 through the geometric transforms (Resize rounds, as
torchvision does on uint8 tensors and PIL on images), so a DataLoader still
scales them to [0, 1] afterwards; ToFloat does that scaling inside a Compose,
before Normalize, which needs floats.

Resize is bilinear with the antialiasing filter of PIL and of torchvision's
Resize(antialias=True): when shrinking, every output pixel averages all input
pixels under a triangle as wide as the scale factor, instead of the 2 x 2
neighbours plain bilinear reads. When enlarging the two are the same thing.
Resizing is a matrix product along each axis, (out, in) weights built once per
shape, so a batch is resized without a Python loop over images or pixels.
"""

import numbers

import numpy as np

from .. import backend
from ..errors import DataError, ShapeError

# torchvision's ImageNet statistics, the ones its pretrained ResNets were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601-2 luma, as PIL's convert("L") and torchvision's Grayscale use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _checked_batch(name, images):
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ShapeError(f"{name}: expects a batch of images (N, C, H, W) as a NumPy array, got {shape}")
    return images


def _pair(name, size):
    """(height, width) from an int or a pair of ints >= 1."""
    values = (size, size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else tuple(size)
    if len(values) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                                   for v in values):
        raise ValueError(f"{name}: size must be an int >= 1 or (height, width), got {size!r}")
    return int(values[0]), int(values[1])


def _generator(rng):
    return backend.cpu_rng() if rng is None else rng


class Transform:
    """A transform of a batch (N, C, H, W); `random` says whether it draws from the generator."""

    random = False

    def __call__(self, images, rng=None):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Apply `transforms` in order, all drawing from the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for transform in self.transforms:
            if not callable(transform):
                raise TypeError(f"Compose: {transform!r} is not a transform (not callable)")

    @property
    def random(self):
        return any(getattr(transform, "random", True) for transform in self.transforms)

    def __call__(self, images, rng=None):
        rng = _generator(rng) if self.random else rng
        for transform in self.transforms:
            images = transform(images, rng)
        return images

    def __repr__(self):
        return "Compose([" + ", ".join(repr(transform) for transform in self.transforms) + "])"


class ToFloat(Transform):
    """uint8 (N, C, H, W) in 0..255 -> float32 in [0, 1]; floats become float32 unchanged."""

    def __call__(self, images, rng=None):
        images = _checked_batch("ToFloat", images)
        if images.dtype == np.uint8:
            return images.astype(np.float32) / np.float32(255)
        return images.astype(np.float32, copy=False)


class Normalize(Transform):
    """(x - mean) / std per channel, on float images (put ToFloat first for uint8)."""

    def __init__(self, mean, std):
        self.mean = tuple(float(value) for value in np.ravel(mean))
        self.std = tuple(float(value) for value in np.ravel(std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: {len(self.mean)} means but {len(self.std)} standard deviations")
        if not all(value > 0 for value in self.std):
            raise ValueError(f"Normalize: std must be positive, got {self.std}")

    def __call__(self, images, rng=None):
        images = _checked_batch("Normalize", images)
        if images.dtype.kind != "f":
            raise DataError(f"Normalize: expects float images, got dtype {images.dtype}; put ToFloat() before it")
        channels = images.shape[1]
        if len(self.mean) not in (1, channels):
            raise ShapeError(f"Normalize: {len(self.mean)} means for images with {channels} channels "
                             f"(shape {images.shape})")
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (images.astype(np.float32, copy=False) - mean) / std


def _round_to_dtype(values, dtype):
    """Float results back to the input's dtype: uint8 rounded and clipped, floats cast to float32."""
    if dtype == np.uint8:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return values.astype(np.float32, copy=False)


def interpolation_weights(in_size, out_size, antialias=True):
    """The (out_size, in_size) float64 matrix of bilinear weights along one axis.

    Output pixel i is centred at scale * (i + 0.5) in input coordinates (scale = in / out),
    the align_corners=False convention of PIL, torchvision and torch.nn.functional.interpolate.
    Each input pixel j (centred at j + 0.5) gets the triangle filter's value at its distance;
    with antialias and scale > 1 the triangle is stretched to `scale` pixels each side, so
    every input pixel under it counts. Weights beyond the border are dropped and each row
    renormalised to sum to 1, which is what clamping to the edge does for plain bilinear.
    """
    scale = in_size / out_size
    support = scale if antialias and scale > 1 else 1.0
    centres = scale * (np.arange(out_size) + 0.5)
    distance = (np.arange(in_size) + 0.5)[np.newaxis, :] - centres[:, np.newaxis]
    weights = np.maximum(0.0, 1.0 - np.abs(distance) / support)
    return weights / weights.sum(axis=1, keepdims=True)


class Resize(Transform):
    """Bilinear resize of a batch (N, C, H, W).

    size: an int resizes the shorter side to `size` and keeps the aspect ratio (the longer
    side becomes int(size * long / short), as torchvision's Resize(int)); (height, width)
    resizes to exactly that. antialias: average over the whole footprint when shrinking,
    as PIL and torchvision's Resize(antialias=True) do (no effect when enlarging).
    uint8 in -> uint8 out (rounded); float in -> float32 out.
    """

    def __init__(self, size, antialias=True):
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"Resize: size must be >= 1, got {size}")
            self.size = int(size)
        else:
            self.size = _pair("Resize", size)
        self.antialias = bool(antialias)

    def output_size(self, height, width):
        """The (height, width) an image of (height, width) is resized to."""
        if isinstance(self.size, tuple):
            return self.size
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def __call__(self, images, rng=None):
        images = _checked_batch("Resize", images)
        N, C, H, W = images.shape
        out_height, out_width = self.output_size(H, W)
        if (out_height, out_width) == (H, W):
            return images.copy() if images.dtype == np.uint8 else images.astype(np.float32)
        rows = interpolation_weights(H, out_height, self.antialias).astype(np.float32)
        cols = interpolation_weights(W, out_width, self.antialias).astype(np.float32)
        # Two matrix products: along the width (N, C, H, W) @ (W, OW), then the height (OH, H) @ ... .
        resized = np.matmul(rows, np.matmul(images.astype(np.float32, copy=False), cols.T))
        return _round_to_dtype(resized, images.dtype)


class CenterCrop(Transform):
    """The centred (height, width) window of each image; size: an int (square) or (height, width).

    The top-left corner is (round((H - height) / 2), round((W - width) / 2)), as torchvision's.
    """

    def __init__(self, size):
        self.size = _pair("CenterCrop", size)

    def __call__(self, images, rng=None):
        images = _checked_batch("CenterCrop", images)
        height, width = self.size
        H, W = images.shape[2:]
        if height > H or width > W:
            raise ShapeError(f"CenterCrop: crop ({height}, {width}) is larger than the images ({H}, {W}); "
                             "Resize first")
        top, left = int(round((H - height) / 2)), int(round((W - width) / 2))
        return images[:, :, top:top + height, left:left + width].copy()


class Pad(Transform):
    """Pad every side of each image with `padding` pixels of value `fill` (e.g. 28x28 -> 32x32 with 2)."""

    def __init__(self, padding, fill=0):
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"Pad: padding must be an int >= 0, got {padding!r}")
        self.padding, self.fill = int(padding), fill

    def __call__(self, images, rng=None):
        images = _checked_batch("Pad", images)
        p = self.padding
        return np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)


class RandomCrop(Transform):
    """A random (height, width) window of each image, after padding each side with `padding` zeros.

    Each image gets its own corner, drawn uniformly from every position that fits
    (torchvision's RandomCrop(size, padding), drawing one corner per image of the batch).
    """

    random = True

    def __init__(self, size, padding=0):
        self.size = _pair("RandomCrop", size)
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be an int >= 0, got {padding!r}")
        self.padding = int(padding)

    def __call__(self, images, rng=None):
        images = _checked_batch("RandomCrop", images)
        rng = _generator(rng)
        if self.padding:
            p = self.padding
            images = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
        N, C, H, W = images.shape
        height, width = self.size
        if height > H or width > W:
            raise ShapeError(f"RandomCrop: crop ({height}, {width}) is larger than the padded images ({H}, {W})")
        tops = rng.integers(0, H - height + 1, size=N)
        lefts = rng.integers(0, W - width + 1, size=N)
        rows = tops[:, np.newaxis] + np.arange(height)  # (N, height)
        cols = lefts[:, np.newaxis] + np.arange(width)  # (N, width)
        # One gather: the advanced indices come first in the result, (N, height, width, C).
        crops = images[np.arange(N)[:, np.newaxis, np.newaxis], :, rows[:, :, np.newaxis], cols[:, np.newaxis, :]]
        return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability p, each image deciding on its own."""

    random = True

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, images, rng=None):
        images = _checked_batch("RandomHorizontalFlip", images)
        flip = _generator(rng).random(len(images)) < self.p
        flipped = images.copy()
        flipped[flip] = images[flip, :, :, ::-1]
        return flipped


def shift_images(images, offsets):
    """Images (B, C, H, W) each moved by its own offset, with zeros shifted in.

    offsets: int (B, 2), the (down, right) move of each image; negative moves up/left.
    Loops over the distinct offsets, not over the images.
    """
    B, C, H, W = images.shape
    shifted = np.zeros_like(images)
    for dy, dx in np.unique(offsets, axis=0):
        chosen = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        target_rows = slice(max(dy, 0), H + min(dy, 0))
        target_cols = slice(max(dx, 0), W + min(dx, 0))
        source_rows = slice(max(-dy, 0), H - max(dy, 0))
        source_cols = slice(max(-dx, 0), W - max(dx, 0))
        shifted[chosen, :, target_rows, target_cols] = images[chosen, :, source_rows, source_cols]
    return shifted


class RandomShift(Transform):
    """Move each image by its own random offset of up to `max_shift` pixels along each axis, zeros shifted in.

    The DataLoader's `shift=` argument; with the same generator both draw the same offsets.
    """

    random = True

    def __init__(self, max_shift):
        if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Integral) or max_shift < 0:
            raise ValueError(f"RandomShift: max_shift must be an int >= 0, got {max_shift!r}")
        self.max_shift = int(max_shift)

    def __call__(self, images, rng=None):
        images = _checked_batch("RandomShift", images)
        if self.max_shift >= min(images.shape[2:]):
            raise ShapeError(f"RandomShift: max_shift={self.max_shift} needs images larger than the shift, "
                             f"got shape {images.shape}")
        offsets = _generator(rng).integers(-self.max_shift, self.max_shift + 1, size=(len(images), 2))
        return shift_images(images, offsets)


class Grayscale(Transform):
    """RGB (N, 3, H, W) -> luma (N, num_output_channels, H, W), with PIL's and torchvision's weights."""

    def __init__(self, num_output_channels=1):
        if num_output_channels not in (1, 3):
            raise ValueError(f"Grayscale: num_output_channels must be 1 or 3, got {num_output_channels!r}")
        self.num_output_channels = num_output_channels

    def __call__(self, images, rng=None):
        images = _checked_batch("Grayscale", images)
        if images.shape[1] != 3:
            raise ShapeError(f"Grayscale: expects 3 channels (N, 3, H, W), got shape {images.shape}")
        weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32).reshape(1, 3, 1, 1)
        luma = (images.astype(np.float32) * weights).sum(axis=1, keepdims=True)
        luma = _round_to_dtype(luma, images.dtype)
        return np.repeat(luma, self.num_output_channels, axis=1)


class RepeatChannels(Transform):
    """One-channel images (N, 1, H, W) -> (N, channels, H, W) by copying: MNIST into a 3-channel model."""

    def __init__(self, channels=3):
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"RepeatChannels: channels must be an int >= 1, got {channels!r}")
        self.channels = int(channels)

    def __call__(self, images, rng=None):
        images = _checked_batch("RepeatChannels", images)
        if images.shape[1] != 1:
            raise ShapeError(f"RepeatChannels: expects one channel (N, 1, H, W), got shape {images.shape}")
        return np.repeat(images, self.channels, axis=1)
