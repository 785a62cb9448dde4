"""minicnn models to and from PyTorch state dicts, name by name.

A minicnn model whose attributes carry torchvision's names (conv1, bn1, layer1.0.conv1, fc, ...)
has torchvision's parameter names too, so the mapping is by name. Two differences in layout:
minicnn's Dense keeps its weight as (in_features, out_features) where torch's Linear keeps
(out, in), so a Dense weight is transposed on the way in and out (nn.Linear already has torch's
layout and is taken as is); and torch's BatchNorm has a `num_batches_tracked` counter, used only
when momentum is None, which minicnn's BatchNorm does not need: ignored when loading, written as 0.
"""

import collections
import os

import numpy as np

from .. import backend
from ..errors import CheckpointError, shown
from ..nn import BatchNorm1D, BatchNorm2D, Dense
from ..tensor import Tensor
from .torch_reader import read_torch_state_dict
from .torch_writer import write_torch_state_dict

# What load_torch_state_dict reports, as torch's load_state_dict does.
LoadReport = collections.namedtuple("LoadReport", ["missing_keys", "unexpected_keys"])

BATCH_NORMS = (BatchNorm1D, BatchNorm2D)
COUNTER = "num_batches_tracked"
SHOWN_KEYS = 8  # a message lists this many keys, then says how many more there are


def _named_modules(module, prefix=""):
    """(prefix, module) for the module and every sub-module, depth first: ('', model), ('conv1.', ...)."""
    yield prefix, module
    for name, child in module.named_children():
        yield from _named_modules(child, f"{prefix}{name}.")


def _targets(model):
    """{torch name: (owner module, attribute, is a Parameter)} in torch's order: each module's
    parameters, then its buffers, module by module depth first."""
    owners = dict(_named_modules(model))
    by_owner = collections.defaultdict(list)
    for name, _ in model.named_parameters():
        by_owner[name.rpartition(".")[0]].append((name, True))
    for name, _ in model.named_buffers():
        by_owner[name.rpartition(".")[0]].append((name, False))
    targets = {}
    for prefix in owners:
        for name, is_parameter in by_owner[prefix[:-1]]:
            targets[name] = (owners[prefix], name.rpartition(".")[2], is_parameter)
    return targets, owners


def _is_transposed(owner, attribute):
    return attribute == "weight" and isinstance(owner, Dense)  # nn.Linear keeps torch's (out, in) already


def to_torch_state_dict(model, path=None):
    """{torch name: NumPy array} for `model`, in PyTorch's names, layouts and order.

    Dense weights become (out_features, in_features); every BatchNorm gains `num_batches_tracked`
    (int64, 0) so that torch's load_state_dict(strict=True) accepts the result. With `path`, also
    writes it as torch.save would (minicnn.interop.write_torch_state_dict; no torch needed), so that
    `torch_model.load_state_dict(torch.load(path, weights_only=True))` carries the model to PyTorch.
    """
    targets, owners = _targets(model)
    state = {}
    for prefix, owner in owners.items():
        for name, (target_owner, attribute, _) in targets.items():
            if target_owner is not owner:
                continue
            value = getattr(owner, attribute)
            array = backend.to_numpy(value.data if isinstance(value, Tensor) else value)
            state[name] = np.array(array.T if _is_transposed(owner, attribute) else array, order="C")
        if isinstance(owner, BATCH_NORMS):
            state[prefix + COUNTER] = np.array(0, dtype=np.int64)
    if path is not None:
        write_torch_state_dict(state, path)
    return state


def load_torch_state_dict(model, state_or_path, strict=True):
    """Copy a PyTorch state dict into `model` by name; returns LoadReport(missing_keys, unexpected_keys).

    state_or_path: a file written by torch.save(model.state_dict(), path) (read with
    read_torch_state_dict, without torch), or a mapping {name: array}. Dense targets take the
    transpose of torch's (out, in) weight; `num_batches_tracked` of a BatchNorm is ignored.
    strict=True: a missing or unexpected key is a CheckpointError listing them all; strict=False
    loads the rest and reports them. A wrong shape is a CheckpointError naming the key and both
    shapes, whatever `strict` says. Nothing changes unless every check passes. Values are cast to
    the target's dtype and moved to its device.
    """
    where = type(model).__name__ + ".load_torch_state_dict"
    if isinstance(state_or_path, (str, os.PathLike)):
        where = f"{where}({os.fspath(state_or_path)})"
        state = read_torch_state_dict(state_or_path)
    elif isinstance(state_or_path, collections.abc.Mapping):
        state = state_or_path
    else:
        raise TypeError(f"{where}: expected a file path or a mapping {{name: array}}, "
                        f"got {type(state_or_path).__name__}")
    targets, owners = _targets(model)
    missing = [name for name in targets if name not in state]
    unexpected = [name for name in state if name not in targets and not _is_ignored_counter(name, owners)]
    if strict and (missing or unexpected):
        raise CheckpointError(f"{where}: the state dict does not match the model; missing keys: "
                              f"{_listed(missing)}; unexpected keys: {_listed(unexpected)}")
    arrays = {}
    for name, (owner, attribute, _) in targets.items():
        if name in state:
            arrays[name] = _converted(state[name], owner, attribute, name, where)
    for name, array in arrays.items():
        owner, attribute, is_parameter = targets[name]
        if is_parameter:
            getattr(owner, attribute).data = array
        else:
            # Filled in place, as Module.load_state_dict and PyTorch's copy_ do.
            getattr(owner, attribute)[...] = array
    return LoadReport(missing, unexpected)


def _listed(keys):
    """Keys as a message shows them: the first SHOWN_KEYS, each escaped as repr() does and cut
    (minicnn.errors.shown), so that a newline or a terminal escape in a key from a file cannot forge lines."""
    if not keys:
        return "none"
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return "[" + ", ".join(shown(key) for key in keys[:SHOWN_KEYS]) + "]" + more


def _is_ignored_counter(name, owners):
    if not isinstance(name, str):  # a mapping given in Python may hold any key; none is a counter
        return False
    prefix, _, attribute = name.rpartition(".")
    owner = owners.get(prefix + "." if prefix else "")
    return attribute == COUNTER and isinstance(owner, BATCH_NORMS)


def _converted(value, owner, attribute, name, where):
    """`value` checked against the target and converted to its layout, dtype and device."""
    target = getattr(owner, attribute)
    target = target.data if isinstance(target, Tensor) else target
    value = value.data if isinstance(value, Tensor) else value
    if not backend.is_array(value):
        try:
            value = np.asarray(value)
        except Exception as exc:  # a torch tensor that requires grad, an odd object
            raise CheckpointError(f"{where}: '{name}' is a {type(value).__name__} that NumPy cannot read "
                                  f"({str(exc)[:120]})") from None
    transposed = _is_transposed(owner, attribute)
    wanted = tuple(reversed(target.shape)) if transposed else tuple(target.shape)
    if tuple(value.shape) != wanted:
        layout = (f" (torch's (out, in) layout; {type(owner).__name__} keeps it transposed as "
                  f"{tuple(target.shape)})" if transposed else "")
        raise CheckpointError(f"{where}: '{name}' has shape {tuple(value.shape)} in the state dict but the "
                              f"model's {type(owner).__name__} expects {wanted}{layout}")
    if value.dtype.kind not in "fiub":
        raise CheckpointError(f"{where}: '{name}' has dtype {value.dtype}, expected a real number type")
    if transposed:
        value = value.T
    return backend.to_device(value, backend.device_of(target)).astype(target.dtype, copy=True)
