"""The training loop (minicnn/training.py), on synthetic bars."""

import inspect
import os
import re
import signal

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn import models, nn, optim
from minicnn.errors import ShapeError, TrainingDivergedError
from minicnn.training import EarlyStopping, History, Trainer, TrainingInterrupted
from conftest import bars_dataset, to_host


def _small_cnn():
    return nn.Sequential(nn.Conv2D(1, 8, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(8 * 5 * 5, 3))


@pytest.fixture
def bars():
    images, labels = bars_dataset(count_per_class=40)
    return images.astype(np.float32), labels


def _weights(model):
    return {name: to_host(array) for name, array in model.state_dict().items()}


def test_fit_learns_bars_and_returns_history(device):
    minicnn.set_default_device(device)
    trainer = Trainer(_small_cnn(), optimizer="adam", loss="cross_entropy", metrics=["accuracy"], lr=0.02)
    images, labels = bars_dataset(count_per_class=80, seed=1)
    history = trainer.fit(images[:180], labels[:180], epochs=8, batch_size=16,
                        validation_data=(images[180:], labels[180:]), verbose=0)
    assert isinstance(history, History) and history is trainer.history and not hasattr(history, "history")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "steps"):
        assert len(history[key]) == 8, key
    assert history["steps"] == [12] * 8  # 180 images in batches of 16
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] >= 0.9
    assert history["val_accuracy"][-1] >= 0.9
    assert all(np.isfinite(history["val_loss"]))


def test_evaluate_gives_metrics_consistent_with_predict(bars):
    images, labels = bars
    model = _small_cnn()
    trainer = Trainer(model, optimizer="adam", lr=0.02)
    trainer.fit(images, labels, epochs=2, batch_size=16, verbose=0)
    result = trainer.evaluate(images, labels, batch_size=50)
    logits = trainer.predict(images, batch_size=7)
    assert logits.shape == (len(labels), 3) and isinstance(logits, np.ndarray)
    predictions = logits.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(float((predictions == labels).mean()))
    confusion = result["confusion_matrix"]
    assert confusion.shape == (3, 3) and confusion.sum() == len(labels)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=3))
    np.testing.assert_array_equal(np.diag(confusion), [np.sum((labels == k) & (predictions == k)) for k in range(3)])
    for key in ("precision", "recall", "f1"):
        assert result[key].shape == (3,) and np.all((0 <= result[key]) & (result[key] <= 1))
    expected_loss = float(F.cross_entropy(minicnn.tensor(logits), labels).item())
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert model.training  # evaluate and predict put the model back in training mode


def test_summary_lists_output_shapes_and_parameter_counts(capsys):
    model = models.cnn()
    text = model.summary()
    printed = capsys.readouterr().out
    assert text in printed
    assert "(N, 32, 26, 26)" in text and "(N, 64, 3, 3)" in text and "(N, 576)" in text and "(N, 10)" in text
    assert "93,322" in text  # the Keras tutorial's count for this model
    for count in ("320", "18,496", "36,928", "650"):
        assert count in text
    with pytest.raises(ValueError, match="input_shape"):
        _small_cnn().summary()
    assert "(N, 8, 10, 10)" in _small_cnn().summary(input_shape=(1, 12, 12))


def test_nan_loss_stops_training_naming_epoch_and_step(bars):
    images, labels = bars
    images = images.copy()
    images[70] = np.nan  # batch 70 // 16 = 4 of the first epoch: step 5
    trainer = Trainer(_small_cnn(), "sgd", lr=0.01)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 5\b"):
        trainer.fit(images, labels, epochs=2, batch_size=16, shuffle=False, verbose=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exploding_learning_rate_is_caught(bars):
    images, labels = bars
    trainer = Trainer(_small_cnn(), "sgd", lr=1e12)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):
        trainer.fit(images * 1e3, labels, epochs=3, batch_size=16, verbose=0)


def test_early_stopping_stops_after_patience_and_restores_best_weights():
    model = _small_cnn()
    stopper = EarlyStopping("val_loss", patience=2)
    assert stopper.mode == "min"
    assert not stopper.should_stop(0, {"val_loss": 1.0}, model)
    best = _weights(model)
    model[0].weight.data = model[0].weight.data + 1
    assert not stopper.should_stop(1, {"val_loss": 1.5}, model)
    assert stopper.should_stop(2, {"val_loss": 1.2}, model)
    assert stopper.best_epoch == 0
    np.testing.assert_array_equal(_weights(model)["0.weight"], best["0.weight"])
    with pytest.raises(KeyError, match="val_accuracy"):
        EarlyStopping().should_stop(0, {"loss": 1.0}, model)


def test_fit_stops_early_when_validation_does_not_improve(bars):
    images, labels = bars
    trainer = Trainer(_small_cnn(), "sgd", lr=0.0)  # lr 0: nothing ever improves
    history = trainer.fit(images, labels, epochs=10, batch_size=32, validation_data=(images, labels),
                          callbacks=[EarlyStopping("val_accuracy", patience=2)], verbose=0)
    assert len(history["loss"]) == 3


def test_schedule_sets_each_epochs_learning_rate(bars):
    images, labels = bars
    model = _small_cnn()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, optimizer, schedule=optim.StepLR(optimizer, step_size=2, gamma=0.5))
    history = trainer.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_wrong_image_shape_and_bad_labels_get_clear_errors(bars):
    images, labels = bars
    trainer = Trainer(models.cnn())
    with pytest.raises(ShapeError, match=r"Sequential layer 0: Conv2D.*expected input of shape \(N, 1, \*, \*\)"):
        trainer.fit(np.zeros((8, 3, 28, 28), np.float32), np.zeros(8, np.int64), verbose=0)
    trainer = Trainer(_small_cnn())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        trainer.fit(images, labels + 5, verbose=0)


def test_unknown_optimizer_loss_and_metric_are_refused():
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(_small_cnn(), optimizer="rmsprop")
    with pytest.raises(ValueError, match="loss"):
        Trainer(_small_cnn(), loss="hinge")
    with pytest.raises(ValueError, match="metrics"):
        Trainer(_small_cnn(), metrics=["auc"])


def test_the_default_loss_is_cross_entropy_and_keras_spelling_names_it_too():
    assert inspect.signature(Trainer).parameters["loss"].default == "cross_entropy"
    assert Trainer(_small_cnn()).loss_fn is F.cross_entropy
    assert Trainer(_small_cnn(), loss="sparse_categorical_crossentropy").loss_fn is F.cross_entropy


def test_the_loop_never_asks_how_many_processes_there_are():
    """Data-parallel training is distributed.DataParallel's business: the Trainer only calls its hooks."""
    source = inspect.getsource(minicnn.training)
    assert not re.search(r"\bcomm\.|\.rank\b|\.size\s*[<>=!]", source)


def _trainer(seed=0):
    minicnn.manual_seed(seed)
    model = nn.Sequential(nn.Conv2D(1, 8, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dropout(0.2),
                          nn.Dense(8 * 5 * 5, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, optimizer, schedule=optim.CosineAnnealingLR(optimizer, T_max=3))


def test_checkpoints_are_written_each_epoch(bars, tmp_path):
    images, labels = bars
    trainer = _trainer()
    trainer.fit(images, labels, epochs=2, batch_size=32, validation_data=(images, labels), checkpoint_dir=tmp_path,
                verbose=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.npz", "last.npz"]
    with np.load(tmp_path / "last.npz", allow_pickle=False) as archive:
        assert "architecture" in archive.files


def test_resume_after_an_epoch_reaches_the_uninterrupted_weights(bars, tmp_path):
    images, labels = bars
    uninterrupted = _trainer()
    uninterrupted.fit(images, labels, epochs=3, batch_size=32, shift=1, verbose=0)

    first = _trainer()
    first.fit(images, labels, epochs=1, batch_size=32, shift=1, checkpoint_dir=tmp_path, verbose=0)
    minicnn.manual_seed(99)  # a different generator state must not matter: the checkpoint restores it
    resumed = _trainer(seed=5)
    resumed.resume(tmp_path)
    history = resumed.fit(images, labels, epochs=3, batch_size=32, shift=1, checkpoint_dir=tmp_path, verbose=0)
    for name, array in _weights(uninterrupted.model).items():
        np.testing.assert_array_equal(_weights(resumed.model)[name], array, err_msg=name)
    assert history["loss"] == pytest.approx(uninterrupted.history["loss"])


class _InterruptAt:
    """A loss that sends this process SIGINT during the n-th call (as Ctrl-C would)."""

    def __init__(self, calls):
        self.calls, self.count = calls, 0

    def __call__(self, logits, labels):
        self.count += 1
        if self.count == self.calls:
            os.kill(os.getpid(), signal.SIGINT)
        return F.cross_entropy(logits, labels)


def test_ctrl_c_saves_mid_epoch_and_resume_matches_an_uninterrupted_run(bars, tmp_path, capsys):
    images, labels = bars
    uninterrupted = _trainer()
    uninterrupted.fit(images, labels, epochs=2, batch_size=16, verbose=0)

    interrupted = _trainer()
    interrupted.loss_fn = _InterruptAt(calls=10)  # epoch 2 (8 batches per epoch), its 2nd step
    with pytest.raises(TrainingInterrupted) as stop:
        interrupted.fit(images, labels, epochs=2, batch_size=16, checkpoint_dir=tmp_path, verbose=0)
    assert isinstance(stop.value, KeyboardInterrupt) and stop.value.checkpoint == tmp_path / "last.npz"
    said = f"SIGINT: saved {tmp_path / 'last.npz'} (epoch 2, 2 steps done)"
    assert str(stop.value) == said and capsys.readouterr().err.strip() == said  # what it did, no advice
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler given back
    resumed = _trainer(seed=7)
    loaded = resumed.resume(tmp_path / "last.npz")
    assert (loaded.state["epoch"], loaded.state["step"]) == (1, 2)
    resumed.fit(images, labels, epochs=2, batch_size=16, verbose=0)
    for name, array in _weights(uninterrupted.model).items():
        np.testing.assert_array_equal(_weights(resumed.model)[name], array, err_msg=name)
    assert resumed.history["loss"] == pytest.approx(uninterrupted.history["loss"])
    assert resumed.history["steps"] == [8, 6]  # epoch 2's seconds cover only the 6 steps run after resuming
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.npz", "last.npz"]  # no temporary files


def test_callbacks_hear_every_batch_and_epoch(bars):
    images, labels = bars
    seen = []

    class Recorder:
        def on_batch_end(self, trainer, epoch, step):
            assert all(parameter.grad is not None for parameter in trainer.model.parameters())
            seen.append((epoch, step))

        def on_epoch_end(self, trainer, epoch, logs):
            seen.append((epoch, "end", round(logs["loss"], 6)))

    history = Trainer(_small_cnn()).fit(images, labels, epochs=2, batch_size=50, callbacks=[Recorder()], verbose=0)
    assert seen == [(0, 0), (0, 1), (0, 2), (0, "end", round(history["loss"][0], 6)),
                    (1, 0), (1, 1), (1, 2), (1, "end", round(history["loss"][1], 6))]


def test_the_training_steps_core_reads_as_five_lines():
    """The loop a reader looks for: forward, loss, zero_grad, backward, step, one after the other."""
    source = [line.strip() for line in inspect.getsource(Trainer._train_epoch).splitlines()]
    core = ["logits = model(x)", "loss = loss_fn(logits, y)", "optimizer.zero_grad()", "loss.backward()",
            "optimizer.step()"]
    start = source.index(core[0])
    assert source[start:start + 5] == core


# ----- a kill at any instant keeps best.npz and last.npz consistent ---------------------------------------------

_KILLED_RUN = r"""
import json, os, signal, sys
import numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from conftest import bars_dataset
import test_training

real_savez = np.savez


def savez_then_die(file, **entries):
    # SIGKILL halfway through writing best.npz of epoch 2: no handler, no cleanup, as `kill -9` would.
    if ".best.npz.tmp-" in file.name and json.loads(str(entries["state"]))["epoch"] == 2:
        real_savez(file, **entries)
        file.truncate(file.tell() // 2)
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_savez(file, **entries)


np.savez = savez_then_die
images, labels = bars_dataset(count_per_class=40)
images = images.astype(np.float32)
test_training._trainer().fit(images, labels, epochs=2, batch_size=32, validation_data=(images, labels),
                             checkpoint_dir=sys.argv[3], verbose=0)
"""


def test_a_kill_while_best_npz_is_written_loses_nothing_after_resume(bars, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from minicnn.checkpoint import load_checkpoint

    images, labels = bars
    fit = dict(epochs=2, batch_size=32, validation_data=(images, labels), verbose=0)
    _trainer().fit(images, labels, checkpoint_dir=tmp_path / "whole", **fit)
    whole = load_checkpoint(tmp_path / "whole" / "best.npz")
    assert whole.state["epoch"] == 2  # epoch 2 improved, so the kill below hits a best.npz that matters

    tests = Path(__file__).resolve().parent
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tests.parent), str(tests), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_checkpoint(tmp_path / "run" / "best.npz").state["epoch"] == 1  # the kill came mid-write
    assert any(path.name.startswith(".best.npz.tmp-") for path in (tmp_path / "run").iterdir())

    resumed = _trainer(seed=3)
    resumed.resume(tmp_path / "run")
    resumed.fit(images, labels, checkpoint_dir=tmp_path / "run", **fit)
    best = load_checkpoint(tmp_path / "run" / "best.npz")
    assert best.state["epoch"] == 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):  # not seconds: those are timings
        assert best.state["history"][key] == pytest.approx(whole.state["history"][key]), key
    for name, array in _weights(whole.model).items():
        np.testing.assert_array_equal(_weights(best.model)[name], array, err_msg=name)
    last = load_checkpoint(tmp_path / "run" / "last.npz")
    assert (last.state["best_epoch"], last.state["best_value"]) == (2, whole.state["best_value"])


def test_nan_in_validation_data_warns_once_with_the_count(bars):
    import warnings
    images, labels = bars
    validation = images[:30].copy()
    validation[[3, 7], 0, 0, 0] = np.nan
    validation[11, 0, 5, 5] = np.inf
    trainer = Trainer(_small_cnn(), "sgd", lr=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # so that only our own once-rule can keep it to one
        trainer.fit(images, labels, epochs=2, batch_size=32, validation_data=(validation, labels[:30]), verbose=0)
    messages = [str(warning.message) for warning in caught if str(warning.message).startswith("evaluate:")]
    assert messages == ["evaluate: 3 of 30 images hold NaN or infinite values; the loss (val_loss in fit) will be NaN"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.evaluate(images[:30], labels[:30])  # clean data: nothing to say
    assert not [warning for warning in caught if str(warning.message).startswith("evaluate:")]
