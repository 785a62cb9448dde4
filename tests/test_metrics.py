"""minicnn.metrics against confusion matrices and scores worked out by hand."""

import numpy as np
import pytest

from minicnn import metrics

# Three classes; class 2 is never predicted.
#   true:      0 0 0 1 1 1 1 2 2
#   predicted: 0 0 1 1 1 0 1 0 1
LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 1, 0, 1, 0, 1])
# Row = true class, column = predicted class, counted by hand from the lines above.
CONFUSION = np.array([
    [2, 1, 0],
    [1, 3, 0],
    [1, 1, 0],
])


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    confusion = metrics.confusion_matrix(LABELS, PREDICTIONS, num_classes=3)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, CONFUSION)


def test_accuracy_is_the_diagonal_share():
    assert metrics.accuracy(LABELS, PREDICTIONS) == pytest.approx(5 / 9)


def test_precision_recall_f1_per_class_by_hand():
    precision, recall, f1 = metrics.precision_recall_f1(CONFUSION)
    # class 0: predicted 4 times, 2 right; present 3 times, 2 found.
    # class 1: predicted 5 times, 3 right; present 4 times, 3 found.
    # class 2: never predicted -> precision 0 (not NaN); present 2 times, none found -> recall 0.
    np.testing.assert_allclose(precision, [2 / 4, 3 / 5, 0.0])
    np.testing.assert_allclose(recall, [2 / 3, 3 / 4, 0.0])
    f1_0 = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)  # = 4/7
    f1_1 = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)  # = 2/3
    np.testing.assert_allclose(f1, [f1_0, f1_1, 0.0])
    assert f1_0 == pytest.approx(4 / 7) and f1_1 == pytest.approx(2 / 3)


def test_a_class_never_present_has_recall_zero():
    confusion = metrics.confusion_matrix(np.array([0, 0, 1]), np.array([0, 2, 1]), num_classes=3)
    np.testing.assert_array_equal(confusion, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    precision, recall, f1 = metrics.precision_recall_f1(confusion)
    np.testing.assert_allclose(precision, [1.0, 1.0, 0.0])
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(f1, [2 / 3, 1.0, 0.0])


def test_perfect_predictions():
    labels = np.array([2, 0, 1, 1])
    confusion = metrics.confusion_matrix(labels, labels, num_classes=3)
    np.testing.assert_array_equal(confusion, np.diag([1, 2, 1]))
    for scores in metrics.precision_recall_f1(confusion):
        np.testing.assert_array_equal(scores, [1.0, 1.0, 1.0])


def test_classification_report_lists_each_class_and_the_accuracy():
    report = metrics.classification_report(CONFUSION, ["zero", "one", "two"])
    lines = report.splitlines()
    assert lines[1].split() == ["zero", "0.5000", "0.6667", "0.5714", "3"]
    assert lines[3].split() == ["two", "0.0000", "0.0000", "0.0000", "2"]
    assert lines[-1] == "accuracy: 0.5556 on 9 samples"


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3), r"labels must lie in \[0, 3\)"),
    (lambda: metrics.confusion_matrix(np.array([0, 1]), np.array([0]), 3), "2 labels but 1 predictions"),
    (lambda: metrics.accuracy(np.array([0.5]), np.array([0])), "integer class indices"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
