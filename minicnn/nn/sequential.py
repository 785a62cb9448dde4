"""Sequential: layers applied one after another, with summary() and an architecture description.

Training lives above nn (minicnn.training.Trainer, and the Keras-style minicnn.keras.Sequential).
"""

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..tensor import Tensor, no_grad
from .layers import BatchNorm1D, BatchNorm2D, Dropout, MaxPool2D, ReLU
from .module import Module
from .registry import build, describe, register, shorten

# Layers that do not decide which initialisation the layer before them needs.
PASS_THROUGH = (BatchNorm1D, BatchNorm2D, Dropout)


def pools_before_relu(pair):
    """True when `pair` (a list of one or two layers) is a ReLU then a MaxPool2D, neither with hooks.

    Max pooling commutes with ReLU: max(relu(a), relu(b)) = relu(max(a, b)), and the gradients
    agree too (the first maximum of the ReLU's outputs is the first maximum of its inputs when
    that maximum is positive, and both gradients are zero when it is not). Pooling first runs
    the ReLU on a quarter of the values (2x2 windows), forward and backward: the same numbers
    with less work. A hook on either layer sees each layer's own input and output, so hooked
    layers run in their written order.
    """
    return (len(pair) == 2 and type(pair[0]) is ReLU and isinstance(pair[1], MaxPool2D)
            and type(pair[1]).forward is MaxPool2D.forward  # MaxPool2d, PyTorch's spelling, is MaxPool2D's subclass
            and not any(layer._forward_hooks or layer._backward_hooks for layer in pair))


@register
class Sequential(Module):
    """Layers applied one after another; parameters are named '0.weight', '1.bias', ...

    input_shape: optional shape of one sample without the batch axis, e.g. (1, 28, 28),
    used by summary() and kept in the architecture description.
    """

    def __init__(self, *layers, input_shape=None):
        super().__init__()
        for position, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {position} is a {type(layer).__name__}, not a Module")
        self.layers = list(layers)
        if input_shape is not None and not (
                isinstance(input_shape, (tuple, list)) and 1 <= len(input_shape) <= 8
                and all(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and 1 <= size <= 2**31 - 1
                        for size in input_shape)):
            raise ValueError(f"Sequential: input_shape must be a tuple of 1 to 8 positive ints (one sample's shape), "
                             f"got {shorten(input_shape)}")
        self.input_shape = tuple(int(size) for size in input_shape) if input_shape is not None else None
        self._choose_initialisation()

    def config(self):
        """The architecture as JSON-able data, which from_config builds again:

        {"layers": [{"type": "Conv2D", "config": {"in_channels": 1, ...}}, ...], "input_shape": [1, 28, 28]}

        Raises NotImplementedError when a layer is not a registered type (see nn.registry).
        """
        layers = []
        for position, layer in enumerate(self.layers):
            try:
                layers.append(describe(layer))
            except NotImplementedError as error:
                raise NotImplementedError(f"Sequential.config: layer {position}: {error}") from None
        config = {"layers": layers}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        """Build the Sequential that config() described, with freshly initialised weights.

        Only registered layer types are built (never pickle or eval); raises ValueError
        for anything else, naming the layer's position.
        """
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"Sequential.from_config: expected {{'layers': [...]}}, got {shorten(config)}")
        layers = []
        for position, entry in enumerate(config["layers"]):
            try:
                layers.append(build(entry))
            except ValueError as error:
                raise ValueError(f"Sequential.from_config: layer {position}: {error}") from None
        return cls(*layers, input_shape=config.get("input_shape"))

    def _choose_initialisation(self):
        # He init for a layer followed by ReLU, Glorot otherwise, for layers left on init="auto".
        # Batch norm and dropout sit between a layer and its activation without changing the choice.
        for position, layer in enumerate(self.layers):
            if getattr(layer, "init", None) != "auto":
                continue
            following = [other for other in self.layers[position + 1 :] if not isinstance(other, PASS_THROUGH)]
            wanted = "he" if following and isinstance(following[0], ReLU) else "glorot"
            if layer.init_used != wanted:
                layer.reset_parameters(wanted)

    def named_children(self):
        for position, layer in enumerate(self.layers):
            yield str(position), layer

    def forward(self, x):
        """Each layer in turn, except that a ReLU right before a max pool runs after it (`pools_before_relu`)."""
        position = 0
        while position < len(self.layers):
            if pools_before_relu(self.layers[position : position + 2]):
                x = self._run_layer(position, self._run_layer(position + 1, x))
                position += 2
            else:
                x = self._run_layer(position, x)
                position += 1
        return x

    def _run_layer(self, position, x):
        try:
            return self.layers[position](x)
        except ShapeError as error:
            raise ShapeError(f"Sequential layer {position}: {error}") from None

    def __getitem__(self, position):
        return self.layers[position]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        lines = [f"  ({position}): {layer!r}" for position, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

    def summary(self, input_shape=None):
        """Print (and return) each layer's output shape and parameter count, found by one forward pass.

        input_shape: one sample's shape without the batch axis, e.g. (1, 28, 28); default self.input_shape.
        """
        input_shape = input_shape or self.input_shape
        if input_shape is None:
            raise ValueError("Sequential.summary: pass input_shape=(C, H, W), one sample's shape without the "
                             "batch axis, or build the model with Sequential(..., input_shape=...)")
        x = Tensor(backend.to_device(np.zeros((1, *input_shape), backend.DEFAULT_FLOAT), self.device))
        rows = [("input", "(N, " + ", ".join(map(str, input_shape)) + ")", 0)]
        # eval mode: a dummy batch must not move batch norm's running statistics
        with self.evaluating(), no_grad():
            for position, layer in enumerate(self.layers):
                x = self._run_layer(position, x)
                count = sum(parameter.numel() for parameter in layer.parameters())
                rows.append((f"{position}: {layer!r}", "(N, " + ", ".join(map(str, x.shape[1:])) + ")", count))
        width = max(len(name) for name, _, _ in rows)
        lines = [f"{'layer':<{width}}  {'output shape':<20}  {'parameters':>10}"]
        lines += [f"{name:<{width}}  {shape:<20}  {count:>10,}" for name, shape, count in rows]
        lines.append(f"total parameters: {sum(count for _, _, count in rows):,}")
        text = "\n".join(lines)
        print(text)
        return text
