"""Optimizers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay) and Adam.

Updates work on the raw arrays in place, so they record no graph and keep each
parameter's dtype and device.
"""

from .backend import get_array_module


class Optimizer:
    """Holds the parameters and the learning rate (`lr` may be changed between steps)."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be >= 0, got {lr}")
        self.lr = lr

    def zero_grad(self):
        """Forget every parameter's gradient (call before each backward)."""
        for parameter in self.params:
            parameter.grad = None

    def step(self):
        """Update every parameter that has a gradient."""
        for position, parameter in enumerate(self.params):
            if parameter.grad is not None:
                self._update(position, parameter)

    def _update(self, position, parameter):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (dampening 0):

    g = grad + weight_decay * p
    buf = g on the first step, then momentum * buf + g
    p -= lr * (g + momentum * buf if nesterov else buf)      (p -= lr * g without momentum)
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocities = [None] * len(self.params)

    def _update(self, position, parameter):
        grad = parameter.grad
        if self.weight_decay:
            grad = grad + self.weight_decay * parameter.data
        if self.momentum:
            velocity = self.velocities[position]
            if velocity is None:
                velocity = self.velocities[position] = grad.copy()
            else:
                velocity *= self.momentum
                velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        parameter.data -= self.lr * grad


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (weight decay added to the gradient, not decoupled):

    g = grad + weight_decay * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.steps = [0] * len(self.params)
        self.first_moments = [None] * len(self.params)
        self.second_moments = [None] * len(self.params)

    def _update(self, position, parameter):
        xp = get_array_module(parameter.data)
        beta1, beta2 = self.betas
        grad = parameter.grad
        if self.weight_decay:
            grad = grad + self.weight_decay * parameter.data
        if self.first_moments[position] is None:
            self.first_moments[position] = xp.zeros_like(parameter.data)
            self.second_moments[position] = xp.zeros_like(parameter.data)
        m, v = self.first_moments[position], self.second_moments[position]
        self.steps[position] += 1
        step = self.steps[position]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        denominator = xp.sqrt(v) / (1 - beta2**step) ** 0.5 + self.eps
        parameter.data -= (self.lr / (1 - beta1**step)) * m / denominator
