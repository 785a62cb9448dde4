"""TensorBoard (minicnn/tensorboard.py): the event files it writes, read back with TensorBoard's own reader."""

import io
import math

import numpy as np
import pytest

pytest.importorskip("tensorboardX", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
PIL_Image = pytest.importorskip("PIL.Image", reason="needs Pillow (the tensorboard extra)")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="needs tensorboard (its event reader) to read the files back")

import minicnn  # noqa: E402
from minicnn import backend, nn  # noqa: E402
from minicnn.tensorboard import TensorBoard, filter_image, histogram  # noqa: E402
from minicnn.training import Trainer  # noqa: E402

from conftest import BARS_CLASSES, BARS_SIZE, bars_dataset  # noqa: E402

BATCH = 32
LAYERS = ["0_Conv2D", "1_ReLU", "2_MaxPool2D", "3_Conv2D", "4_ReLU", "5_Flatten", "6_Dense"]


def bars_model():
    """12x12 -> Conv 4@3x3 (10x10) -> pool (5x5) -> Conv 8@3x3 (3x3) -> Dense."""
    minicnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Dense(8 * 3 * 3, len(BARS_CLASSES)),
        input_shape=(1, BARS_SIZE, BARS_SIZE),
    )


def read_events(folder):
    """TensorBoard's reader over every event file in folder, everything loaded (size guidance 0)."""
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE})
    return accumulator.Reload()


def train(folder, epochs=2, **options):
    images, labels = bars_dataset()
    model = bars_model()
    trainer = Trainer(model, "adam", lr=0.01)
    with TensorBoard(folder, model=model, **options) as board:
        trainer.fit(images, labels, epochs=epochs, batch_size=BATCH, shuffle=True,
                    validation_data=(images[:30], labels[:30]), callbacks=[board], verbose=0)
    return model, trainer, board, images, labels


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs (4 steps each) logged at every step, with an image for the feature maps and health."""
    folder = tmp_path_factory.mktemp("tensorboard")
    images, _ = bars_dataset()
    model, trainer, board, images, labels = train(folder, every=1, image=images[0], health=True)
    return read_events(folder), model, trainer, board, len(labels)


def test_epoch_scalars_equal_the_history(run):
    events, _, trainer, _, _ = run
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        scalars = events.Scalars(f"epoch/{key}")
        assert [s.step for s in scalars] == [1, 2], key
        assert [s.value for s in scalars] == pytest.approx(trainer.history[key], rel=1e-6), key
    assert "epoch/steps" not in events.Tags()["scalars"]


def test_batch_scalars_average_to_the_epoch_values(run):
    """Every step's own batch loss and accuracy; weighted by batch size they give the epoch's mean."""
    events, _, trainer, _, count = run
    steps = math.ceil(count / BATCH)  # 102 images: batches of 32, 32, 32, 6
    sizes = np.array([BATCH] * (steps - 1) + [count - BATCH * (steps - 1)])
    losses, accuracies = events.Scalars("batch/loss"), events.Scalars("batch/accuracy")
    assert [s.step for s in losses] == [s.step for s in accuracies] == list(range(1, 2 * steps + 1))
    for epoch in range(2):
        loss = np.array([s.value for s in losses[epoch * steps:(epoch + 1) * steps]])
        accuracy = np.array([s.value for s in accuracies[epoch * steps:(epoch + 1) * steps]])
        assert (loss * sizes).sum() / count == pytest.approx(trainer.history["loss"][epoch], rel=1e-5)
        assert (accuracy * sizes).sum() / count == pytest.approx(trainer.history["accuracy"][epoch], rel=1e-5)
        assert np.all((accuracy * sizes) == np.round(accuracy * sizes))  # a whole number of correct images


def test_every_n_steps(tmp_path):
    train(tmp_path, every=3, histograms=False, images=False)
    events = read_events(tmp_path)
    assert [s.step for s in events.Scalars("batch/loss")] == [3, 6]  # 8 steps in two epochs of 4
    assert not events.Tags()["histograms"] and not events.Tags()["images"]


def test_histograms_hold_every_parameter_and_gradient(run):
    events, model, _, _, _ = run
    parameters = dict(model.named_parameters())  # '0.weight', ...
    expected = set()
    for name, parameter in parameters.items():
        position, kind = name.split(".")
        layer = next(layer for layer in LAYERS if layer.startswith(position + "_"))
        expected |= {f"weights/{layer}/{kind}", f"gradients/{layer}/{kind}"}
        for prefix in ("weights", "gradients"):
            histograms = events.Histograms(f"{prefix}/{layer}/{kind}")
            assert [h.step for h in histograms] == [1, 2]
            assert all(h.histogram_value.num == parameter.data.size for h in histograms)
            assert all(sum(h.histogram_value.bucket) == parameter.data.size for h in histograms)
        # The second histogram was taken after the last step: the weights the model ends with.
        final = events.Histograms(f"weights/{layer}/{kind}")[-1].histogram_value
        weight = backend.to_numpy(parameter.data).astype(np.float64)
        assert final.sum == pytest.approx(weight.sum(), rel=1e-6, abs=1e-9)
        assert (final.min, final.max) == pytest.approx((weight.min(), weight.max()), rel=1e-6)
    assert set(events.Tags()["histograms"]) == expected


def test_histogram_fields():
    values = np.array([[-1.0, 0.0], [0.5, 2.0]], dtype=np.float32)
    fields = histogram(values, bins=3)  # buckets [-1, 0), [0, 1), [1, 2]
    assert fields["bucket_limits"] == pytest.approx([0.0, 1.0, 2.0]) and fields["bucket_counts"] == [1, 2, 1]
    assert (fields["min"], fields["max"], fields["num"]) == (-1.0, 2.0, 4)
    assert (fields["sum"], fields["sum_squares"]) == pytest.approx((1.5, 5.25))
    assert histogram(np.zeros(5))["bucket_counts"] == [0] * 15 + [5] + [0] * 14  # one value: range v +- 0.5
    assert histogram(np.array([1.0, np.nan])) is None


def decoded(image_event):
    return np.asarray(PIL_Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def test_filter_and_feature_map_images(run):
    events, model, _, _, _ = run
    assert set(events.Tags()["images"]) == {"filters/0_Conv2D", "feature_maps/0_Conv2D", "feature_maps/3_Conv2D"}
    # Tiles at least 24 pixels high, one pixel apart, up to 8 in a row: 4 kernels 3x3 (x8), 4 maps 10x10 (x3),
    # 8 maps 3x3 (x8).
    sizes = {"filters/0_Conv2D": (24, 4 * 25 - 1), "feature_maps/0_Conv2D": (30, 4 * 31 - 1),
             "feature_maps/3_Conv2D": (24, 8 * 25 - 1)}
    for tag, (height, width) in sizes.items():
        pictures = events.Images(tag)
        assert [p.step for p in pictures] == [1, 2], tag
        assert all((p.height, p.width) == (height, width) for p in pictures), tag
        assert decoded(pictures[-1]).shape == (height, width, 3)
    # The last epoch's filters are the model's final kernels, pixel for pixel.
    np.testing.assert_array_equal(decoded(events.Images("filters/0_Conv2D")[-1]), filter_image(model.layers[0]))


def test_health_statistics_are_the_monitors(run):
    events, _, _, board, _ = run
    written = [tag for tag in events.Tags()["scalars"] if tag.startswith("health/")]
    expected = {f"health/{layer.replace(' ', '_')}/{stat}"
                for layer, stats in board.health.history.items() for stat in stats}
    assert set(written) == expected and "health/1_ReLU/dead_relu_share" in expected
    for layer, stats in board.health.history.items():
        for stat, values in stats.items():
            scalars = events.Scalars(f"health/{layer.replace(' ', '_')}/{stat}")
            assert [s.step for s in scalars] == [1, 2]
            assert [s.value for s in scalars] == pytest.approx(values, rel=1e-6)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="every"):
        TensorBoard(tmp_path, every=0)
    with pytest.raises(ValueError, match="health=True needs the model"):
        TensorBoard(tmp_path, health=True)
    with pytest.raises(TypeError, match="HealthMonitor"):
        TensorBoard(tmp_path, health="yes")



def train_command(tmp_path, monkeypatch, *flags):
    """Two epochs of `minicnn train --model lenet --tensorboard DIR` on 128 MNIST images; (the events, the history)."""
    import json

    from minicnn import cli, data, recipe

    def small_mnist(split):
        images, labels = data.load_mnist(split)
        return images[:192], labels[:192]

    monkeypatch.setitem(recipe.LOADERS, "mnist", small_mnist)
    logs, out = tmp_path / "tb", tmp_path / "run"
    assert cli.main(["train", "--model", "lenet", "--epochs", "2", "--limit", "192", "--validation", "64",
                     "--batch-size", "32", "--quiet", "--tensorboard", str(logs), "--out", str(out), *flags]) == 0
    return read_events(logs), json.loads((out / "metrics.json").read_text())["history"]


def test_train_command_writes_the_logs(tmp_path, monkeypatch, capsys):
    events, history = train_command(tmp_path, monkeypatch)
    assert f"TensorBoard logs in {tmp_path / 'tb'}" in capsys.readouterr().out
    assert [s.value for s in events.Scalars("epoch/val_accuracy")] == pytest.approx(history["val_accuracy"])
    assert set(events.Tags()["images"]) == {"filters/0_Conv2D", "feature_maps/0_Conv2D", "feature_maps/3_Conv2D"}
    assert [h.histogram_value.num for h in events.Histograms("weights/0_Conv2D/weight")] == [6 * 25, 6 * 25]
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("health/")]


@pytest.mark.slow  # --health draws health.png with matplotlib: a few seconds
def test_train_command_with_health_writes_its_statistics(tmp_path, monkeypatch):
    events, history = train_command(tmp_path, monkeypatch, "--health")
    values = [s.value for s in events.Scalars("health/1_ReLU/dead_relu_share")]
    assert len(values) == 2 and all(0 <= value <= 1 for value in values)
    assert (tmp_path / "run" / "health.png").is_file()


def test_the_model_graph_is_written_through_its_onnx_export(tmp_path, capsys):
    pytest.importorskip("onnx", reason="the graph goes through minicnn.onnx (pip install -e \".[onnx]\")")
    images, labels = bars_dataset()
    minicnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(4 * 10 * 10, 3), input_shape=(1, 12, 12))
    with TensorBoard(tmp_path, model=model, histograms=False, images=False) as board:
        Trainer(model, "adam").fit(images, labels, epochs=2, batch_size=BATCH, callbacks=[board], verbose=0)
    assert capsys.readouterr().out == ""  # tensorboardX's ONNX reader prints each node's name; none reach stdout
    events = read_events(tmp_path)
    assert events.Tags()["graph"]
    operators = [node.op for node in events.Graph().node]
    assert operators.count("Conv") == 1 and operators.count("Relu") == 1 and "Gemm" in operators


def test_a_model_onnx_cannot_export_gets_no_graph_and_a_warning(tmp_path):
    pytest.importorskip("onnx", reason="the graph goes through minicnn.onnx (pip install -e \".[onnx]\")")
    images, labels = bars_dataset()
    # No input_shape: the export tries 28x28 samples, which this 12x12 model cannot take.
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(4 * 10 * 10, 3))
    with pytest.warns(UserWarning, match="no graph written"):
        with TensorBoard(tmp_path, model=model, histograms=False, images=False) as board:
            Trainer(model, "adam").fit(images, labels, epochs=1, batch_size=BATCH, callbacks=[board], verbose=0)
    assert not read_events(tmp_path).Tags()["graph"]
