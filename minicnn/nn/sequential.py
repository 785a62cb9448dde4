"""Sequential: layers applied one after another."""

from ..errors import ShapeError
from .layers import BatchNorm1D, BatchNorm2D, Dropout, ReLU
from .module import Module

# Layers that do not decide which initialisation the layer before them needs.
PASS_THROUGH = (BatchNorm1D, BatchNorm2D, Dropout)


class Sequential(Module):
    """Layers applied one after another; parameters are named '0.weight', '1.bias', ..."""

    def __init__(self, *layers):
        super().__init__()
        for position, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {position} is a {type(layer).__name__}, not a Module")
        self.layers = list(layers)
        self._choose_initialisation()

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
        for position, layer in enumerate(self.layers):
            try:
                x = layer(x)
            except ShapeError as error:
                raise ShapeError(f"Sequential layer {position}: {error}") from None
        return x

    def __getitem__(self, position):
        return self.layers[position]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        lines = [f"  ({position}): {layer!r}" for position, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"
