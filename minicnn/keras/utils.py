"""keras.utils.to_categorical: integer labels to one-hot rows, for loss='categorical_crossentropy'."""

import numpy as np


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer labels y (N,) (or (N, 1)) in 0..num_classes-1 -> one-hot rows (N, num_classes) of `dtype`.

    num_classes: default max(y) + 1, as Keras does.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"to_categorical: expected integer labels (N,), got {y.dtype} {y.shape}")
    classes = int(y.max()) + 1 if num_classes is None and y.size else int(num_classes or 0)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"to_categorical: labels must lie in 0..{classes - 1}, found {y.min()}..{y.max()}")
    one_hot = np.zeros((len(y), classes), dtype=dtype)
    one_hot[np.arange(len(y)), y] = 1
    return one_hot
