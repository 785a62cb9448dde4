"""Keras's loss names: categorical cross-entropy against integer labels (sparse) or one-hot labels.

Both are minicnn.functional.cross_entropy, which takes class indices (N,) and class
probabilities (N, classes) alike; the two names only say which labels keras.Sequential.fit
expects, so that labels of the other kind get Keras's advice instead of a shape error.
"""


class SparseCategoricalCrossentropy:
    """Cross-entropy against integer labels (N,) (or (N, 1), as Keras's CIFAR-10 gives them).

    from_logits=False (Keras's default): the model's outputs are probabilities, as
    a final softmax gives them; keras.Sequential then trains on the scores before
    that softmax with the fused, stable minicnn.functional.cross_entropy, which is
    the same loss without taking the log of a rounded probability.
    from_logits=True: the outputs are raw scores.
    """

    name = "sparse_categorical_crossentropy"
    one_hot = False

    def __init__(self, from_logits=False):
        self.from_logits = from_logits


class CategoricalCrossentropy(SparseCategoricalCrossentropy):
    """Cross-entropy against one-hot labels (N, classes), or soft ones (each row's class probabilities).

    from_logits: as SparseCategoricalCrossentropy. keras.utils.to_categorical makes one-hot labels.
    """

    name = "categorical_crossentropy"
    one_hot = True


LOSSES = {loss.name: loss for loss in (SparseCategoricalCrossentropy, CategoricalCrossentropy)}


def get(loss):
    """The loss settings from a name or an instance."""
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    if isinstance(loss, SparseCategoricalCrossentropy):
        return loss
    raise ValueError(f"unknown loss {loss!r}; minicnn.keras offers 'sparse_categorical_crossentropy' (integer "
                     "labels), 'categorical_crossentropy' (one-hot labels) and their classes "
                     "keras.losses.SparseCategoricalCrossentropy / CategoricalCrossentropy(from_logits=...)")
