"""The registry of architecture types: how a checkpoint rebuilds a model from text, without pickle or eval.

Every layer and model that can describe itself registers its class here under its
class name (`@register`). `describe(module)` turns a module into JSON-able data,
`{"type": "Conv2D", "config": {...constructor arguments...}}`, and `build(description)`
makes the module again: only registered names are ever built, so nothing from a
file can name code to run. A custom layer whose `config()` returns its constructor
arguments joins with `nn.register(MyLayer)`.

`skeleton(description)` builds the module with zero-memory placeholders instead of
weights, so a checkpoint can compare the shapes it declares with the arrays it holds
before allocating anything; `build(description, weights=...)` then makes the module
from those arrays without drawing random weights first.
"""

import contextlib
import threading

import numpy as np

from .. import backend

_building = threading.local()  # .placeholders: True while skeleton() builds

# class name -> class
ARCHITECTURES = {}


def register(cls):
    """Add `cls` to the registry under its class name; returns cls (usable as a decorator)."""
    ARCHITECTURES[cls.__name__] = cls
    return cls


def shorten(value, limit=200):
    """repr(value), cut to `limit` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(module):
    """{"type": class name, "config": module.config()}; NotImplementedError for an unregistered class.

    A subclass of a registered layer may take other arguments, so only the registered class itself qualifies.
    """
    name = type(module).__name__
    if ARCHITECTURES.get(name) is not type(module):
        raise NotImplementedError(
            f"{name} is not one of the registered architecture types ({', '.join(sorted(ARCHITECTURES))}), "
            "so it cannot be described; its weights can still be saved, and loaded into a model you build "
            "(register it with nn.register if its config() returns its constructor arguments)"
        )
    return {"type": name, "config": module.config()}


def new_array(shape, make):
    """A new parameter or buffer array: make() moved to the default device, or, while skeleton()
    builds, a read-only placeholder of that shape and float32 that takes no memory (a broadcast
    view of one zero). Layers create every array through here.
    """
    if getattr(_building, "placeholders", False):
        try:
            return np.broadcast_to(np.zeros((), dtype=backend.DEFAULT_FLOAT), shape)
        except ValueError:  # more elements than an array can index
            raise ValueError(f"an array of shape {tuple(shape)} is too large to exist") from None
    return backend.to_device(make(), backend.default_device())


@contextlib.contextmanager
def _placeholders():
    previous = getattr(_building, "placeholders", False)
    _building.placeholders = True
    try:
        yield
    finally:
        _building.placeholders = previous


def skeleton(description):
    """The described module with placeholders (zero-memory, read-only) for its parameters and buffers.

    Its named_parameters() and named_buffers() give the names and shapes the module
    holds, found without allocating them; ValueError as build() raises it. Not for
    computing: load weights into a module from build(description, weights=...).
    """
    with _placeholders():
        return build(description)


def build(description, weights=None):
    """The module that `describe` described; ValueError for anything else.

    weights None: freshly initialised weights. weights: {dotted name: array} holding every
    parameter and buffer (as state_dict() names them): names and shapes are checked
    against skeleton(description) before anything is allocated, and the module is made
    from these arrays (cast to float32, on the default device) without drawing random ones.
    """
    if weights is not None:
        module = skeleton(description)
        _check_weights(module, weights)
        _fill(module, weights)
        return module
    if not (isinstance(description, dict) and isinstance(description.get("type"), str)
            and isinstance(description.get("config"), dict)):
        raise ValueError(f"expected {{'type': name, 'config': {{...}}}}, got {shorten(description)}")
    name, arguments = description["type"], description["config"]
    cls = ARCHITECTURES.get(name)
    if cls is None:
        raise ValueError(f"unknown type {name!r}; known types: {', '.join(sorted(ARCHITECTURES))}")
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(arguments)
        # JSON has no tuples; pairs such as kernel_size come back as lists.
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in arguments.items()})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} cannot be built from {shorten(arguments)}: {error}") from None


def state_shapes(module):
    """{dotted name: shape} of every parameter, then every buffer, of `module` (nothing copied)."""
    shapes = {name: tuple(parameter.shape) for name, parameter in module.named_parameters()}
    shapes.update((name, tuple(array.shape)) for name, array in module.named_buffers())
    return shapes


def _check_weights(module, weights):
    expected = state_shapes(module)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"the weights do not match the {type(module).__name__} "
                         f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"'{name}' has shape {tuple(weights[name].shape)} in the weights but {shape} "
                             f"in the {type(module).__name__}")


def _fill(module, weights):
    """Replace each placeholder of `module` by the array of the same name, as float32 on the default device."""
    device = backend.default_device()

    def converted(array):
        return backend.to_device(array if backend.is_array(array) else np.asarray(array), device).astype(backend.DEFAULT_FLOAT, copy=True)

    for name, parameter in module.named_parameters():
        parameter.data = converted(weights[name])
    for name, _ in list(module.named_buffers()):
        *path, attribute = name.split(".")
        owner = module
        for part in path:
            owner = dict(owner.named_children())[part]
        setattr(owner, attribute, converted(weights[name]))
