"""minicnn.data.transforms: batch transforms against torch's interpolate and PIL, and their seeding."""

import numpy as np
import pytest

from minicnn.data import (
    IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, DataLoader, Grayscale, Normalize, Pad, RandomCrop,
    RandomHorizontalFlip, RandomShift, RepeatChannels, Resize, ToFloat,
)
from minicnn.data.transforms import interpolation_weights, shift_images
from minicnn.errors import DataError, ShapeError


def _images(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.random(shape).astype(dtype)


# ----- Resize ------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_size, out_size", [(32, 96), (50, 17), (64, 28), (7, 7)])
def test_interpolation_rows_sum_to_one(in_size, out_size):
    for antialias in (True, False):
        weights = interpolation_weights(in_size, out_size, antialias)
        assert weights.shape == (out_size, in_size)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        assert (weights >= 0).all()


@pytest.mark.parametrize("in_shape, out_shape", [((8, 8), (32, 32)), ((30, 40), (17, 23)), ((28, 28), (12, 40))])
def test_resize_equals_torch_interpolate(in_shape, out_shape):
    """antialias=True is torch's antialiased bilinear; antialias=False its plain bilinear (align_corners=False)."""
    torch = pytest.importorskip("torch")
    images = _images((2, 3) + in_shape)
    for antialias in (True, False):
        ours = Resize(out_shape, antialias=antialias)(images)
        reference = torch.nn.functional.interpolate(torch.from_numpy(images), size=out_shape, mode="bilinear",
                                                    align_corners=False, antialias=antialias).numpy()
        assert ours.dtype == np.float32 and ours.shape == (2, 3) + out_shape
        np.testing.assert_allclose(ours, reference, atol=1e-5)  # float32 sums in another order


def test_antialias_matters_only_when_shrinking():
    images = _images((1, 1, 12, 12))
    np.testing.assert_array_equal(Resize(40)(images), Resize(40, antialias=False)(images))
    assert np.abs(Resize(5)(images) - Resize(5, antialias=False)(images)).max() > 0.05


def test_resize_uint8_stays_uint8_and_is_close_to_pil():
    """On uint8, Resize rounds; PIL (what torchvision's Resize runs on PIL images) uses 8-bit fixed point."""
    Image = pytest.importorskip("PIL.Image")
    images = _images((1, 3, 20, 30), dtype=np.uint8)
    for size in ((60, 90), (9, 13)):
        ours = Resize(size)(images)
        pil = Image.fromarray(images[0].transpose(1, 2, 0)).resize(size[::-1], Image.BILINEAR)
        reference = np.asarray(pil).transpose(2, 0, 1)
        assert ours.dtype == np.uint8
        assert np.abs(ours[0].astype(int) - reference).max() <= 1  # one grey level at most


def test_resize_int_matches_the_shorter_side_like_torchvision():
    assert Resize(256).output_size(32, 32) == (256, 256)
    assert Resize(256).output_size(375, 500) == (256, 341)  # int(256 * 500 / 375) = 341
    assert Resize(256).output_size(500, 375) == (341, 256)
    assert Resize(64)(_images((2, 3, 10, 20))).shape == (2, 3, 64, 128)


# ----- crops, flips, shifts ------------------------------------------------------------------------------
def test_center_crop_takes_torchvisions_window():
    images = np.arange(2 * 1 * 7 * 8, dtype=np.float32).reshape(2, 1, 7, 8)
    cropped = CenterCrop((4, 5))(images)
    top, left = round(3 / 2), round(3 / 2)  # 2 and 2: Python rounds half to even, as torchvision does
    np.testing.assert_array_equal(cropped, images[:, :, top:top + 4, left:left + 5])
    with pytest.raises(ShapeError, match="larger than the images"):
        CenterCrop(9)(images)


def test_random_crop_windows_come_from_the_padded_image():
    images = _images((16, 2, 6, 6), dtype=np.uint8)
    crops = RandomCrop(6, padding=2)(images, np.random.default_rng(3))
    assert crops.shape == images.shape and crops.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    tops = np.random.default_rng(3).integers(0, 5, size=16)
    lefts = np.random.default_rng(3).integers(0, 5, size=32)[16:]  # the same draws, in the same order
    for n in range(16):
        np.testing.assert_array_equal(crops[n], padded[n, :, tops[n]:tops[n] + 6, lefts[n]:lefts[n] + 6])
    assert len({(t, l) for t, l in zip(tops, lefts)}) > 1


def test_horizontal_flip_mirrors_the_drawn_images_only():
    images = _images((64, 1, 3, 4))
    flipped = RandomHorizontalFlip(0.5)(images, np.random.default_rng(1))
    chosen = np.random.default_rng(1).random(64) < 0.5
    np.testing.assert_array_equal(flipped[chosen], images[chosen, :, :, ::-1])
    np.testing.assert_array_equal(flipped[~chosen], images[~chosen])
    assert 10 < chosen.sum() < 54
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(images), images[..., ::-1])


def test_random_shift_draws_the_offsets_the_loader_draws():
    images = _images((8, 1, 10, 10))
    offsets = np.random.default_rng(5).integers(-2, 3, size=(8, 2))
    np.testing.assert_array_equal(RandomShift(2)(images, np.random.default_rng(5)), shift_images(images, offsets))


# ----- values ---------------------------------------------------------------------------------------
def test_to_float_normalize_pad_and_channels():
    images = _images((2, 3, 4, 4), dtype=np.uint8)
    as_float = ToFloat()(images)
    np.testing.assert_allclose(as_float, images / 255.0, rtol=1e-6)
    normalized = Normalize(IMAGENET_MEAN, IMAGENET_STD)(as_float)
    expected = (images / 255.0 - np.reshape(IMAGENET_MEAN, (1, 3, 1, 1))) / np.reshape(IMAGENET_STD, (1, 3, 1, 1))
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="ToFloat"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(images)
    with pytest.raises(ShapeError, match="3 means for images with 1 channels"):
        Normalize(IMAGENET_MEAN, IMAGENET_STD)(as_float[:, :1])
    assert Pad(2)(_images((1, 1, 28, 28))).shape == (1, 1, 32, 32)
    grey = Grayscale()(images)
    np.testing.assert_allclose(grey[:, 0], np.rint(np.tensordot([0.299, 0.587, 0.114], images, axes=([0], [1])))
                               .astype(np.uint8), atol=1)
    np.testing.assert_array_equal(RepeatChannels(3)(grey), np.repeat(grey, 3, axis=1))
    with pytest.raises(ShapeError, match="one channel"):
        RepeatChannels(3)(images)


def test_the_tutorial_pipeline_shapes():
    pipeline = Compose([ToFloat(), Resize(256), CenterCrop(224), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out = pipeline(_images((2, 3, 32, 32), dtype=np.uint8))
    assert out.shape == (2, 3, 224, 224) and out.dtype == np.float32
    assert "Resize(size=256" in repr(pipeline)


# ----- the DataLoader ----------------------------------------------------------------------------------
def _augmenting_loader(images, labels):
    augment = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip()])
    return DataLoader(images, labels, batch_size=5, shuffle=True, seed=11, transform=augment)


def test_loader_augments_reproducibly_and_a_resumed_epoch_sees_the_same_batches():
    images, labels = _images((23, 3, 8, 8), dtype=np.uint8), np.arange(23) % 4
    straight = [x.numpy() for x, _ in _augmenting_loader(images, labels).batches(epoch=2)]
    resumed = [x.numpy() for x, _ in _augmenting_loader(images, labels).batches(epoch=2, start=3)]
    for a, b in zip(straight[3:], resumed):
        np.testing.assert_array_equal(a, b)
    assert len(resumed) == len(straight) - 3
    other_epoch = [x.numpy() for x, _ in _augmenting_loader(images, labels).batches(epoch=3)]
    assert not all(np.array_equal(a, b) for a, b in zip(straight, other_epoch))
    assert straight[0].dtype == np.float32 and straight[0].max() <= 1.0  # uint8 result scaled after the transform


def test_loader_transform_random_shift_equals_the_shift_argument():
    images = _images((12, 1, 9, 9), dtype=np.uint8)
    by_argument = DataLoader(images, batch_size=4, shuffle=True, seed=2, shift=2)
    by_transform = DataLoader(images, batch_size=4, shuffle=True, seed=2, transform=RandomShift(2))
    for a, b in zip(by_argument.batches(1), by_transform.batches(1)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_loader_refuses_a_transform_that_returns_something_else():
    loader = DataLoader(_images((4, 1, 5, 5)), batch_size=2, transform=lambda images, rng: images.tolist())
    with pytest.raises(DataError, match="must return a uint8 or float NumPy array"):
        next(iter(loader))
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(_images((4, 1, 5, 5)), transform="flip")


def test_a_run_interrupted_mid_epoch_resumes_with_the_same_augmentations(tmp_path, capsys):
    """Ctrl-C in epoch 2, resume: the weights equal an uninterrupted run's, crops and flips included."""
    import os
    import signal

    import minicnn
    from minicnn import functional as F
    from minicnn import nn, optim
    from minicnn.training import Trainer

    images, labels = _images((48, 1, 8, 8), dtype=np.uint8), np.arange(48) % 3

    def trainer(loss=F.cross_entropy):
        minicnn.manual_seed(0)
        model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(4 * 6 * 6, 3))
        return Trainer(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), loss=loss)

    def loader():
        augment = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip()])
        return DataLoader(images, labels, batch_size=8, shuffle=True, seed=3, transform=augment)

    calls = []

    def interrupting_loss(logits, targets):  # SIGINT during epoch 2's 3rd step (6 steps per epoch)
        calls.append(1)
        if len(calls) == 9:
            os.kill(os.getpid(), signal.SIGINT)
        return F.cross_entropy(logits, targets)

    uninterrupted = trainer()
    uninterrupted.fit(loader(), epochs=2, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        trainer(interrupting_loss).fit(loader(), epochs=2, checkpoint_dir=tmp_path, verbose=0)
    capsys.readouterr()
    resumed = trainer()
    assert resumed.resume(tmp_path / "last.npz").state["step"] == 3
    resumed.fit(loader(), epochs=2, verbose=0)
    for (name, expected), (_, got) in zip(uninterrupted.model.state_dict().items(),
                                          resumed.model.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=name)
