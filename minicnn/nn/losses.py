"""Losses as modules, PyTorch's way: `criterion = nn.CrossEntropyLoss(); loss = criterion(logits, labels)`."""

from .. import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """Softmax cross-entropy, averaged over the batch.  logits: (N, classes), labels: (N,) int -> scalar.

    Fused with log-softmax (F.cross_entropy): give it raw scores, not probabilities.
    """

    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)
