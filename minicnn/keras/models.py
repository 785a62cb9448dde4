"""keras.Sequential on minicnn: add layers, compile, fit, evaluate, predict, summary, as the Keras tutorials write it.

Inside, the model is one minicnn.nn.Sequential (`model.network`, channels-first as
all of minicnn is) trained by minicnn.training.Trainer. What Keras does and this
module copies: images come channels-last, (N, H, W, C) (or (N, H, W) for one
channel), as NumPy arrays and are used as given (no scaling: divide by 255
yourself, as the tutorials do); `fit` returns a History whose `.history` holds
this call's epochs; `evaluate` returns the loss, or [loss, metric, ...];
`predict` returns the last layer's outputs (probabilities after a softmax).
A final softmax trained with sparse categorical cross-entropy is not applied
twice: training uses the scores before it and the fused, stable cross-entropy.
"""

import warnings

import numpy as np

from .. import backend, nn
from .. import functional as F
from ..data import DataLoader
from ..errors import ShapeError
from ..tensor import Tensor, no_grad, snake_case
from ..training import Trainer
from . import losses, optimizers
from .callbacks import History
from .layers import InputLayer, Layer

ACCURACY_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")


class Sequential:
    """A stack of Keras layers: Sequential([layers...]) or Sequential() then add(layer).

    The first layer gives the shape of one sample, channels last (input_shape=(28, 28, 1),
    or a keras.Input(shape=...) first); without it the model is built at the first fit.
    """

    def __init__(self, layers=None, name=None):
        self.name = name or "sequential"
        self.layers = []
        self.input_shape = None  # one sample, channels last
        self.network = None  # the nn.Sequential, once built
        self.compiled = None  # (optimizer settings, loss settings, metric names)
        self.trainer = None
        self.epochs_trained = 0
        for layer in layers or ():
            self.add(layer)

    # ----- building -------------------------------------------------------------------------------
    def add(self, layer):
        """Append a layer; it is built at once when the input shape is known."""
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ValueError(f"{self.name}: keras.Input must come before every layer")
            self.input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"{self.name}.add: expected a keras layer, got {type(layer).__name__}")
        if layer.name is None:
            base = snake_case(type(layer).__name__)
            taken = sum(snake_case(type(other).__name__) == base for other in self.layers)
            layer.name = base if taken == 0 else f"{base}_{taken}"
        if not self.layers and self.input_shape is None and layer.input_shape is not None:
            self.input_shape = layer.input_shape
        self.layers.append(layer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def build(self, input_shape):
        """Build every layer for samples of input_shape (channels last) and string their modules together."""
        self.input_shape = tuple(input_shape)
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape if layer.modules is not None else layer.build(shape)
        modules = [module for layer in self.layers for module in layer.modules]
        self.network = nn.Sequential(*modules, input_shape=self._channels_first(self.input_shape))
        self.trainer = None  # the optimizer must see the new parameters
        return self

    @staticmethod
    def _channels_first(shape):
        return (shape[-1],) + tuple(shape[:-1]) if len(shape) == 3 else tuple(shape)

    def _built_for(self, x):
        if self.network is None:
            if not self.layers:
                raise ValueError(f"{self.name}: the model has no layers; add some first")
            # (N, H, W) images for a convolution or pooling get their channel axis, as Keras wants it given.
            needs_channels = x.ndim == 3 and self.layers[0].takes_images
            self.build(x.shape[1:] + (1,) if needs_channels else x.shape[1:])
        return self.network

    def _images(self, x):
        """NumPy images channels last (N, H, W, C) or (N, H, W) -> float32 (N, C, H, W); other data as float32."""
        if isinstance(x, Tensor):
            x = x.numpy()
        x = np.asarray(x)
        if x.ndim < 2:
            raise ShapeError(f"{self.name}: expected a batch of samples (N, ...), got an array of shape {x.shape}")
        self._built_for(x)
        expected = self.input_shape
        if x.shape[1:] != expected:
            if len(expected) == 3 and expected[-1] == 1 and x.shape[1:] == expected[:-1]:
                x = x[..., None]  # (N, H, W): one channel
            else:
                raise ShapeError(f"{self.name}: expected input of shape (N, {', '.join(map(str, expected))}) "
                                 f"(channels last), got {x.shape}")
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=backend.DEFAULT_FLOAT)

    def __call__(self, x):
        """The outputs for a batch x (NumPy, channels last) as a Tensor."""
        return self.network(Tensor(backend.to_device(self._images(x), self.network.device)))

    # ----- training -------------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None):
        """optimizer: 'adam', 'sgd' or keras.optimizers.Adam/SGD(...); loss: 'sparse_categorical_crossentropy'
        (integer labels), 'categorical_crossentropy' (one-hot or soft labels, (N, classes)) or their classes
        in keras.losses, e.g. SparseCategoricalCrossentropy(from_logits=True); metrics: None or ['accuracy'].
        """
        metrics = list(metrics or [])
        unknown = [name for name in metrics if name not in ACCURACY_NAMES]
        if unknown:
            raise ValueError(f"{self.name}.compile: unknown metrics {unknown}; minicnn.keras offers 'accuracy'")
        if loss is None:
            raise ValueError(f"{self.name}.compile: pass loss='sparse_categorical_crossentropy' (integer labels) "
                             "or loss='categorical_crossentropy' (one-hot labels)")
        self.compiled = (optimizers.get(optimizer), losses.get(loss), metrics)
        self.trainer = None

    def _trainer(self, method):
        if self.compiled is None:
            raise RuntimeError(f"{self.name}.{method}: call compile(optimizer=..., loss=...) first")
        if self.trainer is None:
            optimizer_settings, _, _ = self.compiled
            network = self._training_network()
            self.trainer = Trainer(network, optimizer=optimizer_settings.create(network.parameters()),
                                   loss=F.cross_entropy)
        return self.trainer

    def _training_network(self):
        """The network whose outputs the fused cross-entropy takes: without a final softmax unless from_logits."""
        from_logits = self.compiled[1].from_logits
        ends_in_softmax = isinstance(self.network.layers[-1], nn.Softmax)
        if ends_in_softmax and not from_logits:
            return nn.Sequential(*self.network.layers[:-1], input_shape=self.network.input_shape)
        if ends_in_softmax:
            warnings.warn(f"{self.name}: the loss has from_logits=True but the last layer is a softmax, so the "
                          "softmax is applied twice (as Keras would); drop one of them", stacklevel=3)
        elif not from_logits:
            raise ValueError(f"{self.name}: the loss expects probabilities (from_logits=False) but the last layer "
                             "has no softmax; give it activation='softmax', or use "
                             f"keras.losses.{type(self.compiled[1]).__name__}(from_logits=True)")
        return self.network

    def _labels(self, y, method):
        """y as the compiled loss takes it: integer class indices (N,) for the sparse loss (Keras's (N, 1)
        too), float class probabilities (N, classes) for the categorical one. Labels of the other kind
        are refused with what Keras would advise, before a DataLoader sees them."""
        loss = self.compiled[1]
        y = np.asarray(y.numpy() if isinstance(y, Tensor) else y)
        classes = self.layers[-1].output_shape[-1] if self.layers and self.layers[-1].output_shape else None
        if loss.one_hot:
            if y.ndim != 2 or y.shape[1] == 1:
                raise ValueError(
                    f"{self.name}.{method}: loss='categorical_crossentropy' takes one-hot labels (N, classes), got "
                    f"labels of shape {y.shape}, which are class indices; as Keras says: use "
                    "loss='sparse_categorical_crossentropy' with integer labels, or one-hot them with "
                    "keras.utils.to_categorical(y)")
            if classes is not None and y.shape[1] != classes:
                raise ShapeError(f"{self.name}.{method}: one-hot labels of shape {y.shape} for a model with "
                                 f"{classes} outputs; each label needs one column per class")
            return y.astype(backend.DEFAULT_FLOAT)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # Keras's CIFAR-10 labels, (N, 1)
        if y.ndim != 1:
            raise ValueError(
                f"{self.name}.{method}: loss='sparse_categorical_crossentropy' takes integer labels (N,), got "
                f"labels of shape {y.shape}, which look one-hot; as Keras says: use loss='categorical_crossentropy' "
                "with one-hot labels, or pass integer labels (y.argmax(axis=1))")
        if y.dtype.kind == "f" and np.array_equal(y, np.round(y)):
            y = y.astype(np.int64)  # whole numbers stored as floats, which Keras casts too
        return y

    def fit(self, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0):
        """Train on images x (N, H, W, C) or (N, H, W) and labels y: integer (N,) for the sparse loss,
        one-hot (N, classes) for the categorical one. Returns a History."""
        x = self._images(x)
        trainer = self._trainer("fit")
        y = self._labels(y, "fit")
        if validation_split and validation_data is None:
            # As Keras: the last fraction of the data, taken before any shuffling.
            keep = int(len(x) * (1 - validation_split))
            validation_data = (x[keep:], y[keep:])
            x, y = x[:keep], y[:keep]
        elif validation_data is not None:
            validation_data = (self._images(validation_data[0]), self._labels(validation_data[1], "fit"))
        already = {key: len(values) for key, values in trainer.history.items()}
        # A new shuffle seed for each call, so that a second fit does not repeat the first one's order.
        trainer.fit(x, y, epochs=epochs, batch_size=batch_size or 32, validation_data=validation_data,
                    shuffle=shuffle, seed=self.epochs_trained, initial_epoch=initial_epoch,
                    callbacks=callbacks or (), verbose=verbose)
        history = {key: list(values[already.get(key, 0):]) for key, values in trainer.history.items()
                   if key in self._history_keys() and len(values) > already.get(key, 0)}
        done = len(history.get("loss", []))
        self.epochs_trained += done
        return History(history, list(range(initial_epoch, initial_epoch + done)),
                       {"epochs": epochs, "steps": -(-len(x) // (batch_size or 32)), "verbose": verbose})

    def _history_keys(self):
        wanted = ["loss"] + (["accuracy"] if self.compiled[2] else [])
        return wanted + ["val_" + key for key in wanted]

    def evaluate(self, x, y, batch_size=None, verbose="auto", return_dict=False):
        """The loss on x, y, or [loss, accuracy] when compiled with metrics=['accuracy'] (a dict with return_dict)."""
        trainer = self._trainer("evaluate")
        result = trainer.evaluate(self._images(x), self._labels(y, "evaluate"), batch_size or 32)
        names = ["loss"] + self.compiled[2]
        values = [result["loss"]] + [result["accuracy"]] * len(self.compiled[2])
        if verbose:
            print(" - ".join(f"{name}: {value:.4f}" for name, value in zip(names, values)), flush=True)
        if return_dict:
            return dict(zip(names, values))
        return values if len(values) > 1 else values[0]

    def predict(self, x, batch_size=None, verbose=0):
        """The last layer's outputs for x as a NumPy array (N, ...), in inference mode."""
        network = self.network if self.network is not None else self._built_for(np.asarray(x))
        loader = DataLoader(self._images(x), batch_size=batch_size or 32, device=network.device)
        outputs = []
        with network.evaluating(), no_grad():
            for batch in loader:
                outputs.append(backend.to_numpy(network(batch).data))
        return np.concatenate(outputs)

    # ----- description ----------------------------------------------------------------------------
    def count_params(self):
        return sum(parameter.numel() for parameter in self.network.parameters())

    def summary(self):
        """Print (and return) each layer's name, output shape (channels last) and parameter count, as Keras does."""
        if self.network is None:
            raise ValueError(f"{self.name}.summary: the model is not built yet; give the first layer "
                             "input_shape=(...), or fit it first")
        rows = [(f"{layer.name} ({type(layer).__name__})", "(None, " + ", ".join(map(str, layer.output_shape)) + ")",
                 f"{layer.count_params():,}") for layer in self.layers]
        trainable = self.count_params()
        frozen = sum(buffer.size for buffer in self.network.buffers())
        width = max(len("Layer (type)"), *(len(name) for name, _, _ in rows)) + 2
        line = "_" * (width + 40)
        lines = [f'Model: "{self.name}"', line, f"{'Layer (type)':<{width}}{'Output Shape':<28}Param #", "=" * len(line)]
        lines += [f"{name:<{width}}{shape:<28}{count}" for name, shape, count in rows]
        lines += ["=" * len(line), f"Total params: {trainable + frozen:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {frozen:,}", line]
        text = "\n".join(lines)
        print(text)
        return text
