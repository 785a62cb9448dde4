"""The pictures (minicnn/viz/plots.py): each is written, has the size asked for, and is not blank."""

import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.viz import plots
from minicnn.viz.plots import feature_maps, image_grid

needs_matplotlib = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True).returncode != 0,
    reason='matplotlib is not installed (pip install -e ".[viz]")',
)


def small_cnn():
    """12x12 images, two Conv2D layers (the second with several input channels), 3 classes."""
    minicnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Dense(6 * 3 * 3, 3),
    )


IMAGE = np.random.default_rng(0).random((12, 12)).astype(np.float32)


def read_png(path, expected_size=None, ink=0.05, colour=0.0):
    """The PNG as an (H, W, channels) array in [0, 1], after checking that it is a picture and not blank.

    expected_size: (height, width) in pixels; ink: the least share of pixels that are not
    white; colour: the least share of coloured (not grey) pixels, which only lines,
    markers and colour maps make (axes, ticks and text are black and grey).
    """
    from matplotlib.image import imread

    pixels = imread(path)
    height, width = pixels.shape[:2]
    if expected_size is not None:
        assert (height, width) == expected_size, path
    assert height >= 100 and width >= 300, (path, pixels.shape)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.01, f"{path} is a single colour"
    not_white = (rgb < 0.95).any(axis=2).mean()
    assert not_white > ink, f"{path} is almost blank: {not_white:.1%} of its pixels are not white"
    coloured = (rgb.max(axis=2) - rgb.min(axis=2) > 0.2).mean()
    assert coloured >= colour, f"{path}: only {coloured:.2%} of its pixels are coloured (no lines drawn?)"
    return pixels


# ----- numbers (NumPy only) ------------------------------------------------------------------------------

def test_image_grid_tiles_row_by_row_with_gaps():
    tiles = [np.full((2, 3), float(k)) + np.arange(3) for k in range(5)]  # each tile ramps 0, 1, 2 left to right
    grid = image_grid(tiles, columns=3, padding=1)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    for k in range(5):
        top, left = (k // 3) * 3, (k % 3) * 4
        np.testing.assert_allclose(grid[top:top + 2, left:left + 3], [[0, 0.5, 1]] * 2)  # normalised to [0, 1]
    assert np.isnan(grid[2]).all() and np.isnan(grid[:, 3]).all() and np.isnan(grid[:, 7]).all()  # the gaps
    assert np.isnan(grid[3:, 8:]).all()  # the unused sixth tile
    raw = image_grid(np.stack(tiles), columns=5, padding=0, normalize=False)
    np.testing.assert_array_equal(raw, np.concatenate(tiles, axis=1))
    assert image_grid([np.ones((2, 2))] * 9).shape == (3 * 3 - 1, 3 * 3 - 1)  # default: a square grid
    np.testing.assert_array_equal(image_grid([np.full((2, 2), 7.0)]), np.zeros((2, 2)))  # a constant tile
    with pytest.raises(ValueError, match="equally shaped"):
        image_grid([np.zeros((2, 2)), np.zeros((3, 2))])


def test_feature_maps_are_each_conv_layers_output():
    model = small_cnn()
    maps = feature_maps(model, IMAGE)
    assert [(name, array.shape) for name, array in maps] == [("0 Conv2D", (4, 10, 10)), ("3 Conv2D", (6, 3, 3))]
    x = minicnn.tensor(IMAGE[None, None])
    first = model[0](x)
    second = model[3](model[2](model[1](first)))
    np.testing.assert_allclose(maps[0][1], first.numpy()[0], rtol=1e-6)
    np.testing.assert_allclose(maps[1][1], second.numpy()[0], rtol=1e-5, atol=1e-6)
    assert model.training and not model[0]._forward_hooks


def test_the_engine_never_imports_matplotlib():
    code = ("import sys, minicnn, minicnn.viz, minicnn.viz.plots, minicnn.viz.health, minicnn.viz.saliency, "
            "minicnn.cli; print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes `import matplotlib.figure` fail
    with pytest.raises(ImportError, match=r'pip install -e "\.\[viz\]"'):
        plots.save_training_curves({"loss": [1.0]}, tmp_path / "curves.png")
    with pytest.raises(ImportError, match="minicnn"):
        plots.require_matplotlib()


# ----- pictures -----------------------------------------------------------------------------------------------

@needs_matplotlib
def test_feature_maps_and_filters_one_png_per_conv_layer(tmp_path):
    model = small_cnn()
    maps = plots.save_feature_maps(model, IMAGE, tmp_path)
    filters = plots.save_filters(model, tmp_path)
    assert [path.name for path in maps] == ["feature_maps_0_Conv2D.png", "feature_maps_3_Conv2D.png"]
    assert [path.name for path in filters] == ["filters_0_Conv2D.png", "filters_3_Conv2D.png"]
    for path, tiles_across in zip(maps + filters, [4, 6, 4, 6]):
        # 0.9 inch per tile across, at least 4 inches, at 100 dpi; filters are coloured (blue and red)
        # and have a colour bar, 0.9 inch more.
        is_filters = path.name.startswith("filters")
        pixels = read_png(path, ink=0.2, colour=0.1 if is_filters else 0)
        assert pixels.shape[1] == max(400, 90 * tiles_across) + (90 if is_filters else 0)


@needs_matplotlib
def test_saliency_png_shows_three_panels(tmp_path):
    model = small_cnn()
    path = plots.save_saliency(model, IMAGE, tmp_path / "sub" / "saliency.png", label=1,
                               class_names=["a", "b", "c"])
    assert path.exists()
    read_png(path, expected_size=(400, 1050), ink=0.3, colour=0.1)
    assert model.training
    first_layer = plots.save_saliency(model, IMAGE, tmp_path / "first.png", layer=0)  # Grad-CAM of '0 Conv2D'
    assert first_layer.read_bytes() != path.read_bytes()


@needs_matplotlib
def test_health_png_has_a_panel_per_statistic(tmp_path):
    history = {
        "0 Conv2D": {"activation_mean": [0.1, 0.2], "activation_std": [1.0, 1.1], "gradient_mean": [0.0, 1e-5],
                     "gradient_std": [1e-3, 2e-3], "weight_grad_ratio": [0.1, 0.05], "bias_grad_ratio": [3.0, 1.0]},
        "1 ReLU": {"activation_mean": [0.3, 0.4], "activation_std": [0.5, 0.6], "dead_relu_share": [0.0, 0.25],
                   "gradient_mean": [0.0, 0.0], "gradient_std": [1e-3, 1e-3]},
    }
    # 7 panels: 3 rows of 3, 5 x 3.2 inches each, the legend in the spare panel.
    read_png(plots.save_health(history, tmp_path / "health.png"), expected_size=(1020, 1500), ink=0.02, colour=0.003)
    with pytest.raises(ValueError, match="no statistics"):
        plots.save_health({"0 Conv2D": {}}, tmp_path / "empty.png")


@needs_matplotlib
def test_training_curves_and_confusion_matrix(tmp_path):
    history = {"loss": [1.2, 0.6, 0.4], "accuracy": [0.6, 0.8, 0.9], "val_loss": [0.9, 0.5, 0.45],
               "val_accuracy": [0.7, 0.85, 0.88], "lr": [1e-3] * 3, "seconds": [1.0] * 3}
    read_png(plots.save_training_curves(history, tmp_path / "curves.png"), expected_size=(400, 1000), ink=0.02,
             colour=0.003)
    read_png(plots.save_training_curves({"loss": [1.0, 0.5]}, tmp_path / "loss_only.png"), expected_size=(400, 1000),
             ink=0.02, colour=0.003)
    with pytest.raises(ValueError, match="neither loss nor accuracy"):
        plots.save_training_curves({"lr": [0.1]}, tmp_path / "none.png")

    confusion = np.array([[50, 2, 0], [3, 40, 7], [0, 1, 60]])
    read_png(plots.save_confusion_matrix(confusion, tmp_path / "confusion.png", ["vertical", "horizontal", "blank"]),
             expected_size=(400, 500), colour=0.05)
    ten = np.diag(np.full(10, 90)) + np.random.default_rng(0).integers(0, 3, (10, 10))
    read_png(plots.save_confusion_matrix(ten.tolist(), tmp_path / "ten.png"), expected_size=(750, 850), colour=0.05)
    with pytest.raises(ValueError, match="square"):
        plots.save_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        plots.save_confusion_matrix(confusion, tmp_path / "bad.png", ["a", "b"])
