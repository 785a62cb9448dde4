"""Sequential: layers applied one after another."""

from ..errors import ShapeError
from .layers import ReLU
from .module import Module


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
        for layer, following in zip(self.layers, self.layers[1:] + [None]):
            if getattr(layer, "init", None) == "auto":
                wanted = "he" if isinstance(following, ReLU) else "glorot"
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
