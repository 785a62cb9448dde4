"""Optimizers with PyTorch's update rules: SGD (momentum, Nesterov, weight decay) and Adam;
learning-rate schedules stepped once per epoch: StepLR and CosineAnnealingLR.

Each optimizer's `update(p, g, i)` is its rule, written as the formula in PyTorch's
documentation: p is the parameter's array (changed in place, so no graph is recorded
and the dtype and device stay), g its gradient, i its position (for per-parameter
state such as momentum). Checking the arguments and the saved state sits apart, in
`__init__`, the `_check_*` helpers and `load_state_dict`. Optimizers and schedules
describe their state with state_dict() and take it back with load_state_dict(), for
checkpoints.
"""

import math

from . import backend
from .backend import get_array_module
from .errors import CheckpointError


def _check_at_least_zero(where, **values):
    """Raise ValueError naming the first of `values` (name=number) that is negative or NaN."""
    for name, value in values.items():
        if not value >= 0:  # `not >=` also refuses NaN
            raise ValueError(f"{where}: {name} must be >= 0, got {value!r}")


def _check_betas(where, betas):
    """Raise ValueError unless `betas` is two numbers in [0, 1) (the moments' decay rates)."""
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {tuple(betas)!r}")


class Optimizer:
    """Holds the parameters and the learning rate (`lr` may be changed between steps).

    Subclasses write their rule as `update(p, g, i)`, name their settings in
    `hyperparameter_names` and their per-parameter arrays (one list entry per
    parameter, None until its first update) in `slot_names`; state_dict and
    load_state_dict are built from those two lists.
    """

    hyperparameter_names = ("lr",)
    slot_names = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        _check_at_least_zero(type(self).__name__, lr=lr)
        self.lr = lr

    def zero_grad(self):
        """Forget every parameter's gradient (call before each backward)."""
        for parameter in self.params:
            parameter.grad = None

    def step(self):
        """Update every parameter that has a gradient."""
        for i, parameter in enumerate(self.params):
            if parameter.grad is not None:
                self.update(parameter.data, parameter.grad, i)

    def update(self, p, g, i):
        """Change the array p in place, given its gradient g; i is its position in self.params."""
        raise NotImplementedError

    # ----- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """{'type': class name, each hyperparameter (JSON-able), each slot: a list of array copies or None}.

        Arrays stay on their parameter's device. Hyperparameters are restored by
        load_state_dict too, as in PyTorch, so a resumed run continues with the saved lr.
        """
        state = {"type": type(self).__name__}
        for name in self.hyperparameter_names:
            value = getattr(self, name)
            state[name] = list(value) if isinstance(value, tuple) else value
        for name in self.slot_names:
            state[name] = [None if array is None else array.copy() for array in getattr(self, name)]
        return state

    def load_state_dict(self, state):
        """Take hyperparameters and per-parameter state from `state` (as state_dict made it).

        Checks the optimizer type, the number of parameters and every array's shape
        first, and changes nothing unless all fit (CheckpointError otherwise). Arrays
        are moved to their parameter's device and cast to its dtype.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise CheckpointError(f"{where}: expected a dict made by state_dict(), got {type(state).__name__}")
        if state.get("type") != type(self).__name__:
            raise CheckpointError(
                f"{where}: the state belongs to a {state.get('type')!r} optimizer, not {type(self).__name__!r}"
            )
        missing = [name for name in ("type",) + self.hyperparameter_names + self.slot_names if name not in state]
        if missing:
            raise CheckpointError(f"{where}: the state lacks {missing}")
        slots = {name: self._checked_slot(where, name, state[name]) for name in self.slot_names}
        self._load_extra_state(where, state)
        for name in self.hyperparameter_names:
            value = state[name]
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        for name, arrays in slots.items():
            setattr(self, name, arrays)

    def _checked_slot(self, where, name, arrays):
        """The list `arrays` as this optimizer's slot `name`: one entry per parameter, on its device and dtype."""
        if not isinstance(arrays, (list, tuple)) or len(arrays) != len(self.params):
            count = len(arrays) if isinstance(arrays, (list, tuple)) else type(arrays).__name__
            raise CheckpointError(
                f"{where}: '{name}' holds state for {count} parameters, but this optimizer has {len(self.params)}"
            )
        checked = []
        for position, (array, parameter) in enumerate(zip(arrays, self.params)):
            if array is None:
                checked.append(None)
                continue
            if not backend.is_array(array):
                raise CheckpointError(f"{where}: {name}[{position}] is a {type(array).__name__}, not an array")
            if tuple(array.shape) != tuple(parameter.shape):
                raise CheckpointError(
                    f"{where}: {name}[{position}] has shape {tuple(array.shape)} but parameter {position} "
                    f"has shape {tuple(parameter.shape)}"
                )
            checked.append(backend.to_device(array, parameter.device).astype(parameter.dtype, copy=True))
        return checked

    def _load_extra_state(self, where, state):
        """Check and take state other than hyperparameters and slots (Adam's step counts)."""


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (dampening 0).

    velocities[i] holds the momentum buffer b of parameter i (None before its first step).
    """

    hyperparameter_names = ("lr", "momentum", "nesterov", "weight_decay")
    slot_names = ("velocities",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        _check_at_least_zero("SGD", momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.velocities = [None] * len(self.params)

    def update(self, p, g, i):
        """g += weight_decay p;  b = mu b + g (b = g at first);  p -= lr (g + mu b if nesterov else b)."""
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            b = self.velocities[i]
            # b starts as a copy of g: g is the parameter's own gradient array
            b = self.velocities[i] = g.copy() if b is None else self.momentum * b + g
            g = g + self.momentum * b if self.nesterov else b
        p -= self.lr * g


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (weight decay added to the gradient, not decoupled as in AdamW).

    first_moments[i], second_moments[i]: m and v of parameter i; steps[i]: its t, the
    number of updates it has had (a parameter without gradient skips a step, as in torch).
    """

    hyperparameter_names = ("lr", "betas", "eps", "weight_decay")
    slot_names = ("first_moments", "second_moments")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        _check_betas("Adam", betas)
        _check_at_least_zero("Adam", eps=eps, weight_decay=weight_decay)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.steps = [0] * len(self.params)
        self.first_moments = [None] * len(self.params)
        self.second_moments = [None] * len(self.params)
        self.scratch = [None] * len(self.params)  # working space of `update`, not state

    def update(self, p, g, i):
        """g += weight_decay p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
        m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p -= lr m_hat / (sqrt(v_hat) + eps).

        Computed in place, term by term in the formula's order (so the same numbers as writing
        it out), with two scratch arrays per parameter: written out, each step allocated and
        freed nine parameter-sized temporaries.
        """
        xp = get_array_module(p)
        beta1, beta2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.first_moments[i] is None:
            self.first_moments[i], self.second_moments[i] = xp.zeros_like(p), xp.zeros_like(p)
        if self.scratch[i] is None or self.scratch[i].shape[1:] != p.shape or self.scratch[i].dtype != p.dtype:
            self.scratch[i] = xp.empty((2,) + p.shape, dtype=p.dtype)
        self.steps[i] += 1
        t = self.steps[i]
        m, v, (term, step) = self.first_moments[i], self.second_moments[i], self.scratch[i]
        xp.multiply(g, 1 - beta1, out=term)
        m *= beta1
        m += term  # m = b1 m + (1 - b1) g
        xp.multiply(g, 1 - beta2, out=term)
        term *= g
        v *= beta2
        v += term  # v = b2 v + (1 - b2) g g
        # p -= lr * m_hat / (sqrt(v_hat) + eps), grouped as torch.optim.Adam groups it: the bias
        # corrections are folded into scalars, lr / (1 - b1^t) and sqrt(v_hat) = sqrt(v) / sqrt(1 - b2^t).
        xp.sqrt(v, out=term)
        term /= (1 - beta2**t) ** 0.5
        term += self.eps  # sqrt(v_hat) + eps
        xp.multiply(m, self.lr / (1 - beta1**t), out=step)
        step /= term
        p -= step

    def state_dict(self):
        """As Optimizer.state_dict, plus 'steps': each parameter's update count (ints)."""
        return super().state_dict() | {"steps": [int(count) for count in self.steps]}

    def _load_extra_state(self, where, state):
        steps = state.get("steps")
        if not isinstance(steps, (list, tuple)) or len(steps) != len(self.params):
            count = len(steps) if isinstance(steps, (list, tuple)) else "no"
            raise CheckpointError(
                f"{where}: 'steps' holds {count} step counts, but this optimizer has {len(self.params)} parameters"
            )
        if not all(isinstance(count, int) and count >= 0 for count in steps):
            raise CheckpointError(f"{where}: 'steps' must hold counts >= 0, got {list(steps)}")
        self.steps = list(steps)


# An optimizer by name, as Trainer("adam"), Keras's compile and `minicnn train --optimizer` ask for it: the one place
# that knows each one's default learning rate. SGD by name gets momentum 0.9, the usual choice for CNNs.
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}
DEFAULT_SGD_MOMENTUM = 0.9


def create(name, parameters, lr=None, **options):
    """The optimizer called `name` ('sgd' or 'adam') over `parameters`; lr None means DEFAULT_LR[name]."""
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer {name!r}; use one of {sorted(DEFAULT_LR)} or an optim.Optimizer")
    lr = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return SGD(parameters, lr=lr, **{"momentum": DEFAULT_SGD_MOMENTUM, **options})
    return Adam(parameters, lr=lr, **options)


# ----- learning-rate schedules ---------------------------------------------------------------------

class LRSchedule:
    """Sets optimizer.lr from the epoch number; call step() once at the end of each epoch.

    As in PyTorch, constructing a schedule sets the lr for epoch 0 (last_epoch = 0)
    and each step() moves to the next epoch. base_lr is the optimizer's lr when the
    schedule was made. Subclasses give lr_at(epoch) in closed form and name their
    settings in `setting_names`.
    """

    setting_names = ()

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Move to the next epoch and set the optimizer's lr for it."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self):
        """The lr this schedule set most recently (for epoch last_epoch), a float."""
        return float(self.lr_at(self.last_epoch))

    def state_dict(self):
        """{'type', 'base_lr', 'last_epoch', and each setting}: JSON-able."""
        state = {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}
        state.update((name, getattr(self, name)) for name in self.setting_names)
        return state

    def load_state_dict(self, state):
        """Take the epoch and settings from `state` and set the optimizer's lr for that epoch."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            found = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{where}: the state belongs to a {found!r} schedule, not {type(self).__name__!r}")
        missing = [name for name in ("base_lr", "last_epoch") + self.setting_names if name not in state]
        if missing:
            raise CheckpointError(f"{where}: the state lacks {missing}")
        if not isinstance(state["last_epoch"], int) or state["last_epoch"] < 0:
            raise CheckpointError(f"{where}: last_epoch must be an int >= 0, got {state['last_epoch']!r}")
        for name in ("base_lr", "last_epoch") + self.setting_names:
            setattr(self, name, state[name])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size): multiplied by gamma every step_size epochs."""

    setting_names = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.

    Falls from base_lr to eta_min over T_max epochs; past T_max the cosine goes on
    and the lr rises again, as in PyTorch (stop training at T_max for a single fall).
    """

    setting_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be an int >= 1, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
