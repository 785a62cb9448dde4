"""Backend-specific fast paths: CuPy kernels for the window operations, each with a reference twin.

The twins are the array-module code in minicnn.functional (conv.columns and
col2im, pooling.MaxPool2d), which runs on NumPy and on CuPy alike. On CuPy
arrays of float32 or float64 the gather-only kernels of windows.cu take their
place, unless MINICNN_CUPY_KERNELS=0 or inside `with kernels.reference_only():`,
which is how the tests and the benchmarks compare the two.
"""

import contextlib
import os

from ..backend import is_cupy_array

_enabled = os.environ.get("MINICNN_CUPY_KERNELS", "1") != "0"


def active_for(array):
    """True when `array` is a float32/float64 CuPy array and the kernels are on."""
    return _enabled and is_cupy_array(array) and array.dtype.kind == "f" and array.dtype.itemsize in (4, 8)


@contextlib.contextmanager
def reference_only():
    """Within the block, CuPy arrays take the same array-module path as NumPy arrays."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved
