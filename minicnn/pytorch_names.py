"""PyTorch's top-level spellings, so that `import minicnn as torch` runs PyTorch tutorial code.

minicnn's own functions (minicnn.functional) follow NumPy: F.max(x, axis) is a
reduction. PyTorch's torch.max(x, dim) also returns where each maximum is; that
is what minicnn.max does, and minicnn.flatten is torch.flatten.
"""

import collections

from . import functional as F
from .backend import is_array
from .tensor import Tensor

MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _tensor(x):
    return Tensor(x) if is_array(x) else x


def max(input, dim=None, keepdim=False):  # noqa: A001 - PyTorch's name
    """torch.max: the largest element (a 0-d Tensor) or, with dim, (values, indices) along dim.

    input: a Tensor or a raw array (as `outputs.data` gives); values keep the gradient, indices
    (int64) have none; ties pick the first maximum, as argmax does.
    """
    input = _tensor(input)
    if dim is None:
        return F.max(input)
    indices = F.argmax(input, axis=dim)
    if keepdim:
        indices = Tensor(indices.data.reshape(F.max(input, axis=dim, keepdims=True).shape))
    return MaxResult(F.max(input, axis=dim, keepdims=keepdim), indices)


def flatten(input, start_dim=0):
    """torch.flatten: merge the axes from start_dim on.  (N, C, H, W), start_dim=1 -> (N, C*H*W)."""
    input = _tensor(input)
    return F.reshape(input, *input.shape[:start_dim], -1)
