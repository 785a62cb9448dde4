"""Keras's callbacks: EarlyStopping with Keras's defaults, on minicnn.training's."""

from .. import training


class EarlyStopping(training.EarlyStopping):
    """EarlyStopping(monitor='val_loss', patience=0, min_delta=0, mode='auto', restore_best_weights=False)."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, patience, min_delta, mode, restore_best_weights)
