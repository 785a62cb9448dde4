"""Weight initialisers: He (Kaiming) normal for layers followed by ReLU, Glorot (Xavier) uniform otherwise.

Each draws on the CPU from minicnn's seeded generator (so a seed gives the same
weights on every device) and returns a float32 NumPy array.
"""

import numpy as np

from ..backend import DEFAULT_FLOAT, cpu_rng


def fans(shape):
    """(fan_in, fan_out) of a weight: (in, out) for Dense, (F, C, KH, KW) for Conv2D."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = int(np.prod(shape[2:]))
    return shape[1] * receptive_field, shape[0] * receptive_field


def he_normal(shape):
    """N(0, 2 / fan_in): keeps activation variance constant through ReLU layers."""
    fan_in, _ = fans(shape)
    return (cpu_rng().standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(DEFAULT_FLOAT)


def glorot_uniform(shape):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): balances forward and backward variance."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return cpu_rng().uniform(-limit, limit, shape).astype(DEFAULT_FLOAT)


INITIALIZERS = {"he": he_normal, "glorot": glorot_uniform}


def initializer(name):
    """The initialiser called `name` ('he' or 'glorot')."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initialiser {name!r}; expected one of {sorted(INITIALIZERS)}") from None
