"""Answers with NaN or infinite numbers, made valid JSON: each such number becomes null, and a warning says so.

JSON has no NaN or Infinity (json.dumps(..., allow_nan=False) refuses them; without it Python writes `NaN`,
which other JSON readers refuse). A model whose weights diverged in training gives such outputs, and the
answer should say that plainly rather than fail:

    clean, count = replace_non_finite({"probabilities": [nan, 0.5]})   # ({"probabilities": [None, 0.5]}, 1)
    if count:
        clean["warning"] = non_finite_warning(count)

Used by `minicnn serve` for every answer; `minicnn predict --json` can use the same two functions.
"""

import math

import numpy as np


def replace_non_finite(value):
    """(a copy of value with every NaN or infinite number as None, how many were replaced).

    value: JSON-like data (dicts, lists, tuples, str, bool, None, int, float), with NumPy scalars and
    arrays allowed too (arrays become nested lists). Tuples become lists, as JSON writes them.
    """
    count = 0

    def clean(item):
        nonlocal count
        if isinstance(item, np.ndarray):
            item = item.tolist()
        elif isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, float):
            if math.isfinite(item):
                return item
            count += 1
            return None
        if isinstance(item, dict):
            return {key: clean(child) for key, child in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(child) for child in item]
        return item

    return clean(value), count


def non_finite_warning(count):
    """The one-line warning that goes with an answer in which `count` numbers were NaN or infinite."""
    numbers = "1 number" if count == 1 else f"{count} numbers"
    return (f"{numbers} in this answer came out NaN or infinite and are given as null: the model's weights or "
            "outputs are not finite (a training run that diverged, e.g. with too high a learning rate), so its "
            "prediction means nothing")
