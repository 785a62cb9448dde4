"""DataLoader: conversion, batching, reproducible order and augmentation, resuming, errors."""

import numpy as np
import pytest

from conftest import to_host
from minicnn.data import DataLoader
from minicnn.data.loader import shift_images
from minicnn.errors import DataError, ShapeError
from minicnn.tensor import Tensor


def _digits(count=10, size=8):
    """uint8 images (count, size, size) whose pixels tell the sample apart, and labels 0..count-1 (mod 10)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(count, size, size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)  # sample i has i in its corner (before any shift)
    return images, np.arange(count) % 10


def _served_order(loader, epoch):
    """The sample ids (from pixel [0, 0], shift=0 only) in the order epoch `epoch` serves them."""
    return np.concatenate([np.rint(to_host(x)[:, 0, 0, 0] * 255).astype(int) for x, _ in loader.batches(epoch)])


def test_batches_are_tensors_of_the_right_shape_dtype_and_device(device):
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=4, device=device)
    x, y = next(iter(loader))
    assert isinstance(x, Tensor) and isinstance(y, Tensor)
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (4,) and y.dtype == np.int64
    assert x.device == device and y.device == device
    assert not x.requires_grad


def test_uint8_is_scaled_to_unit_range_and_labels_kept(device):
    images, labels = _digits(6)
    x, y = next(iter(DataLoader(images, labels, batch_size=6, device=device)))
    np.testing.assert_array_equal(to_host(x)[:, 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(to_host(y), labels)


def test_float_images_with_channels_are_cast_not_scaled():
    images = np.random.default_rng(0).standard_normal((5, 3, 4, 4))  # float64, (N, C, H, W)
    x = next(iter(DataLoader(images, batch_size=5)))
    assert x.shape == (5, 3, 4, 4) and x.dtype == np.float32  # labels=None: x alone
    np.testing.assert_allclose(to_host(x), images.astype(np.float32))


def test_feature_vectors_are_served_as_they_are():
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    x, y = next(iter(DataLoader(features, np.zeros(6, dtype=np.int32), batch_size=6)))
    assert x.shape == (6, 2) and y.dtype == np.int64
    np.testing.assert_array_equal(to_host(x), features)


def test_mean_and_std_standardise_per_channel():
    images = np.full((4, 2, 3, 3), 0.5, dtype=np.float32)
    images[:, 1] = 0.25
    x = next(iter(DataLoader(images, batch_size=4, mean=[0.5, 0.0], std=[1.0, 0.5])))
    np.testing.assert_allclose(to_host(x)[:, 0], 0.0)
    np.testing.assert_allclose(to_host(x)[:, 1], 0.5)


def test_scalar_mean_std_apply_after_scaling():
    images = np.full((2, 4, 4), 255, dtype=np.uint8)
    x = next(iter(DataLoader(images, batch_size=2, mean=0.5, std=0.25)))
    np.testing.assert_allclose(to_host(x), 2.0)


def test_source_array_is_not_converted_or_copied():
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=4)
    assert loader._images.dtype == np.uint8
    assert np.shares_memory(loader._images, images)


@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_last_partial_batch_is_kept_or_dropped(drop_last, sizes):
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=4, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(y) for _, y in loader] == sizes
    assert loader.num_samples == 10


def test_without_shuffle_the_order_is_the_dataset_order():
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=3)
    np.testing.assert_array_equal(_served_order(loader, 0), np.arange(10))
    np.testing.assert_array_equal(_served_order(loader, 5), np.arange(10))


def test_shuffle_serves_every_sample_once_in_the_documented_order():
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=3, shuffle=True, seed=11)
    order = _served_order(loader, 2)
    np.testing.assert_array_equal(order, np.random.default_rng([11, 2]).permutation(10))
    assert sorted(order) == list(range(10))


def test_same_seed_same_order_and_epochs_differ():
    images, labels = _digits(40)
    first = DataLoader(images, labels, batch_size=8, shuffle=True, seed=1)
    second = DataLoader(images, labels, batch_size=8, shuffle=True, seed=1)
    other_seed = DataLoader(images, labels, batch_size=8, shuffle=True, seed=2)
    np.testing.assert_array_equal(_served_order(first, 0), _served_order(second, 0))
    assert not np.array_equal(_served_order(first, 0), _served_order(first, 1))
    assert not np.array_equal(_served_order(first, 0), _served_order(other_seed, 0))


def test_iteration_advances_the_epoch_only_when_complete():
    images, labels = _digits(40)
    loader = DataLoader(images, labels, batch_size=8, shuffle=True)
    assert loader.epoch == 0
    epoch0 = [to_host(y) for _, y in loader]
    assert loader.epoch == 1
    epoch1 = [to_host(y) for _, y in loader]
    assert loader.epoch == 2
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, epoch1))
    for _ in loader:
        break  # an interrupted pass does not count
    assert loader.epoch == 2
    loader.set_epoch(0)
    assert all(np.array_equal(a, to_host(y)) for a, (_, y) in zip(epoch0, loader))


def test_batches_from_start_equal_the_tail_of_the_full_epoch():
    images, labels = _digits(30)
    loader = DataLoader(images, labels, batch_size=4, shuffle=True, seed=5, shift=2)
    full = [(to_host(x), to_host(y)) for x, y in loader.batches(3)]
    tail = [(to_host(x), to_host(y)) for x, y in loader.batches(3, start=5)]
    assert len(tail) == len(full) - 5
    for (full_x, full_y), (tail_x, tail_y) in zip(full[5:], tail):
        np.testing.assert_array_equal(full_x, tail_x)
        np.testing.assert_array_equal(full_y, tail_y)
    assert list(loader.batches(3, start=len(loader))) == []


def test_shift_keeps_shapes_moves_pixels_and_is_reproducible():
    images = np.zeros((64, 9, 9), dtype=np.uint8)
    images[:, 4, 4] = 255  # one bright pixel in the centre of each image
    loader = DataLoader(images, batch_size=64, shift=2, seed=4)
    x = to_host(next(iter(loader.batches(0))))
    assert x.shape == (64, 1, 9, 9)
    assert x.sum(axis=(1, 2, 3)).tolist() == [1.0] * 64  # each bright pixel moved, none lost (|shift| < 5)
    positions = {tuple(np.argwhere(image[0] == 1.0)[0]) for image in x}
    assert len(positions) > 1 and all(2 <= r <= 6 and 2 <= c <= 6 for r, c in positions)
    again = to_host(next(iter(loader.batches(0))))
    np.testing.assert_array_equal(x, again)
    other_epoch = to_host(next(iter(loader.batches(1))))
    assert not np.array_equal(x, other_epoch)


def test_shift_zero_is_identity():
    images, labels = _digits(10)
    x, _ = next(iter(DataLoader(images, labels, batch_size=10, shift=0)))
    np.testing.assert_array_equal(to_host(x)[:, 0], images / np.float32(255))


def test_shift_images_moves_by_the_given_offsets_with_zero_fill():
    images = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4) + 1
    shifted = shift_images(images, np.array([[1, -2], [0, 0]]))
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[1:, :2] = images[0, 0, :3, 2:]
    np.testing.assert_array_equal(shifted[0, 0], expected)
    np.testing.assert_array_equal(shifted[1], images[1])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(labels=np.arange(9)), ShapeError, "10 images but 9 labels"),
    (dict(labels=np.zeros((10, 1), dtype=int)), ShapeError, r"labels must be class indices \(N,\) or, as floats, "
                                                            r"class probabilities \(N, classes\)"),
    (dict(labels=np.full((10, 3), -0.5)), DataError, "class probabilities .* must be finite and non-negative"),
    (dict(labels=np.linspace(0, 1, 10)), DataError, "labels must be integer"),
    (dict(labels=np.arange(10) - 1), DataError, "non-negative"),
    (dict(batch_size=0), ValueError, "batch_size must be at least 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(seed=-1), ValueError, "seed must be at least 0"),
    (dict(batch_size=11, drop_last=True), DataError, "leaves no batch"),
    (dict(mean=[0.1, 0.2]), ShapeError, "one value per channel"),
    (dict(std=0.0), DataError, "std must be positive"),
    (dict(shift=8), ShapeError, "shift=8"),
    (dict(device="tpu"), ValueError, "unknown device"),
])
def test_bad_arguments_are_clear_errors(kwargs, error, message):
    images, labels = _digits(10)
    kwargs = {"labels": labels, **kwargs}
    with pytest.raises(error, match=message):
        DataLoader(images, **kwargs)


@pytest.mark.parametrize("images, error, message", [
    (np.zeros((0, 4, 4), dtype=np.uint8), DataError, "empty"),
    (np.zeros((3, 1, 1, 4, 4), dtype=np.uint8), ShapeError, "got shape"),
    (np.zeros((3, 4, 4), dtype=np.int32), DataError, "uint8"),
])
def test_bad_images_are_clear_errors(images, error, message):
    with pytest.raises(error, match=message):
        DataLoader(images)


def test_resume_arguments_are_checked():
    images, labels = _digits(10)
    loader = DataLoader(images, labels, batch_size=4)
    with pytest.raises(ValueError, match="past the last batch"):
        loader.batches(0, start=4)
    with pytest.raises(ValueError, match="epoch must be at least 0"):
        loader.set_epoch(-1)


def test_no_batch_is_ever_empty():
    for num_samples in range(1, 12):
        for batch_size in range(1, 14):
            for drop_last in (False, True):
                if drop_last and num_samples < batch_size:
                    continue  # refused at construction (test above)
                loader = DataLoader(np.zeros((num_samples, 2, 2), np.uint8), np.zeros(num_samples, np.int64),
                                    batch_size=batch_size, drop_last=drop_last, device="cpu")
                sizes = [x.shape[0] for x, _ in loader]
                assert len(sizes) == len(loader) and min(sizes) >= 1


def test_nonfinite_images_counts_samples_with_nan_or_inf():
    images = np.zeros((10, 3, 3), np.float32)
    images[2, 0, 0], images[5, 1, 1], images[5, 2, 2], images[9, 0, 1] = np.nan, np.inf, np.nan, -np.inf
    assert DataLoader(images, device="cpu").nonfinite_images() == 3
    assert DataLoader(np.zeros((4, 3, 3), np.uint8), device="cpu").nonfinite_images() == 0
