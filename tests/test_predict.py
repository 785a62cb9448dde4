"""minicnn/pictures.py and `minicnn predict`: pictures of any form become the dataset's 28x28 images."""

import importlib.util
import json

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image", reason="predicting on image files needs Pillow (the `images` extra)")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

import minicnn  # noqa: E402
from minicnn import data, models  # noqa: E402
from minicnn.checkpoint import save_checkpoint  # noqa: E402
from minicnn.cli import main  # noqa: E402
from minicnn.errors import DataError, ShapeError  # noqa: E402
from minicnn.pictures import (  # noqa: E402
    MNIST_BOX, border_median, centre_of_mass, classify, light_on_dark, load_model, prepare, read_grey, softmax,
)
from minicnn.training import Trainer  # noqa: E402

from benchmarks.predict_forms import FORMS  # noqa: E402


def synthetic_seven(side=200, ink=255, paper=0, width=18):
    """A hand-drawn-looking 7 as (side, side) uint8: light ink on dark unless ink < paper."""
    picture = Image.new("L", (side, side), paper)
    draw = ImageDraw.Draw(picture)
    s = side / 200
    draw.line([(55 * s, 50 * s), (145 * s, 50 * s), (90 * s, 160 * s)], fill=ink, width=int(width * s))
    return np.asarray(picture)


# How far each form may land from the stored image (mean absolute difference, after the best shift of at
# most one pixel: centring by mass rounds to whole pixels). Scaling up and back down blurs a little.
TOLERANCE = {"stored": 0.005, "inverted": 0.005, "shifted": 0.005, "rgb112": 0.06}


def distance(prepared, target):
    """Mean absolute difference of two (28, 28) arrays, at the best shift of -1, 0 or 1 pixel each way."""
    return min(np.abs(np.roll(prepared, (down, right), axis=(0, 1)) - target).mean()
               for down in (-1, 0, 1) for right in (-1, 0, 1))


def ink_box_side(image, threshold=0.1):
    rows = np.flatnonzero((image > threshold).any(axis=1))
    columns = np.flatnonzero((image > threshold).any(axis=0))
    return max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1)


# ----- preparing one picture ---------------------------------------------------------------------------

def test_the_canonical_digit_is_a_20_pixel_box_centred_by_mass():
    canonical = prepare(synthetic_seven())
    assert canonical.shape == (28, 28) and canonical.dtype == np.float32
    assert canonical.min() >= 0 and canonical.max() == pytest.approx(1, abs=0.02)
    assert abs(ink_box_side(canonical, 0) - MNIST_BOX) <= 1
    row, column = centre_of_mass(canonical)
    assert abs(row - 14) <= 1 and abs(column - 14) <= 1


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_a_synthetic_digit_prepares_to_the_canonical_array(form):
    digit = np.asarray(Image.fromarray(synthetic_seven()).resize((28, 28), Image.Resampling.BOX))  # anti-aliased
    canonical = prepare(digit)
    prepared = prepare(FORMS[form](digit, np.random.default_rng(1)))
    assert distance(prepared, canonical) < TOLERANCE[form]
    row, column = centre_of_mass(prepared)
    assert abs(row - 14) <= 1 and abs(column - 14) <= 1


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_mnist_test_images_lands_near_the_stored_image(form, tmp_path):
    images, _ = data.load_mnist("test")
    rng = np.random.default_rng(0)
    for index, image in enumerate(images[:20]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(FORMS[form](image, rng)).save(path)
        prepared = prepare(path)
        assert distance(prepared, image / 255) < TOLERANCE[form], index
        row, column = centre_of_mass(prepared)
        assert abs(row - 14) <= 1 and abs(column - 14) <= 1


def test_a_dark_on_light_picture_is_inverted_a_light_on_dark_one_is_not():
    ink_on_paper = synthetic_seven(ink=40, paper=200).astype(np.float32) / 255
    assert border_median(ink_on_paper) > 0.5
    light = light_on_dark(ink_on_paper)
    assert border_median(light) == 0 and light.max() == pytest.approx(1)  # grey paper -> black, ink -> white
    assert light[50, 100] == pytest.approx(1)  # on the stroke of the 7
    chalk_on_board = synthetic_seven(ink=220, paper=60).astype(np.float32) / 255
    np.testing.assert_allclose(light_on_dark(chalk_on_board), light, atol=1e-6)


def test_modes_colour_transparency_and_sixteen_bits_all_read(tmp_path):
    digit = synthetic_seven(side=84)
    canonical = prepare(digit)
    alpha = Image.fromarray(np.where(digit > 0, 255, 0).astype(np.uint8))
    black_ink = Image.merge("RGBA", [Image.new("L", alpha.size, 0)] * 3 + [alpha])  # transparent paper
    blue_on_yellow = np.stack([np.where(digit > 0, 20, 250), np.where(digit > 0, 30, 230),
                               np.where(digit > 0, 160, 90)], axis=-1).astype(np.uint8)
    pictures = {
        "rgba.png": black_ink,
        "colour.jpg": Image.fromarray(blue_on_yellow),
        "palette.gif": Image.fromarray(digit).convert("P"),
        "sixteen.png": Image.fromarray(digit.astype(np.uint16) * 257),
    }
    for name, picture in pictures.items():
        picture.save(tmp_path / name)
        assert np.abs(prepare(tmp_path / name) - canonical).mean() < 0.04, name


def test_fashion_pictures_are_trimmed_and_fitted_into_28_by_28_centred():
    product = np.full((100, 60), 255, dtype=np.uint8)  # a dark coat, 80 tall and 30 wide, on white
    product[10:90, 20:50] = 30
    prepared = prepare(product, "fashion-mnist")
    rows = np.flatnonzero((prepared > 0.5).any(axis=1))
    columns = np.flatnonzero((prepared > 0.5).any(axis=0))
    assert (rows[0], rows[-1]) == (0, 27)  # the longer side fills the 28 pixels
    assert abs(len(columns) - round(30 * 28 / 80)) <= 1
    assert abs((columns[0] + columns[-1]) / 2 - 13.5) <= 0.5


def test_a_blank_picture_is_a_black_image():
    assert not prepare(np.full((40, 30), 255, dtype=np.uint8)).any()


def test_unreadable_files_raise_data_error_naming_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture")
    Image.fromarray(synthetic_seven()).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    for name, reason in [("empty.png", "empty file"), ("notes.png", "not a readable image"),
                         ("cut.png", "not a readable image"), ("missing.png", "no such file")]:
        with pytest.raises(DataError, match=f"{name}: {reason}"):
            read_grey(tmp_path / name)


def test_softmax_and_classify_give_sorted_probabilities():
    logits = np.array([[1.0, 3.0, 2.0], [1000.0, 0.0, 0.0]])
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1)
    results = classify(lambda batch: logits, np.zeros((2, 28, 28)), ["a", "b", "c"], top=5, sources=["x", "y"])
    assert [guess["class"] for guess in results[0]["predictions"]] == ["b", "c", "a"]  # top 5 -> all 3
    assert results[1]["predictions"][0] == {"class": "a", "index": 0, "probability": 1.0}


# ----- a small trained model and the command --------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """lenet trained for one epoch on 640 MNIST images (about 70% test accuracy), saved with its dataset."""
    minicnn.manual_seed(0)
    images, labels = data.load_mnist("train")
    model = models.lenet()
    Trainer(model, optimizer="adam").fit(images[:640], labels[:640], epochs=1, batch_size=32, verbose=False)
    path = tmp_path_factory.mktemp("model") / "lenet.npz"
    save_checkpoint(path, model, state={"run": {"model": "lenet", "dataset": "mnist"}})
    return path


def test_pngs_as_stored_give_the_models_predictions_on_the_raw_arrays(checkpoint, tmp_path):
    images, _ = data.load_mnist("test")
    images = images[:200]
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    model, dataset = load_model(checkpoint)
    assert dataset == "mnist"
    raw = model(images[:, None].astype(np.float32) / 255).argmax(axis=1)
    results = minicnn.predict(checkpoint, paths, top=1)
    through_files = np.array([result["predictions"][0]["index"] for result in results])
    # Re-cropping at the ink threshold and re-centring moves a few digits by a pixel, which a weak
    # model notices now and then (the 5-epoch cnn: 99.11% on the raw arrays and on the files alike).
    assert (through_files == raw).mean() >= 0.97
    from_arrays = minicnn.predict(checkpoint, list(images), top=1)  # the PNG round trip loses nothing
    assert [r["predictions"] for r in from_arrays] == [r["predictions"] for r in results]
    assert [result["file"] for result in results] == [str(path) for path in paths]


def test_predict_on_a_model_needs_the_dataset_and_a_28_by_28_input():
    with pytest.raises(ValueError, match="dataset"):
        minicnn.predict(models.lenet(), [synthetic_seven()])
    assert len(minicnn.predict(models.lenet(), synthetic_seven(), dataset="fashion-mnist")) == 1
    with pytest.raises(ShapeError, match="1x28x28"):
        minicnn.predict(models.cnn(in_channels=3, image_size=32), [synthetic_seven()], dataset="mnist")


def test_cli_predicts_the_good_files_names_the_bad_ones_and_exits_1(checkpoint, tmp_path, capsys):
    Image.fromarray(255 - synthetic_seven()).save(tmp_path / "seven.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    files = [tmp_path / "empty.png", tmp_path / "seven.png", tmp_path / "notes.txt", tmp_path / "missing.jpg"]
    assert main(["predict", str(checkpoint), *map(str, files)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{tmp_path / 'seven.png'}: ") and out.count("\n") == 1 and out.count("%") == 3
    lines = err.splitlines()
    assert len(lines) == 3
    for line, name in zip(lines, ["empty.png", "notes.txt", "missing.jpg"]):
        assert line.startswith(f"minicnn predict: {tmp_path / name}: ")
    assert main(["predict", str(checkpoint), str(tmp_path / "seven.png")]) == 0


def test_cli_json_is_a_list_with_top_classes_per_file(checkpoint, tmp_path, capsys):
    for name in ("a.png", "b.jpg"):
        Image.fromarray(synthetic_seven()).convert("RGB").save(tmp_path / name)
    assert main(["predict", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "b.jpg"),
                 "--top", "4", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["file"] for result in results] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    for result in results:
        guesses = result["predictions"]
        assert len(guesses) == 4 and set(guesses[0]) == {"class", "index", "probability"}
        assert all(guess["class"] == str(guess["index"]) for guess in guesses)  # MNIST's names are its digits
        probabilities = [guess["probability"] for guess in guesses]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9


def test_without_pillow_the_error_names_the_images_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[images\]"'):
        prepare("seven.png")


def test_a_model_ending_in_softmax_is_not_softmaxed_twice():
    minicnn.manual_seed(0)
    model = models.lenet()
    with_softmax = minicnn.nn.Sequential(*model.layers, minicnn.nn.Softmax(), input_shape=(1, 28, 28))
    digit = synthetic_seven()
    plain = minicnn.predict(model, digit, top=10, dataset="mnist")[0]["predictions"]
    ending = minicnn.predict(with_softmax, digit, top=10, dataset="mnist")[0]["predictions"]
    assert [guess["index"] for guess in ending] == [guess["index"] for guess in plain]
    np.testing.assert_allclose([g["probability"] for g in ending], [g["probability"] for g in plain], atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("minicnn.onnx") is None, reason="this minicnn has no minicnn.onnx")
@pytest.mark.parametrize("softmax", [False, True])
def test_an_exported_onnx_file_predicts_as_its_checkpoint(checkpoint, tmp_path, softmax):
    pytest.importorskip("onnx", reason="exporting needs the onnx extra")
    from minicnn import onnx as minicnn_onnx
    from minicnn.checkpoint import load_checkpoint

    path = tmp_path / "lenet.onnx"
    minicnn_onnx.export(load_checkpoint(checkpoint).model, path, input_shape=(1, 28, 28), softmax=softmax,
                        metadata={"minicnn.dataset": "mnist"})
    images = list(data.load_mnist("test")[0][:20])
    from_onnx = minicnn.predict(path, images, top=3)
    from_npz = minicnn.predict(checkpoint, images, top=3)
    assert [[g["index"] for g in r["predictions"]] for r in from_onnx] == \
           [[g["index"] for g in r["predictions"]] for r in from_npz]
    np.testing.assert_allclose([g["probability"] for r in from_onnx for g in r["predictions"]],
                               [g["probability"] for r in from_npz for g in r["predictions"]], atol=1e-5)


def test_non_finite_outputs_are_null_with_a_warning_and_the_answer_is_valid_json():
    # A diverged model's NaN logits made `predict --json` write NaN, which is not JSON.
    from minicnn import pictures

    def diverged(batch):
        return np.full((len(batch), 10), np.nan, dtype=np.float32)

    results = pictures.classify(diverged, np.ones((2, 28, 28), np.float32), [str(d) for d in range(10)], top=3)
    assert all(guess["probability"] is None for result in results for guess in result["predictions"])
    assert all(result["warning"] == pictures.NON_FINITE_WARNING for result in results)
    json.dumps(results, allow_nan=False)  # raises ValueError on NaN
