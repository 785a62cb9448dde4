"""Classification metrics on host (NumPy) arrays: accuracy, confusion matrix, precision, recall, F1."""

import numpy as np


def _as_labels(values, name):
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-d array of integer class indices, got {values.dtype} {values.shape}")
    return values


def accuracy(labels, predictions):
    """Share of predictions equal to the labels.  labels, predictions: (N,) int -> float in [0, 1]."""
    labels, predictions = _as_labels(labels, "labels"), _as_labels(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"accuracy: {labels.shape[0]} labels but {predictions.shape[0]} predictions")
    return float((labels == predictions).mean()) if labels.size else 0.0


def confusion_matrix(labels, predictions, num_classes):
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    labels, predictions = _as_labels(labels, "labels"), _as_labels(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"confusion_matrix: {labels.shape[0]} labels but {predictions.shape[0]} predictions")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {num_classes}), got {values.min()}..{values.max()}")
    flat = labels.astype(np.int64) * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(confusion):
    """Per-class precision, recall and F1 from a confusion matrix; each (num_classes,) float64.

    A class never predicted has precision 0, a class never present has recall 0
    (rather than NaN), as scikit-learn does with zero_division=0.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positives = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros_like(true_positives), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    return precision, recall, f1


def classification_report(confusion, class_names=None):
    """A text table of per-class precision, recall, F1 and support, then the accuracy."""
    confusion = np.asarray(confusion)
    precision, recall, f1 = precision_recall_f1(confusion)
    support = confusion.sum(axis=1)
    names = class_names or [str(index) for index in range(len(confusion))]
    width = max(len("class"), *(len(name) for name in names))
    lines = [f"{'class':>{width}}  precision  recall     f1  support"]
    for name, p, r, f, s in zip(names, precision, recall, f1, support):
        lines.append(f"{name:>{width}}  {p:9.4f}  {r:6.4f}  {f:5.4f}  {s:7d}")
    total = confusion.sum()
    lines.append(f"accuracy: {np.trace(confusion) / total if total else 0.0:.4f} on {total} samples")
    return "\n".join(lines)
