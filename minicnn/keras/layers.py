"""Keras's layer names over minicnn.nn: each Keras layer builds the nn modules that compute it.

A Keras layer is a recipe: it knows its arguments (`filters`, `kernel_size`,
`activation`, ...) and, once `build` is told the shape of one input sample in
Keras's channels-last order, it makes the minicnn.nn modules that compute it
(channels-first inside, as all of minicnn is) and says the shape of its output.
keras.Sequential strings those modules into one nn.Sequential.

Shapes here are Keras's: one sample, channels last, e.g. (28, 28, 1).
"""

from .. import nn
from ..windows import output_size

# Keras's initialiser names -> minicnn's (nn.init)
INITIALIZERS = {"glorot_uniform": "glorot", "he_normal": "he"}


def activation_module(activation, layer_name):
    """The nn module for a Keras activation name (None or 'linear': none); softmax is over the channel axis."""
    if activation in (None, "linear"):
        return None
    modules = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if activation == "softmax":
        return nn.Softmax(axis=1)  # the feature axis of (N, F) and the channel axis of (N, C, H, W)
    if activation not in modules:
        raise ValueError(f"{layer_name}: unknown activation {activation!r}; "
                         f"expected one of {sorted(modules) + ['linear', 'softmax', None]}")
    return modules[activation]()


def _pair(value, name, layer_name):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"{layer_name}: {name} must be an int or a pair of ints, got {value!r}")


def _initializer(name, layer_name):
    if name not in INITIALIZERS:
        raise ValueError(f"{layer_name}: kernel_initializer must be one of {sorted(INITIALIZERS)}, got {name!r}")
    return INITIALIZERS[name]


class Layer:
    """A Keras layer: arguments now, nn modules once the input shape is known.

    input_shape: one sample's shape, channels last (e.g. (28, 28, 1)); needed on the first layer
    of a Sequential unless the data or keras.Input gives it.
    """

    takes_images = False  # True for layers whose samples are (height, width, channels)

    def __init__(self, input_shape=None, name=None):
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.name = name
        self.modules = None  # the nn modules, once built
        self.output_shape = None

    def build(self, input_shape):
        """Make this layer's nn modules for samples of `input_shape` (channels last); returns the output shape."""
        self.modules, self.output_shape = self.make(tuple(input_shape))
        self.modules = [module for module in self.modules if module is not None]
        return self.output_shape

    def make(self, input_shape):
        """(list of nn modules, output shape) for samples of input_shape; each layer defines it."""
        raise NotImplementedError

    def count_params(self):
        return sum(parameter.numel() for module in self.modules or () for parameter in module.parameters())

    def expect_rank(self, input_shape, rank, what):
        if len(input_shape) != rank:
            raise ValueError(f"{self.describe()}: expected {what}, got samples of shape {input_shape}")

    def describe(self):
        return f"{self.name or type(self).__name__} ({type(self).__name__})"


class InputLayer:
    """keras.Input(shape=...): the shape of one sample, channels last, as the first entry of a Sequential."""

    def __init__(self, shape, name=None):
        self.shape = tuple(shape)
        self.name = name


def Input(shape, name=None):  # noqa: N802 - Keras's spelling
    """The input of a Sequential: Input(shape=(28, 28, 1))."""
    return InputLayer(shape, name)


class Conv2D(Layer):
    """Conv2D(filters, kernel_size, strides=1, padding='valid', activation=None): (H, W, C) -> (OH, OW, filters).

    padding 'same' keeps the size (stride 1, odd kernel: kernel_size // 2 zeros on each side, as Keras pads).
    """

    takes_images = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.filters, self.use_bias, self.activation = filters, use_bias, activation
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = _pair(strides, "strides", "Conv2D")
        self.padding = padding.lower() if isinstance(padding, str) else padding
        self.init = _initializer(kernel_initializer, "Conv2D")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"Conv2D: padding must be 'valid' or 'same', got {padding!r}")
        if self.padding == "same" and (self.strides != (1, 1) or min(k % 2 for k in self.kernel_size) == 0):
            # Keras pads such cases unevenly (more at the bottom and right); minicnn's convolution pads evenly.
            raise ValueError(f"Conv2D: padding='same' is supported with strides 1 and odd kernel sizes, got "
                             f"kernel_size={self.kernel_size}, strides={self.strides}")
        activation_module(activation, "Conv2D")  # reject unknown names now

    def make(self, input_shape):
        self.expect_rank(input_shape, 3, "images (height, width, channels)")
        height, width, channels = input_shape
        padding = tuple(k // 2 for k in self.kernel_size) if self.padding == "same" else (0, 0)
        conv = nn.Conv2D(channels, self.filters, self.kernel_size, self.strides, padding, self.use_bias, self.init)
        out_height = output_size(height, self.kernel_size[0], self.strides[0], padding[0])
        out_width = output_size(width, self.kernel_size[1], self.strides[1], padding[1])
        if min(out_height, out_width) < 1:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} does not fit samples of shape {input_shape}")
        return [conv, activation_module(self.activation, "Conv2D")], (out_height, out_width, self.filters)


class _Pooling2D(Layer):
    module = None
    takes_images = True

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.pool_size = _pair(pool_size, "pool_size", type(self).__name__)
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", type(self).__name__)
        if padding not in ("valid", "same"):
            raise ValueError(f"{type(self).__name__}: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding

    def make(self, input_shape):
        self.expect_rank(input_shape, 3, "images (height, width, channels)")
        height, width, channels = input_shape
        out_height = output_size(height, self.pool_size[0], self.strides[0], 0)
        out_width = output_size(width, self.pool_size[1], self.strides[1], 0)
        if self.padding == "same" and (out_height, out_width) != (-(-height // self.strides[0]), -(-width // self.strides[1])):
            # Keras would pad unevenly here; where no padding is needed 'same' equals 'valid'.
            raise ValueError(f"{self.describe()}: padding='same' is supported only where it needs no padding "
                             f"(here samples {input_shape}, pool {self.pool_size}, strides {self.strides})")
        if min(out_height, out_width) < 1:
            raise ValueError(f"{self.describe()}: pool {self.pool_size} does not fit samples of shape {input_shape}")
        return [self.module(self.pool_size, self.strides)], (out_height, out_width, channels)


class MaxPooling2D(_Pooling2D):
    """MaxPooling2D(pool_size=(2, 2), strides=None): (H, W, C) -> (OH, OW, C); strides default to pool_size."""

    module = nn.MaxPool2D


class AveragePooling2D(_Pooling2D):
    """AveragePooling2D(pool_size=(2, 2), strides=None): (H, W, C) -> (OH, OW, C)."""

    module = nn.AvgPool2D


class GlobalAveragePooling2D(Layer):
    """(H, W, C) -> (C,): the mean of each channel over the image."""

    takes_images = True

    def make(self, input_shape):
        self.expect_rank(input_shape, 3, "images (height, width, channels)")
        height, width, channels = input_shape
        return [nn.AvgPool2D((height, width)), nn.Flatten()], (channels,)


class Flatten(Layer):
    """(d1, d2, ...) -> (d1 * d2 * ...,).

    minicnn keeps images channels-first inside, so the flat order is (C, H, W) where Keras's is
    (H, W, C): the same network, its Dense weights' rows in another order.
    """

    def make(self, input_shape):
        size = 1
        for dimension in input_shape:
            size *= dimension
        return [nn.Flatten()], (size,)


class Dense(Layer):
    """Dense(units, activation=None): (features,) -> (units,)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform", input_shape=None,
                 name=None):
        super().__init__(input_shape, name)
        self.units, self.activation, self.use_bias = units, activation, use_bias
        self.init = _initializer(kernel_initializer, "Dense")
        activation_module(activation, "Dense")

    def make(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.describe()}: expected flat samples (features,), got samples of shape "
                             f"{input_shape}; put layers.Flatten() before it")
        dense = nn.Dense(input_shape[0], self.units, self.use_bias, self.init)
        return [dense, activation_module(self.activation, "Dense")], (self.units,)


class Activation(Layer):
    """Activation('relu'): an activation as a layer of its own; shape unchanged."""

    def __init__(self, activation, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.activation = activation
        activation_module(activation, "Activation")

    def make(self, input_shape):
        return [activation_module(self.activation, "Activation")], input_shape


class ReLU(Activation):
    def __init__(self, input_shape=None, name=None):
        super().__init__("relu", input_shape, name)


class Softmax(Activation):
    def __init__(self, input_shape=None, name=None):
        super().__init__("softmax", input_shape, name)


class Dropout(Layer):
    """Dropout(rate): zero each input with probability `rate` while training; shape unchanged."""

    def __init__(self, rate, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.rate = rate

    def make(self, input_shape):
        return [nn.Dropout(self.rate)], input_shape


class BatchNormalization(Layer):
    """BatchNormalization(momentum=0.99, epsilon=0.001): normalise each channel (the last axis); shape unchanged.

    Keras's momentum is the weight of the old running statistics; minicnn's (PyTorch's) is the new one's.
    """

    def __init__(self, momentum=0.99, epsilon=0.001, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.momentum, self.epsilon = momentum, epsilon

    def make(self, input_shape):
        layer = {1: nn.BatchNorm1D, 3: nn.BatchNorm2D}.get(len(input_shape))
        if layer is None:
            raise ValueError(f"{self.describe()}: expected samples (features,) or (height, width, channels), "
                             f"got {input_shape}")
        return [layer(input_shape[-1], momentum=1 - self.momentum, eps=self.epsilon)], input_shape


__all__ = [
    "Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
    "GlobalAveragePooling2D", "Input", "InputLayer", "Layer", "MaxPooling2D", "ReLU", "Softmax",
]
