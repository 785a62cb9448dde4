"""The Keras API on minicnn, so that the Keras tutorials run with only their import lines changed.

    from minicnn import keras
    from minicnn.keras import layers, models

    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    ...
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=5, validation_data=(x_test, y_test))

It sits at the top of minicnn, above training: the engine never imports it.
Images are channels-last NumPy arrays, as in Keras; see keras.models for what is
copied from Keras and keras.layers for the layers offered.
"""

from . import callbacks, datasets, layers, losses, models, optimizers, utils
from .layers import Input
from .models import Sequential

__all__ = ["Input", "Sequential", "callbacks", "datasets", "layers", "losses", "models", "optimizers", "utils"]
