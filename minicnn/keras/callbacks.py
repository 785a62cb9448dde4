"""Keras's callbacks: EarlyStopping with Keras's defaults, on minicnn.training's; History, what fit returns."""

from .. import training


class EarlyStopping(training.EarlyStopping):
    """EarlyStopping(monitor='val_loss', patience=0, min_delta=0, mode='auto', restore_best_weights=False)."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, patience, min_delta, mode, restore_best_weights)


class History:
    """What keras.Sequential.fit returns, as in Keras: .history, this call's epochs as a minicnn.training.History
    ({'loss': [...], 'accuracy': [...], 'val_loss': ...}); .epoch, their numbers; .params, the fit's settings."""

    def __init__(self, history, epoch, params):
        self.history, self.epoch, self.params = training.History(history), epoch, params

    def __repr__(self):
        return f"History(epochs={self.epoch}, keys={list(self.history)})"
