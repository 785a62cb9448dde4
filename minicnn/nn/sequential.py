"""Sequential: layers applied one after another, with Keras-style compile / fit / evaluate / predict / summary."""

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..tensor import Tensor, no_grad
from .layers import LAYER_TYPES, BatchNorm1D, BatchNorm2D, Dropout, ReLU
from .module import Module

# Layers that do not decide which initialisation the layer before them needs.
PASS_THROUGH = (BatchNorm1D, BatchNorm2D, Dropout)


def _shorten(value, limit=200):
    """repr(value), cut to `limit` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.trainer = None  # set by compile()
        self._choose_initialisation()

    def config(self):
        """The architecture as JSON-able data, which from_config builds again:

        {"type": "Sequential", "layers": [{"type": "Conv2D", "config": {"in_channels": 1, ...}}, ...]}

        Raises NotImplementedError when a layer is not a registered type (nn.LAYER_TYPES).
        """
        layers = []
        for position, layer in enumerate(self.layers):
            name = type(layer).__name__
            # A subclass of a built-in layer may take other arguments, so only registered classes qualify.
            if LAYER_TYPES.get(name) is not type(layer):
                raise NotImplementedError(
                    f"Sequential.config: layer {position} is a {name}, not one of the layer types in "
                    f"nn.LAYER_TYPES ({', '.join(sorted(LAYER_TYPES))}), so the architecture cannot be "
                    "described; its weights can still be saved, and loaded into a model you build"
                )
            layers.append({"type": name, "config": layer.config()})
        config = {"type": "Sequential", "layers": layers}
        if self.input_shape is not None:
            config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        """Build the Sequential that config() described, with freshly initialised weights.

        Only layer types named in nn.LAYER_TYPES are built (never pickle or eval);
        raises ValueError for anything else, naming the layer's position.
        """
        if not isinstance(config, dict) or config.get("type") != "Sequential" or not isinstance(config.get("layers"), list):
            raise ValueError(
                "Sequential.from_config: expected {'type': 'Sequential', 'layers': [...]}, "
                f"got {_shorten(config)}"
            )
        layers = []
        for position, entry in enumerate(config["layers"]):
            if not (isinstance(entry, dict) and isinstance(entry.get("type"), str) and isinstance(entry.get("config"), dict)):
                raise ValueError(
                    f"Sequential.from_config: layer {position} should be {{'type': name, 'config': {{...}}}}, "
                    f"got {_shorten(entry)}"
                )
            name, arguments = entry["type"], entry["config"]
            layer_class = LAYER_TYPES.get(name)
            if layer_class is None:
                raise ValueError(
                    f"Sequential.from_config: layer {position} has unknown type {name!r}; "
                    f"known types: {', '.join(sorted(LAYER_TYPES))}"
                )
            try:
                if hasattr(layer_class, "from_config"):
                    layers.append(layer_class.from_config(arguments))
                else:
                    # JSON has no tuples; pairs such as kernel_size come back as lists.
                    layers.append(layer_class(**{key: tuple(value) if isinstance(value, list) else value
                                                 for key, value in arguments.items()}))
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"Sequential.from_config: layer {position} ({name}) cannot be built from "
                    f"{_shorten(arguments)}: {error}"
                ) from None
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

    # ----- Keras-style training: thin calls into minicnn.training.Trainer -----------------------------
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",), lr=None,
                schedule=None):
        """Choose the optimizer ('adam', 'sgd' (momentum 0.9) or an optim.Optimizer), the loss and the metrics."""
        from ..training import Trainer  # imported here: training builds on nn, not the other way round

        self.trainer = Trainer(self, optimizer, loss, metrics, lr, schedule)
        return self

    @property
    def optimizer(self):
        """The optimizer chosen by compile()."""
        return self._trainer("optimizer").optimizer

    def fit(self, x, y=None, epochs=1, batch_size=64, validation_data=None, **options):
        """Train on images x (N, [C,] H, W) and labels y (N,); returns the History. See Trainer.fit."""
        return self._trainer("fit").fit(x, y, epochs=epochs, batch_size=batch_size,
                                        validation_data=validation_data, **options)

    def evaluate(self, x, y=None, batch_size=256):
        """{'loss', 'accuracy', 'precision', 'recall', 'f1', 'confusion_matrix'} on x, y. See Trainer.evaluate."""
        return self._trainer("evaluate").evaluate(x, y, batch_size)

    def predict(self, x, batch_size=256):
        """The model's outputs (logits) for images x, as a NumPy array (N, classes)."""
        return self._trainer("predict", compiled=False).predict(x, batch_size)

    def _trainer(self, method, compiled=True):
        if self.trainer is None:
            if compiled:
                raise RuntimeError(f"Sequential.{method}: call compile(optimizer=..., loss=...) first")
            from ..training import Trainer

            return Trainer(self)
        return self.trainer

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
                try:
                    x = layer(x)
                except ShapeError as error:
                    raise ShapeError(f"Sequential layer {position}: {error}") from None
                count = sum(parameter.size for parameter in layer.parameters())
                rows.append((f"{position}: {layer!r}", "(N, " + ", ".join(map(str, x.shape[1:])) + ")", count))
        width = max(len(name) for name, _, _ in rows)
        lines = [f"{'layer':<{width}}  {'output shape':<20}  {'parameters':>10}"]
        lines += [f"{name:<{width}}  {shape:<20}  {count:>10,}" for name, shape, count in rows]
        lines.append(f"total parameters: {sum(count for _, _, count in rows):,}")
        text = "\n".join(lines)
        print(text)
        return text
