"""minicnn.keras: Keras's names and behaviour over minicnn.nn (the tutorials themselves run in test_tutorials.py)."""

import numpy as np
import pytest

import minicnn
from minicnn import keras, nn
from minicnn.keras import layers, models
from conftest import bars_dataset


def _bars_channels_last():
    images, labels = bars_dataset()
    return images.transpose(0, 2, 3, 1).astype(np.float32), labels  # (N, 12, 12, 1)


def _small(activation="softmax"):
    return models.Sequential([
        layers.Conv2D(4, 3, activation="relu", input_shape=(12, 12, 1)),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(3, activation=activation),
    ])


def test_the_names_keras_code_imports_exist():
    assert keras.Sequential is keras.models.Sequential is models.Sequential
    for name in ("Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "BatchNormalization", "Activation",
                 "AveragePooling2D", "GlobalAveragePooling2D", "Input"):
        assert hasattr(keras.layers, name)


def test_each_layer_infers_its_input_size_from_the_layer_before():
    model = _small()
    conv, _, dense = model.layers[0].modules[0], None, model.layers[3].modules[0]
    assert (conv.in_channels, conv.out_channels) == (1, 4)
    assert (dense.in_features, dense.out_features) == (4 * 5 * 5, 3)
    assert [layer.output_shape for layer in model.layers] == [(10, 10, 4), (5, 5, 4), (100,), (3,)]
    assert [layer.name for layer in model.layers] == ["conv2d", "max_pooling2d", "flatten", "dense"]


def test_summary_lists_keras_shapes_and_parameter_counts(capsys):
    model = _small()
    text = model.summary()
    assert text == capsys.readouterr().out.rstrip("\n")
    assert "conv2d (Conv2D)" in text and "(None, 10, 10, 4)" in text and "(None, 100)" in text
    assert f"Total params: {4 * 9 + 4 + 100 * 3 + 3:,}" in text


def test_a_model_without_input_shape_is_built_by_the_data():
    images, labels = _bars_channels_last()
    model = models.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(3, "softmax")])
    assert model.network is None
    model.compile(loss="sparse_categorical_crossentropy")
    model.fit(images[:, :, :, 0], labels, epochs=1, verbose=0)  # (N, H, W): the channel axis is added
    assert model.input_shape == (12, 12, 1)


def test_keras_input_gives_the_shape():
    model = models.Sequential([keras.Input(shape=(12, 12, 1)), layers.Conv2D(2, 3), layers.Flatten()])
    assert model.layers[-1].output_shape == (2 * 10 * 10,)


def test_fit_learns_and_returns_this_calls_history():
    images, labels = _bars_channels_last()
    minicnn.manual_seed(0)
    model = _small()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    first = model.fit(images, labels, epochs=3, batch_size=16, verbose=0, validation_split=0.25)
    second = model.fit(images, labels, epochs=10, batch_size=16, verbose=0)
    assert sorted(first.history) == ["accuracy", "loss", "val_accuracy", "val_loss"] and len(first.history["loss"]) == 3
    assert sorted(second.history) == ["accuracy", "loss"] and len(second.history["loss"]) == 10
    # Keras's History (keras.callbacks) holds the engine's per-epoch History, which is a plain dict of lists.
    assert isinstance(first, keras.callbacks.History) and first.epoch == [0, 1, 2]
    assert type(first.history) is minicnn.training.History and not hasattr(first.history, "history")
    loss, accuracy = model.evaluate(images, labels, verbose=0)
    assert accuracy > 0.9 and loss < first.history["loss"][0]
    assert model.evaluate(images, labels, verbose=0, return_dict=True) == {"loss": loss, "accuracy": accuracy}


def test_evaluate_without_metrics_returns_the_loss_alone():
    images, labels = _bars_channels_last()
    model = _small()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(images, labels, verbose=0), float)


def test_softmax_output_is_not_applied_twice_in_the_loss():
    # With a final softmax the loss must equal cross-entropy of the softmax's inputs, never of its outputs.
    images, labels = _bars_channels_last()
    model = _small()
    model.compile(loss="sparse_categorical_crossentropy")
    probabilities = model.predict(images)
    expected = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    assert model.evaluate(images, labels, verbose=0) == pytest.approx(expected, rel=1e-4)


def test_from_logits_pairs_with_a_linear_output():
    images, labels = _bars_channels_last()
    model = _small(activation=None)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits = model.predict(images)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = (np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]).mean()
    assert model.evaluate(images, labels, verbose=0) == pytest.approx(expected, rel=1e-4)


def test_probabilities_loss_without_a_softmax_is_refused():
    images, labels = _bars_channels_last()
    model = _small(activation=None)
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="from_logits"):
        model.fit(images, labels, verbose=0)


def test_early_stopping_has_keras_defaults_and_stops():
    images, labels = _bars_channels_last()
    stop = keras.callbacks.EarlyStopping(patience=0)
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_loss", 0, False)
    model = _small()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    history = model.fit(images, labels, epochs=5, verbose=0, validation_split=0.2, callbacks=[stop])
    assert len(history.history["loss"]) == 2  # lr 0: val_loss never improves after the first epoch


def test_batch_normalization_and_global_pooling_build_and_count_running_statistics():
    model = models.Sequential([
        layers.Conv2D(4, 3, padding="same", input_shape=(12, 12, 1)), layers.BatchNormalization(),
        layers.Activation("relu"), layers.GlobalAveragePooling2D(), layers.Dropout(0.5), layers.Dense(3),
    ])
    assert model.layers[0].output_shape == (12, 12, 4) and model.layers[3].output_shape == (4,)
    batch_norm = model.layers[1].modules[0]
    assert isinstance(batch_norm, nn.BatchNorm2D) and batch_norm.momentum == pytest.approx(0.01)
    assert "Non-trainable params: 8" in model.summary()


@pytest.mark.parametrize("make, message", [
    (lambda: layers.Conv2D(4, 3, strides=2, padding="same"), "padding='same'"),
    (lambda: layers.Conv2D(4, 3, activation="swish"), "unknown activation"),
    (lambda: layers.Dense(4, kernel_initializer="orthogonal"), "kernel_initializer"),
    (lambda: models.Sequential([layers.Dense(4, input_shape=(5, 5))]), "Flatten"),
    (lambda: models.Sequential([layers.Conv2D(4, 3, input_shape=(28, 28))]), r"\(height, width, channels\)"),
    (lambda: models.Sequential([layers.Conv2D(4, 7, input_shape=(5, 5, 1))]), "does not fit"),
])
def test_bad_layers_are_refused_with_a_reason(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_image_shape_names_model_and_shapes():
    model = _small()
    with pytest.raises(minicnn.ShapeError, match=r"expected input of shape \(N, 12, 12, 1\).*\(2, 1, 12, 12\)"):
        model.predict(np.zeros((2, 1, 12, 12)))


def test_fit_before_compile_says_what_to_do():
    with pytest.raises(RuntimeError, match="compile"):
        _small().fit(*_bars_channels_last())


def test_categorical_crossentropy_trains_on_one_hot_labels_as_keras_does():
    images, labels = _bars_channels_last()
    one_hot = keras.utils.to_categorical(labels)
    assert one_hot.dtype == np.float32 and one_hot.shape == (len(labels), 3)
    np.testing.assert_array_equal(one_hot.argmax(axis=1), labels)
    trained = {}
    for loss, y in (("sparse_categorical_crossentropy", labels), ("categorical_crossentropy", one_hot)):
        minicnn.manual_seed(0)
        model = _small()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.02), loss=loss, metrics=["accuracy"])
        history = model.fit(images, y, epochs=3, batch_size=16, verbose=0, validation_data=(images, y))
        trained[loss] = model, history.history
    model, history = trained["categorical_crossentropy"]
    sparse_model, sparse_history = trained["sparse_categorical_crossentropy"]
    # One-hot rows give the same gradients as their class indices: the same training, step for step.
    for name in ("accuracy", "val_accuracy"):
        assert history[name] == sparse_history[name]
    np.testing.assert_allclose(history["loss"], sparse_history["loss"], rtol=1e-5)
    for ours, theirs in zip(model.network.parameters(), sparse_model.network.parameters()):
        np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-5, atol=1e-6)
    loss, accuracy = model.evaluate(images, one_hot, verbose=0)
    assert accuracy > 0.5 and loss < history["loss"][0]
    # The loss is Keras's: -sum(y * log(p)) per sample, averaged; soft labels weight every class.
    soft = 0.8 * one_hot + 0.2 / 3
    probabilities = model.predict(images)
    expected = -(soft * np.log(probabilities)).sum(axis=1).mean()
    assert model.evaluate(images, soft, verbose=0)[0] == pytest.approx(expected, rel=1e-4)
    # Accuracy compares the likeliest class of each label with the prediction, as Keras's categorical accuracy.
    assert model.evaluate(images, soft, verbose=0)[1] == pytest.approx(accuracy)


def test_labels_of_the_other_kind_get_what_keras_would_advise():
    images, labels = _bars_channels_last()
    sparse, categorical = _small(), _small()
    sparse.compile(loss="sparse_categorical_crossentropy")
    categorical.compile(loss=keras.losses.CategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"^sequential.fit: loss='sparse_categorical_crossentropy' takes integer "
                                         r"labels \(N,\), got labels of shape \(\d+, 3\), which look one-hot; .*"
                                         r"use loss='categorical_crossentropy'"):
        sparse.fit(images, keras.utils.to_categorical(labels), verbose=0)
    with pytest.raises(ValueError, match=r"takes one-hot labels \(N, classes\), got labels of shape \(\d+,\).*"
                                         r"loss='sparse_categorical_crossentropy'.*to_categorical"):
        categorical.fit(images, labels, verbose=0)
    with pytest.raises(minicnn.ShapeError, match="one-hot labels of shape .* for a model with 3 outputs"):
        categorical.evaluate(images, keras.utils.to_categorical(labels, 5), verbose=0)
    # Keras's own (N, 1) integer labels (its CIFAR-10 gives them so) are class indices to the sparse loss.
    assert sparse.evaluate(images, labels[:, None], verbose=0) == sparse.evaluate(images, labels, verbose=0)


def test_trainer_takes_keras_categorical_name_and_class_probabilities():
    images, labels = bars_dataset()
    model = nn.Sequential(nn.Flatten(), nn.Dense(144, 3))
    trainer = minicnn.training.Trainer(model, loss="categorical_crossentropy")
    one_hot = np.eye(3, dtype=np.float32)[labels]
    by_index, by_one_hot = trainer.evaluate(images, labels), trainer.evaluate(images, one_hot)
    assert by_one_hot["loss"] == pytest.approx(by_index["loss"], rel=1e-6)
    assert by_one_hot["accuracy"] == by_index["accuracy"]
    np.testing.assert_array_equal(by_one_hot["confusion_matrix"], by_index["confusion_matrix"])
