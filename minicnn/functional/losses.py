"""Softmax, log-softmax and softmax cross-entropy (against class indices, or against class
probabilities such as one-hot labels), all shifted by the maximum for stability."""

from ..backend import get_array_module
from ..errors import ShapeError
from ..tensor import Operation, Tensor


def _log_softmax(x, axis):
    """log(softmax(x)) computed as (x - max) - log(sum(exp(x - max))): finite for any finite x."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class SoftmaxOp(Operation):
    """exp(x) / sum(exp(x)) along `axis`; d/dx = s * (grad - sum(grad * s))."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.out = get_array_module(x).exp(_log_softmax(x, self.axis))
        return self.out

    def backward(self, grad):
        return self.out * (grad - (grad * self.out).sum(axis=self.axis, keepdims=True))


class LogSoftmaxOp(Operation):
    """log(softmax(x)) along `axis`; d/dx = grad - softmax(x) * sum(grad)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.out = _log_softmax(x, self.axis)
        return self.out

    def backward(self, grad):
        xp = get_array_module(grad)
        return grad - xp.exp(self.out) * grad.sum(axis=self.axis, keepdims=True)


class CrossEntropyOp(Operation):
    """Mean softmax cross-entropy.  logits: (N, C) float, labels: (N,) int in [0, C) -> ().

    Fused with log-softmax, so the gradient is simply (softmax - one_hot) / N.
    check_labels=False skips the range check on the host (on the GPU it reads two
    numbers back, a sync each step); any label outside [0, C) then makes the loss NaN.
    """

    input_names = ("logits", "labels")

    def __init__(self, check_labels=True):
        self.check_labels = check_labels

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        if logits.ndim != 2:
            raise ShapeError(f"cross_entropy: logits must have shape (N, classes), got {logits.shape}")
        count, classes = logits.shape
        if count == 0:  # the mean over no sample would be NaN
            raise ShapeError(f"cross_entropy: the batch is empty (logits {logits.shape}); give at least one sample")
        if labels.shape != (count,):
            raise ShapeError(f"cross_entropy: labels must have shape ({count},) to match logits {logits.shape}, got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
        if self.check_labels and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"cross_entropy: labels must lie in [0, {classes}), got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )
        outside = None
        if not self.check_labels:
            outside = ((labels < 0) | (labels >= classes)).any()  # stays on the device
            labels = labels.clip(0, classes - 1)
        self.log_probs = _log_softmax(logits, axis=1)
        self.labels = labels
        picked = self.log_probs[xp.arange(count), labels]
        loss = -picked.mean()
        return loss if outside is None else xp.where(outside, xp.nan, loss).astype(loss.dtype)

    def backward(self, grad):
        xp = get_array_module(grad)
        count = self.labels.shape[0]
        grad_logits = xp.exp(self.log_probs)
        grad_logits[xp.arange(count), self.labels] -= 1
        return grad_logits * (grad / count), None


class ProbabilityCrossEntropyOp(Operation):
    """Mean softmax cross-entropy against class probabilities.  logits: (N, C) float, targets: (N, C) float -> ().

    loss = -sum(targets * log_softmax(logits)) / N: one-hot targets give the same loss as their
    class indices in CrossEntropyOp; soft ones (label smoothing, mixup) weight every class's log-probability.
    The gradient is (softmax * row sum of targets - targets) / N, softmax - targets when rows sum to 1.
    """

    input_names = ("logits", "targets")

    def forward(self, logits, targets):
        if logits.ndim != 2:
            raise ShapeError(f"cross_entropy: logits must have shape (N, classes), got {logits.shape}")
        if logits.shape[0] == 0:
            raise ShapeError(f"cross_entropy: the batch is empty (logits {logits.shape}); give at least one sample")
        if targets.shape != logits.shape:
            raise ShapeError(f"cross_entropy: class probabilities must have the logits' shape {logits.shape}, "
                             f"got {targets.shape}")
        self.log_probs = _log_softmax(logits, axis=1)
        self.targets = targets.astype(logits.dtype, copy=False)
        return -(self.targets * self.log_probs).sum() / logits.shape[0]

    def backward(self, grad):
        xp = get_array_module(grad)
        count = self.targets.shape[0]
        grad_logits = xp.exp(self.log_probs) * self.targets.sum(axis=1, keepdims=True) - self.targets
        return grad_logits * (grad / count), None


def softmax(x, axis=-1):
    return SoftmaxOp(axis)(x)


def log_softmax(x, axis=-1):
    return LogSoftmaxOp(axis)(x)


def cross_entropy(logits, labels, check_labels=True):
    """Mean softmax cross-entropy of logits (N, C) against integer labels (N,), or, as PyTorch's
    cross_entropy and Keras's categorical_crossentropy take them, against class probabilities (N, C)
    of a floating type (one-hot labels, or soft ones).

    labels: a Tensor, an array or a list. check_labels=False trades the ValueError for out-of-range
    class indices for a NaN loss and no host sync (probabilities have no range to check).
    """
    if not isinstance(labels, Tensor) and not hasattr(labels, "dtype"):
        labels = get_array_module(logits.data).asarray(labels)
    if labels.ndim == 2 and labels.dtype.kind == "f":
        return ProbabilityCrossEntropyOp()(logits, labels)
    return CrossEntropyOp(check_labels)(logits, labels)
