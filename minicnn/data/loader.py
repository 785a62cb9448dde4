"""DataLoader: (images, labels) NumPy arrays in, batches of Tensors out.

The order of every epoch and the augmentation of every batch come from their
own random generators, seeded with (seed, epoch) and (seed, epoch, batch), so
any batch can be made again on its own: training can resume in the middle of
an epoch and see exactly the batches it would have seen.
"""

import numbers

import numpy as np

from .. import backend
from ..errors import DataError, ShapeError
from ..tensor import Tensor
from .transforms import shift_images


class DataLoader:
    """Serve a dataset in batches of Tensors on a device.

    images: NumPy array (N, H, W) or (N, C, H, W), or (N, F) for data that are not
        images. uint8 is scaled to float32 in [0, 1]; floats are cast to float32;
        (N, H, W) gets a channel axis, (N, 1, H, W). The array is kept as it is
        (a uint8 dataset stays uint8 in memory); each batch is converted alone.
    labels: integer array (N,) of class indices, or float array (N, C) of class probabilities (one-hot
        or soft labels, for F.cross_entropy), or None to serve images only.
    batch_size: samples per batch; the last batch is smaller unless drop_last.
    shuffle: a new order each epoch, np.random.default_rng([seed, epoch]).permutation(N).
    seed: non-negative int that fixes every order and every augmentation.
    shift: move each image by its own random offset of up to `shift` pixels along
        each axis, filling with zeros (a cheap augmentation for digits).
    transform: a batch transform from minicnn.data.transforms (or any callable
        (images (B, C, H, W), rng) -> images), applied to each batch in the source dtype,
        after `shift`, with the batch's generator np.random.default_rng([seed, epoch, batch]);
        a uint8 result is then scaled to [0, 1] as above, a float one cast to float32.
    mean, std: optional standardisation after scaling, (x - mean) / std; a number,
        or one value per channel (per feature for (N, F) data).
    device: 'cpu' or 'gpu'; default: minicnn's default device when a batch is made.
    shard: (rank, size) to serve only rank `rank`'s part of each batch in data-parallel training
        (see `shard_bounds`): every rank draws the same order from `seed`, the epoch is cut into
        global batches of size x batch_size, and each rank takes its consecutive part of each.
        The ranks together serve every sample exactly once per epoch, in the same number of
        batches. len() is that number; num_samples stays the whole dataset's count.

    Iterating yields (x, y): x float32 (B, C, H, W) (or (B, F)), y int64 (B,) (float32 (B, C) for probabilities);
    or x alone when labels is None. Each full iteration serves epoch `self.epoch`
    and then advances it by one.
    """

    def __init__(self, images, labels=None, batch_size=64, shuffle=False, seed=0, drop_last=False, shift=0,
                 mean=None, std=None, device=None, transform=None, shard=None):
        self._images = _checked_images(images)
        self.num_samples = len(self._images)
        self._labels = None if labels is None else _checked_labels(labels, self.num_samples)
        self.batch_size = _checked_count("batch_size", batch_size, minimum=1)
        self.seed = _checked_count("seed", seed, minimum=0)
        self.shift = _checked_count("shift", shift, minimum=0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable (images, rng) -> images, got {transform!r}")
        self.transform = transform
        self.device = None if device is None else backend.check_device_name(device)
        self.shard = _checked_shard(shard, self.num_samples)
        feature_shape = self._images.shape[1:]
        self._mean = _broadcastable_stat("mean", mean, feature_shape)
        self._std = _broadcastable_stat("std", std, feature_shape)
        if self._std is not None and np.any(self._std <= 0):
            raise DataError(f"DataLoader: std must be positive, got {std}")
        if self.shift and (self._images.ndim != 4 or self.shift >= min(feature_shape[1:])):
            raise ShapeError(
                f"DataLoader: shift={self.shift} needs images (N, C, H, W) larger than the shift, "
                f"got shape {self._images.shape}"
            )
        if len(self) == 0:
            raise DataError(
                f"DataLoader: drop_last=True with {self.num_samples} samples and batch_size={self.batch_size} "
                "leaves no batch at all"
            )
        self.epoch = 0
        self._nonfinite = None  # nonfinite_images(), once counted

    def __len__(self):
        """The number of batches in one epoch."""
        if self.shard is not None:
            return len(shard_bounds(self.num_samples, self.batch_size, *self.shard, drop_last=self.drop_last))
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __repr__(self):
        return (
            f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, shift={self.shift}, epoch={self.epoch}"
            + (f", transform={self.transform!r})" if self.transform is not None else ")")
        )

    def nonfinite_images(self):
        """How many samples hold a NaN or an infinity (0 for uint8 data); counted once, then remembered."""
        if self._nonfinite is None:
            images, count = self._images, 0
            if images.dtype.kind == "f":
                for start in range(0, len(images), 4096):  # in blocks: the test allocates one bool per value
                    block = images[start:start + 4096].reshape(min(4096, len(images) - start), -1)
                    count += int(np.count_nonzero(~np.isfinite(block).all(axis=1)))
            self._nonfinite = count
        return self._nonfinite

    def set_epoch(self, epoch):
        """Make the next iteration serve epoch `epoch` (e.g. when resuming training)."""
        self.epoch = _checked_count("epoch", epoch, minimum=0)

    def order(self, epoch):
        """The sample indices (N,) in the order epoch `epoch` serves them."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __iter__(self):
        epoch = self.epoch
        yield from self.batches(epoch)
        self.epoch = epoch + 1  # only a completed pass counts as an epoch

    def batches(self, epoch, start=0):
        """The batches of epoch `epoch`, from batch index `start` on (to resume mid-epoch)."""
        epoch = _checked_count("epoch", epoch, minimum=0)
        start = _checked_count("start", start, minimum=0)
        if start > len(self):
            raise ValueError(f"DataLoader.batches: start={start} is past the last batch ({len(self)} per epoch)")
        return self._batches(epoch, start)

    def _batches(self, epoch, start):
        order = self.order(epoch)
        if self.shard is not None:
            bounds = shard_bounds(self.num_samples, self.batch_size, *self.shard, drop_last=self.drop_last)
            for index in range(start, len(bounds)):
                yield self._make_batch(order[slice(*bounds[index])], epoch, index)
            return
        for index in range(start, len(self)):
            chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
            yield self._make_batch(chosen, epoch, index)

    def _make_batch(self, chosen, epoch, index):
        x = self._images[chosen]  # a copy of this batch only, still in the source dtype
        rng = np.random.default_rng([self.seed, epoch, index])  # this batch's augmentation, and only its
        if self.shift:
            offsets = rng.integers(-self.shift, self.shift + 1, size=(len(x), 2))
            x = shift_images(x, offsets)
        if self.transform is not None:
            x = self.transform(x, rng)
            if not isinstance(x, np.ndarray) or (x.dtype != np.uint8 and x.dtype.kind != "f"):
                raise DataError(f"DataLoader: transform {self.transform!r} must return a uint8 or float NumPy "
                                f"array, got {type(x).__name__} {getattr(x, 'dtype', '')}")
        x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
        if self._mean is not None:
            x -= self._mean
        if self._std is not None:
            x /= self._std
        device = self.device or backend.default_device()
        x = Tensor(backend.to_device(x, device))
        if self._labels is None:
            return x
        return x, Tensor(backend.to_device(self._labels[chosen], device))


def shard_bounds(num_samples, batch_size, rank, size, drop_last=False):
    """[(start, stop), ...]: where rank `rank` of `size` finds its batches in an epoch's order.

    The order (num_samples indices, the same on every rank) is cut into global batches of
    size x batch_size; each global batch is split into `size` consecutive parts whose lengths
    differ by at most one (the first ranks get the extra samples). The remainder rule: a last
    global batch with fewer samples than ranks joins the one before it, so no rank gets an empty
    batch; with drop_last a last global batch shorter than size x batch_size is left out. So
    every rank has the same number of batches, and the ranks together cover each sample once.
    """
    global_size = size * batch_size
    starts = list(range(0, num_samples, global_size))
    if drop_last and num_samples % global_size:
        starts = starts[:-1]
    elif len(starts) > 1 and num_samples - starts[-1] < size:
        starts = starts[:-1]  # the short last global batch joins the one before
    bounds = []
    for number, start in enumerate(starts):
        stop = starts[number + 1] if number + 1 < len(starts) else (start + global_size if drop_last else num_samples)
        share, extra = divmod(stop - start, size)
        first = start + rank * share + min(rank, extra)
        bounds.append((first, first + share + (rank < extra)))
    return bounds



def _checked_images(images):
    images = np.asarray(images)
    if images.ndim not in (2, 3, 4):
        raise ShapeError(
            f"DataLoader: images must be (N, H, W), (N, C, H, W) or (N, F), got shape {images.shape}"
        )
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise DataError(
            f"DataLoader: images must be uint8 (scaled to [0, 1]) or floating point, got dtype {images.dtype}"
        )
    if len(images) == 0:
        raise DataError(f"DataLoader: the dataset is empty (images of shape {images.shape})")
    if images.ndim == 3:
        images = images[:, np.newaxis]  # (N, H, W) -> (N, 1, H, W), a view
    return images


def _checked_labels(labels, num_samples):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.dtype.kind == "f":  # class probabilities (N, C): one-hot or soft labels
        if len(labels) != num_samples:
            raise ShapeError(f"DataLoader: {num_samples} images but {len(labels)} labels")
        if not np.isfinite(labels).all() or labels.min() < 0:
            raise DataError("DataLoader: class probabilities (N, C) must be finite and non-negative")
        return labels.astype(np.float32)
    if labels.ndim != 1:
        raise ShapeError(f"DataLoader: labels must be class indices (N,) or, as floats, class probabilities "
                         f"(N, classes) such as one-hot labels; got shape {labels.shape} of {labels.dtype}")
    if len(labels) != num_samples:
        raise ShapeError(f"DataLoader: {num_samples} images but {len(labels)} labels")
    if labels.dtype.kind not in "iu":
        raise DataError(f"DataLoader: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise DataError(f"DataLoader: labels must be non-negative class indices, found {labels.min()}")
    return labels.astype(np.int64)


def _checked_shard(shard, num_samples):
    if shard is None:
        return None
    if len(shard) != 2:
        raise ValueError(f"DataLoader: shard must be (rank, size), got {shard!r}")
    rank, size = (_checked_count("shard rank", shard[0], minimum=0), _checked_count("shard size", shard[1], minimum=1))
    if rank >= size:
        raise ValueError(f"DataLoader: shard rank must be below the shard size, got rank {rank} of size {size}")
    if num_samples < size:
        raise DataError(f"DataLoader: {num_samples} samples cannot be shared among {size} ranks (each needs one)")
    return rank, size


def _checked_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"DataLoader: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"DataLoader: {name} must be at least {minimum}, got {value}")
    return int(value)


def _broadcastable_stat(name, value, feature_shape):
    """`value` (a number, or one per channel / feature) shaped to broadcast against a batch."""
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 0:
        return value
    channels = feature_shape[0]
    if value.shape != (channels,):
        raise ShapeError(
            f"DataLoader: {name} must be a number or have one value per channel ({channels},), got shape {value.shape}"
        )
    return value.reshape((1, channels) + (1,) * (len(feature_shape) - 1))
