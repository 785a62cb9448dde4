"""Layers: thin Modules over minicnn.functional that own their parameters and check their input.

Each layer's config() returns its constructor arguments as JSON-able data, and
every layer is registered by class name (nn.registry), so that an architecture
can be written to a checkpoint as text and built again without pickle or eval.

PyTorch's spellings stand beside minicnn's own: Conv2d, MaxPool2d, AvgPool2d,
Linear (weight (out_features, in_features), as in PyTorch), BatchNorm1d, BatchNorm2d.

Constructors check their arguments (positive sizes, bounded windows) before making any
array, so that an architecture read from a file cannot ask for an absurd allocation or
a division by zero; every array is made through registry.new_array (see nn.skeleton).
"""

import math

import numpy as np

from .. import backend
from .. import functional as F
from .init import initializer
from .module import Module, Parameter
from .registry import new_array, register

MAX_SIZE = 2**31 - 1  # channels and features: far above any real layer, yet every shape stays indexable
MAX_WINDOW = 2**16  # kernel, pool window, stride and padding along one axis


def _check_int(layer, name, value, low, high=MAX_SIZE):
    """value as an int in [low, high]; ValueError naming the layer and argument otherwise (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{layer}: {name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _check_pair(layer, name, value, low, high=MAX_WINDOW):
    """An int or an (h, w) pair of ints in [low, high], as a tuple of two ints."""
    values = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(values, (tuple, list)) or len(values) != 2:
        raise ValueError(f"{layer}: {name} must be an int or an (h, w) pair, got {value!r}")
    return tuple(_check_int(layer, name, item, low, high) for item in values)


def _check_choice(layer, name, value, choices):
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise ValueError(f"{layer}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_real(layer, name, value, low, high, low_open=False):
    """A finite real number in [low, high] ((low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not (low < value if low_open else low <= value) or not value <= high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{layer}: {name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return value


def _new_parameter(shape, make):
    return Parameter(new_array(shape, make))


class _Affine(Module):
    """Shared parameter set-up of Conv2D, Dense and Linear: a weight drawn by an initialiser and a zero bias.

    init: 'he' (He normal, for layers followed by ReLU), 'glorot' (Glorot uniform,
    otherwise) or 'auto': the layer's default, which Sequential refines by looking
    at the next layer.
    """

    default_init = "glorot"

    def __init__(self, weight_shape, bias_size, bias, init):
        super().__init__()
        name = type(self).__name__
        _check_choice(name, "bias", bias, (True, False))
        if not isinstance(init, str):
            raise ValueError(f"{name}: init must be 'auto', 'he' or 'glorot', got {init!r}")
        if init != "auto":
            initializer(init)  # reject unknown names now
        self.init, self.weight_shape, self.bias_size = init, weight_shape, bias_size
        self.init_used = self.default_init if init == "auto" else init
        self.weight = _new_parameter(weight_shape, lambda: self.draw_weight(self.init_used))
        self.bias = _new_parameter((bias_size,), self.zero_bias) if bias else None

    def zero_bias(self):
        return np.zeros(self.bias_size, dtype=backend.DEFAULT_FLOAT)

    def draw_weight(self, init):
        """A new weight array from the initialiser called `init`."""
        return initializer(init)(self.weight_shape)

    def reset_parameters(self, init=None):
        """Draw the weight again with `init` (default: this layer's choice) and zero the bias.

        The Parameter objects stay the same, so an optimizer holding them keeps working.
        """
        self.init_used = init or (self.default_init if self.init == "auto" else self.init)
        self.weight.data = new_array(self.weight_shape, lambda: self.draw_weight(self.init_used))
        if self.bias is not None:
            self.bias.data = new_array((self.bias_size,), self.zero_bias)


@register
class Conv2D(_Affine):
    """2-d convolution layer.  (N, in_channels, H, W) -> (N, out_channels, OH, OW).

    weight: (out_channels, in_channels, KH, KW); bias: (out_channels,).
    Initialisation: He normal by default (a convolution is usually followed by
    ReLU); in a Sequential, Glorot uniform when the next layer is not ReLU.
    """

    default_init = "he"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, init="auto"):
        self.in_channels = _check_int("Conv2D", "in_channels", in_channels, 1)
        self.out_channels = _check_int("Conv2D", "out_channels", out_channels, 1)
        self.kernel_size, self.stride, self.padding = (
            _check_pair("Conv2D", "kernel_size", kernel_size, 1), _check_pair("Conv2D", "stride", stride, 1),
            _check_pair("Conv2D", "padding", padding, 0),
        )
        super().__init__((out_channels, in_channels) + self.kernel_size, out_channels, bias, init)

    def config(self):
        """The constructor arguments as JSON-able data (pairs as [h, w] lists)."""
        return {
            "in_channels": int(self.in_channels), "out_channels": int(self.out_channels),
            "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
            "bias": self.bias is not None, "init": self.init,
        }

    def forward(self, x):
        self.check_input(x, (None, self.in_channels, None, None))
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class _FullyConnected(_Affine):
    """What Dense and Linear share: (N, in_features) -> (N, out_features), their checks and config.

    Each keeps its weight in its own layout (`weight_layout`); bias: (out_features,).
    """

    def __init__(self, in_features, out_features, bias=True, init="auto"):
        self.in_features = _check_int(type(self).__name__, "in_features", in_features, 1)
        self.out_features = _check_int(type(self).__name__, "out_features", out_features, 1)
        super().__init__(self.weight_layout(self.in_features, self.out_features), self.out_features, bias, init)

    @staticmethod
    def weight_layout(in_features, out_features):
        raise NotImplementedError

    def config(self):
        """The constructor arguments as JSON-able data."""
        return {"in_features": int(self.in_features), "out_features": int(self.out_features),
                "bias": self.bias is not None, "init": self.init}


@register
class Dense(_FullyConnected):
    """Fully connected layer x @ weight + bias.  (N, in_features) -> (N, out_features).

    weight: (in_features, out_features); bias: (out_features,).
    Initialisation: Glorot uniform by default; in a Sequential, He normal when the
    next layer is ReLU.
    """

    @staticmethod
    def weight_layout(in_features, out_features):
        return (in_features, out_features)

    def forward(self, x):
        self.check_input(x, (None, self.in_features))
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}"


class _Pool2D(Module):
    """What MaxPool2D and AvgPool2D share: the window's checks, config and repr."""

    def __init__(self, pool_size=2, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        _check_pair(name, "pool_size", pool_size, 1)
        if stride is not None:
            _check_pair(name, "stride", stride, 1)
        _check_pair(name, "padding", padding, 0)
        self.pool_size, self.stride, self.padding = pool_size, stride, padding

    def config(self):
        """The constructor arguments as JSON-able data: pairs as [h, w] lists, stride None when it is pool_size."""
        name = type(self).__name__
        return {
            "pool_size": list(_check_pair(name, "pool_size", self.pool_size, 1)),
            "stride": None if self.stride is None else list(_check_pair(name, "stride", self.stride, 1)),
            "padding": list(_check_pair(name, "padding", self.padding, 0)),
        }

    def extra_repr(self):
        return f"pool_size={self.pool_size}, stride={self.stride or self.pool_size}, padding={self.padding}"


@register
class MaxPool2D(_Pool2D):
    """Max pooling.  (N, C, H, W) -> (N, C, OH, OW); stride defaults to pool_size."""

    def forward(self, x):
        self.check_input(x, (None, None, None, None))
        return F.max_pool2d(x, self.pool_size, self.stride, self.padding)


@register
class AvgPool2D(_Pool2D):
    """Average pooling.  (N, C, H, W) -> (N, C, OH, OW); stride defaults to pool_size."""

    def forward(self, x):
        self.check_input(x, (None, None, None, None))
        return F.avg_pool2d(x, self.pool_size, self.stride, self.padding)


class _WithoutArguments(Module):
    """A layer whose constructor takes no arguments: its config is empty."""

    def config(self):
        return {}


@register
class GlobalAvgPool2D(_WithoutArguments):
    """Global average pooling (Keras's GlobalAveragePooling2D): each channel's mean.  (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        self.check_input(x, (None, None, None, None))
        return F.global_avg_pool2d(x)


@register
class AdaptiveAvgPool2d(Module):
    """PyTorch's AdaptiveAvgPool2d, for output_size 1 only: (N, C, H, W) -> (N, C, 1, 1).

    Other output sizes raise ValueError when the layer is built (minicnn has no general adaptive pooling).
    """

    def __init__(self, output_size):
        super().__init__()
        if output_size not in (1, (1, 1), [1, 1]) or isinstance(output_size, bool):
            raise ValueError(f"AdaptiveAvgPool2d: only output_size 1 (global average pooling) is supported, "
                             f"got {output_size!r}; use GlobalAvgPool2D, or AvgPool2d with a window")
        self.output_size = 1

    def config(self):
        return {"output_size": 1}

    def forward(self, x):
        self.check_input(x, (None, None, None, None))
        return F.adaptive_avg_pool2d(x, 1)

    def extra_repr(self):
        return "output_size=1"


@register
class Identity(_WithoutArguments):
    """Returns its input unchanged: a placeholder, e.g. model.fc = nn.Identity() to read a ResNet's features."""

    def forward(self, x):
        return x


@register
class Flatten(_WithoutArguments):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def forward(self, x):
        return F.flatten(x)


@register
class ReLU(_WithoutArguments):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return F.relu(x)


@register
class Sigmoid(_WithoutArguments):
    """1 / (1 + exp(-x)), elementwise."""

    def forward(self, x):
        return F.sigmoid(x)


@register
class Tanh(_WithoutArguments):
    """tanh(x), elementwise."""

    def forward(self, x):
        return F.tanh(x)


@register
class Dropout(Module):
    """Zero each element with probability p while training; the identity in eval()."""

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p!r}")
        self.p = p

    def config(self):
        return {"p": float(self.p)}

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    """Shared by BatchNorm1D and BatchNorm2D: normalise each of num_features channels.

    weight (gamma, ones) and bias (beta, zeros): (num_features,) Parameters.
    running_mean (zeros) and running_var (ones): (num_features,) buffers, updated by
    every forward in training mode and used instead of the batch's statistics in eval().
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        name = type(self).__name__
        num_features = _check_int(name, "num_features", num_features, 1)
        _check_real(name, "momentum", momentum, 0, 1)
        _check_real(name, "eps", eps, 0, 1, low_open=True)
        self.num_features, self.momentum, self.eps = num_features, momentum, eps

        def ones():
            return np.ones(num_features, dtype=backend.DEFAULT_FLOAT)

        def zeros():
            return np.zeros(num_features, dtype=backend.DEFAULT_FLOAT)

        self.weight = _new_parameter((num_features,), ones)
        self.bias = _new_parameter((num_features,), zeros)
        self.register_buffer("running_mean", new_array((num_features,), zeros))
        self.register_buffer("running_var", new_array((num_features,), ones))

    def config(self):
        """The constructor arguments as JSON-able data."""
        return {"num_features": int(self.num_features), "momentum": float(self.momentum), "eps": float(self.eps)}

    def forward(self, x):
        self.check_input(x, self.expected_shape)
        return F.batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.training, self.momentum, self.eps
        )

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


@register
class BatchNorm1D(_BatchNorm):
    """Batch normalisation of features.  (N, num_features) -> (N, num_features)."""

    @property
    def expected_shape(self):
        return (None, self.num_features)


@register
class BatchNorm2D(_BatchNorm):
    """Batch normalisation of image channels, statistics over batch and pixels.  (N, C, H, W) -> same."""

    @property
    def expected_shape(self):
        return (None, self.num_features, None, None)


@register
class Softmax(Module):
    """exp(x) / sum(exp(x)) along `axis` (stable: computed from x - max(x)).  Shape unchanged."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = _check_int("Softmax", "axis", axis, -64, 64)

    def config(self):
        return {"axis": int(self.axis)}

    def forward(self, x):
        return F.softmax(x, self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


# ----- PyTorch's spellings -----------------------------------------------------------------------
Conv2d = Conv2D
BatchNorm1d = BatchNorm1D
BatchNorm2d = BatchNorm2D


@register
class Linear(_FullyConnected):
    """PyTorch's fully connected layer x @ weight.T + bias.  (N, in_features) -> (N, out_features).

    Dense's sibling with PyTorch's layout, weight: (out_features, in_features), so that a PyTorch
    state dict loads name by name; bias: (out_features,). Initialised as Dense is (drawn in the
    (in, out) layout, then transposed, so the fans are the same).
    """

    @staticmethod
    def weight_layout(in_features, out_features):
        return (out_features, in_features)

    def draw_weight(self, init):
        return initializer(init)((self.in_features, self.out_features)).T.copy()

    def forward(self, x):
        self.check_input(x, (None, self.in_features))
        return F.linear(x, self.weight.T, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class _KernelSizeSpelling:
    """PyTorch calls the pooling window kernel_size where minicnn says pool_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)

    def config(self):
        config = super().config()
        return {"kernel_size": config.pop("pool_size"), **config}

    def extra_repr(self):
        return f"kernel_size={self.pool_size}, stride={self.stride or self.pool_size}, padding={self.padding}"


@register
class MaxPool2d(_KernelSizeSpelling, MaxPool2D):
    """PyTorch's spelling of MaxPool2D: MaxPool2d(kernel_size, stride=None, padding=0)."""


@register
class AvgPool2d(_KernelSizeSpelling, AvgPool2D):
    """PyTorch's spelling of AvgPool2D: AvgPool2d(kernel_size, stride=None, padding=0)."""
