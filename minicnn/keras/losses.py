"""Keras's loss names. Only sparse categorical cross-entropy (integer labels) is offered."""


class SparseCategoricalCrossentropy:
    """Cross-entropy against integer labels (N,).

    from_logits=False (Keras's default): the model's outputs are probabilities, as
    a final softmax gives them; keras.Sequential then trains on the scores before
    that softmax with the fused, stable minicnn.functional.cross_entropy, which is
    the same loss without taking the log of a rounded probability.
    from_logits=True: the outputs are raw scores.
    """

    def __init__(self, from_logits=False):
        self.from_logits = from_logits


def get(loss):
    """The loss settings from a name or an instance."""
    if loss == "sparse_categorical_crossentropy":
        return SparseCategoricalCrossentropy()
    if isinstance(loss, SparseCategoricalCrossentropy):
        return loss
    raise ValueError(f"unknown loss {loss!r}; minicnn.keras offers 'sparse_categorical_crossentropy' "
                     "and keras.losses.SparseCategoricalCrossentropy(from_logits=...) (labels as class indices)")
