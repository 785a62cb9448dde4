"""Keras's optimizer names: settings now, a minicnn.optim optimizer once the model's parameters exist."""

from .. import optim


class Adam:
    """Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7), Keras's defaults."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon

    def create(self, parameters):
        return optim.Adam(parameters, lr=self.learning_rate, betas=(self.beta_1, self.beta_2), eps=self.epsilon)


class SGD:
    """SGD(learning_rate=0.01, momentum=0.0, nesterov=False), Keras's defaults."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        self.learning_rate, self.momentum, self.nesterov = learning_rate, momentum, nesterov

    def create(self, parameters):
        return optim.SGD(parameters, lr=self.learning_rate, momentum=self.momentum, nesterov=self.nesterov)


BY_NAME = {"adam": Adam, "sgd": SGD}


def get(optimizer):
    """An optimizer's settings from a name ('adam', 'sgd') or an instance of Adam or SGD."""
    if isinstance(optimizer, str) and optimizer.lower() in BY_NAME:
        return BY_NAME[optimizer.lower()]()
    if isinstance(optimizer, (Adam, SGD)):
        return optimizer
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam', 'sgd', keras.optimizers.Adam(...) "
                     "or keras.optimizers.SGD(...)")
