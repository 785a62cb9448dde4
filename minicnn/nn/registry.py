"""The registry of architecture types: how a checkpoint rebuilds a model from text, without pickle or eval.

Every layer and model that can describe itself registers its class here under its
class name (`@register`). `describe(module)` turns a module into JSON-able data,
`{"type": "Conv2D", "config": {...constructor arguments...}}`, and `build(description)`
makes the module again: only registered names are ever built, so nothing from a
file can name code to run. A custom layer whose `config()` returns its constructor
arguments joins with `nn.register(MyLayer)`.
"""

# class name -> class; exported as nn.LAYER_TYPES too (its older name)
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


def build(description):
    """The module that `describe` described, with freshly initialised weights; ValueError for anything else."""
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
