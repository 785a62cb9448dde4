"""minicnn.data.load_image_folder: ImageFolder's layout and class order, PNG and JPEG, bad files named."""

import numpy as np
import pytest

from minicnn.data import load_image_folder
from minicnn.errors import DataError

Image = pytest.importorskip("PIL.Image")


def _write(path, colour, size=(6, 4), format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=format)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pictures"
    _write(root / "dog" / "b.png", (0, 0, 255))
    _write(root / "dog" / "a.JPG", (0, 255, 0), format="JPEG")
    _write(root / "Zebra" / "deep" / "z.png", (10, 20, 30))
    _write(root / "cat" / "1.jpeg", (255, 0, 0), size=(20, 30), format="JPEG")
    (root / "cat" / "notes.txt").write_text("not a picture, skipped as ImageFolder skips it")
    return root


def test_classes_sorted_like_imagefolder_and_pictures_resized(folder):
    images, labels, class_names = load_image_folder(folder, 8)
    assert class_names == ("Zebra", "cat", "dog")  # sorted(): upper case first, as torchvision sorts
    assert images.shape == (4, 3, 8, 8) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 1, 2, 2])
    np.testing.assert_array_equal(images[0, :, 0, 0], [10, 20, 30])  # Zebra/deep/z.png
    assert abs(int(images[1, 0, 4, 4]) - 255) <= 2 and images[1, 1:, 4, 4].max() <= 3  # red cat, JPEG
    assert images[2, 1, 4, 4] > 250  # dog/a.JPG (green) sorts before dog/b.png
    np.testing.assert_array_equal(images[3, :, 0, 0], [0, 0, 255])


def test_grayscale_and_rectangular_size(folder):
    images, _, _ = load_image_folder(folder, (5, 7), color_mode="grayscale")
    assert images.shape == (4, 1, 5, 7)


def test_a_corrupt_picture_is_named(folder):
    bad = folder / "cat" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"cannot read picture .*2\.png"):
        load_image_folder(folder, 8)


def test_a_truncated_jpeg_is_named(folder):
    whole = (folder / "cat" / "1.jpeg").read_bytes()
    (folder / "cat" / "3.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"3\.jpg"):
        load_image_folder(folder, 8)


def test_empty_layouts_are_explained(tmp_path):
    with pytest.raises(DataError, match="no sub-folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class holds no pictures"):
        load_image_folder(tmp_path, 8)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_image_folder(tmp_path / "missing", 8)
