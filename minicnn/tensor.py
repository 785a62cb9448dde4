"""Tensor, Operation and reverse-mode differentiation.

A Tensor wraps one backend array (NumPy or CuPy). Calling an Operation on
tensors runs its `forward` on the raw arrays and, when any input requires a
gradient, records the operation as the output's `creator`. `Tensor.backward`
then walks that graph in reverse topological order, found iteratively so that
a chain of any length works, and calls each operation's `backward`.

Tensor's operators and array methods (`+`, `@`, `**`, comparisons, indexing,
`reshape`, `view`, `.T`, `sum`, `mean`, `max`, `exp`, `astype`, ...) are not
written here: they are installed in one place, from the one table
`TENSOR_METHODS` in `minicnn/functional/tensor_methods.py`, next to the
operations they call, so that this module imports nothing above it.

Two small inspection points live here too: `Tensor.register_hook` (see or
replace a gradient as backward passes it on) and `set_op_timer`, through which
`minicnn.profiler` times every operation's forward and backward.
"""

import contextlib
import functools
import re

import numpy as np

from . import backend

_grad_enabled = True

# Set by minicnn.profiler while a profile() block is active: an object called as
# timer(operation, phase, method, arguments) that runs method(*arguments) and times it.
# None otherwise, so the hot path pays one `is None` test per operation.
_op_timer = None


def set_op_timer(timer):
    """Install `timer` as the operation timer (None removes it); returns the previous one.

    timer(operation, phase, method, arguments) must run method(*arguments), phase being
    'forward' or 'backward', and return its result. minicnn.profiler is the one user.
    """
    global _op_timer
    previous, _op_timer = _op_timer, timer
    return previous


class RemovableHandle:
    """Returned by register_hook and the Module hook methods: `handle.remove()` unregisters the hook.

    Removing twice is harmless.
    """

    def __init__(self, hooks, hook):
        self._hooks = hooks
        self._hook = hook

    def remove(self):
        if self._hooks is not None and self._hook in self._hooks:
            self._hooks.remove(self._hook)
        self._hooks = None  # a second remove() must not take out the same function registered again


@contextlib.contextmanager
def no_grad():
    """Within this block operations record no graph (inference, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def _is_floating(array):
    return array.dtype.kind == "f"


def _as_array(data, device, dtype):
    """Convert Python data or an array to a backend array on `device`.

    Python floats and lists of floats become float32 (minicnn's default);
    integers stay integer; a NumPy/CuPy array keeps its dtype unless `dtype` is given.
    """
    if not backend.is_array(data):
        data = np.asarray(data)
        if dtype is None and data.dtype.kind == "f":
            dtype = backend.DEFAULT_FLOAT
    array = backend.to_device(data, device)
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    return array


class Tensor:
    """An n-d array with an optional gradient and the operation that created it.

    data: the backend array; grad: an array of the same shape, or None;
    creator: the Operation that produced this tensor (None for leaves).
    """

    # Make NumPy defer to Tensor's reflected operators in `ndarray + Tensor`.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not backend.is_array(data):
            data = _as_array(data, backend.default_device(), None)
        if requires_grad and not _is_floating(data):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {data.dtype} "
                "(integer tensors hold labels and indices)"
            )
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.creator = None
        self._retains_grad = False
        self._hooks = None  # a list once register_hook is called

    # ----- description -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def size(self, dim=None):
        """The shape, or its length along `dim` (PyTorch's size(); NumPy's element count is numel())."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        """The number of elements."""
        return self.data.size

    @property
    def device(self):
        """'cpu' for a NumPy array, 'gpu' for a CuPy array."""
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.creator is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), prefix="Tensor(", separator=", ")
        extras = f", device='{self.device}'" if self.device != "cpu" else ""
        if self.requires_grad:
            extras += ", requires_grad=True"
        return f"Tensor({body}, dtype={self.dtype}{extras})"

    # ----- conversion --------------------------------------------------------------------
    def numpy(self):
        """A host (NumPy) copy of the data."""
        return backend.to_numpy(self.data)

    def item(self):
        """The single element as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(-1)[0].item()

    def to(self, device):
        """This tensor on `device` ('cpu' or 'gpu'): itself if already there, else a new leaf."""
        if self.device == backend.check_device_name(device):
            return self
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    def detach(self):
        """A new leaf sharing this tensor's data, cut off from the graph."""
        return Tensor(self.data)

    def retain_grad(self):
        """Keep `.grad` on this non-leaf tensor after backward (leaves always keep it)."""
        self._retains_grad = True
        return self

    def register_hook(self, fn):
        """Call fn(grad) during backward with this tensor's complete gradient (a raw array of
        the tensor's shape), just before it is passed on to its creator's backward (or, for a
        leaf, accumulated into .grad). If fn returns an array, that array replaces the gradient.

        Returns a RemovableHandle; handle.remove() unregisters fn.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "register_hook: this tensor does not require grad, so backward never reaches it"
            )
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(fn)
        return RemovableHandle(self._hooks, fn)

    def _run_hooks(self, grad):
        for hook in list(self._hooks):  # a copy: a hook may remove itself
            replacement = hook(grad)
            if replacement is not None:
                replacement = replacement.data if isinstance(replacement, Tensor) else replacement
                if replacement.shape != self.shape:
                    raise RuntimeError(
                        f"a gradient hook on a tensor of shape {self.shape} returned an array of "
                        f"shape {replacement.shape}; it must return None or an array of the same shape"
                    )
                grad = replacement
        return grad

    # ----- differentiation -----------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad.

        grad: the gradient flowing into this tensor; may be omitted for a one-element
        tensor (a loss), where it is 1. The graph is released afterwards unless
        retain_graph=True, so intermediate arrays are freed step after step.
        """
        grads = {id(self): self._seed_gradient(grad)}  # id(tensor) -> d(self)/d(tensor), summed over its uses
        for tensor in _reverse_topological_order(self):
            grad = grads.pop(id(tensor), None)
            if grad is None:  # every path to this tensor was cut (a None gradient)
                continue
            if tensor._hooks:
                grad = tensor._run_hooks(grad)
            if tensor.is_leaf or tensor._retains_grad:
                _accumulate_into_grad(tensor, grad)
            if tensor.is_leaf:
                continue
            operation = tensor.creator
            input_grads = _run_backward(operation, grad)
            for parent, parent_grad in zip(operation.inputs, input_grads):
                if parent.requires_grad and parent_grad is not None:
                    parent_grad = _checked_input_grad(operation, parent, parent_grad)
                    key = id(parent)
                    grads[key] = grads[key] + parent_grad if key in grads else parent_grad
            if not retain_graph:
                operation.release()

    def _seed_gradient(self, grad):
        """The gradient backward starts from: 1 for a one-element tensor, else `grad` checked against self."""
        if not self.requires_grad:
            raise RuntimeError(
                "backward() was called on a tensor that does not require grad: none of the "
                "inputs it was computed from had requires_grad=True, or it was computed "
                "under no_grad()"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor (a loss), "
                    f"but this tensor has shape {self.shape}; pass grad= of that shape"
                )
            return xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad
        backend.check_same_device("backward", [("tensor", self.data), ("grad", grad)])
        grad = xp.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, expected the tensor's shape {self.shape}")
        return grad


def _accumulate_into_grad(tensor, grad):
    # Copy on first store: an operation may hand the same array to several inputs.
    tensor.grad = grad.copy() if tensor.grad is None else tensor.grad + grad


def _run_backward(operation, grad):
    """operation.backward(grad) as a tuple with one entry per input (timed while a profiler listens)."""
    if operation.inputs is None:
        raise RuntimeError(
            f"backward() reached {operation.name} whose graph was already "
            "released by an earlier backward(); pass retain_graph=True to the first call"
        )
    if _op_timer is None:
        input_grads = operation.backward(grad)
    else:
        input_grads = _op_timer(operation, "backward", operation.backward, (grad,))
    return input_grads if isinstance(input_grads, tuple) else (input_grads,)


def _checked_input_grad(operation, parent, parent_grad):
    """parent_grad after checking its shape against the input's, in the input's dtype."""
    if parent_grad.shape != parent.shape:
        raise RuntimeError(
            f"{type(operation).__name__}.backward returned a gradient of shape "
            f"{parent_grad.shape} for an input of shape {parent.shape}"
        )
    if parent_grad.dtype != parent.dtype:  # e.g. a float32 input met a float64 one
        parent_grad = parent_grad.astype(parent.dtype)
    return parent_grad


def post_order(root, inputs_of):
    """Every tensor reachable from root through inputs_of(tensor), each after the tensors it
    was computed from, inputs visited left to right.

    Iterative depth-first post-order: no recursion, so a chain of 100,000 operations works.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        for parent in reversed(inputs_of(tensor)):  # reversed: the first input is popped first
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


def _inputs_needing_grad(tensor):
    operation = tensor.creator
    if operation is None or operation.inputs is None:
        return ()
    return [parent for parent in operation.inputs if parent.requires_grad]


def _reverse_topological_order(root):
    """Tensors that require grad, each before every tensor it was computed from."""
    return post_order(root, _inputs_needing_grad)[::-1]


class Operation:
    """One differentiable operation: `forward` on arrays, `backward` on gradients.

    Subclasses implement `forward(self, *arrays) -> array` and
    `backward(self, grad) -> gradient or tuple of gradients` (one per input,
    None where `self.needs_input_grad` says it is not needed). Anything saved
    on `self` in forward is freed by `release()` after backward.

    Operation classes end in `Op` (`Conv2dOp`, `ReLUOp`) so that they never share a name with
    a layer (`nn.Conv2D`, `nn.ReLU`); users meet them by their function's name (`name`).
    """

    # Names of the inputs, used in error messages ("conv2d: input is on 'cpu', weight ...").
    input_names = ("a", "b", "c")

    @property
    def name(self):
        """What the profiler, the graph and error messages call this operation: the lowercase name
        of its function (`conv2d`, `max_pool2d`, `cross_entropy`), never confused with a layer's
        CapWords class (`Conv2D`). By default the class name in snake_case without its `Op` suffix;
        a class whose function is spelled otherwise says so with a class attribute (`name = "relu"`).
        """
        return snake_case(type(self).__name__.removesuffix("Op"))

    def __call__(self, *inputs):
        tensors = _as_tensors(inputs)
        arrays = [tensor.data for tensor in tensors]
        if len(arrays) > 1:
            backend.check_same_device(self.name, zip(self.input_names, arrays))
        record = _grad_enabled and any(tensor.requires_grad for tensor in tensors)
        self.needs_input_grad = tuple(record and tensor.requires_grad for tensor in tensors)
        if _op_timer is None:
            output = self.forward(*arrays)
        else:
            output = _op_timer(self, "forward", self.forward, arrays)
        if not backend.is_array(output):  # NumPy reductions return scalars, not 0-d arrays
            output = np.asarray(output)
        result = Tensor(output)
        if record:
            self.inputs = tensors
            result.requires_grad = True
            result.creator = self
        return result

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop the inputs and everything saved for backward."""
        vars(self).clear()
        self.inputs = None


@functools.cache
def snake_case(class_name):
    """'MaxPool2d' -> 'max_pool2d', 'CrossEntropy' -> 'cross_entropy', 'GetItem' -> 'get_item'.

    Operations name themselves with it here; keras.Sequential names its layers with it ('conv2d_1').
    """
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", class_name).lower()


def _as_tensors(inputs):
    """Tensors for `inputs`; Python numbers take the array module and dtype of the first tensor."""
    reference = next((x for x in inputs if isinstance(x, Tensor)), None)
    if reference is None:
        raise TypeError("an operation needs at least one Tensor input")
    tensors = []
    for value in inputs:
        if isinstance(value, Tensor):
            tensors.append(value)
        elif backend.is_array(value):
            tensors.append(Tensor(value))
        else:
            xp = backend.get_array_module(reference.data)
            dtype = reference.dtype if _is_floating(reference.data) or isinstance(value, int) else None
            tensors.append(Tensor(xp.asarray(value, dtype=dtype)))
    return tensors


def tensor(data, requires_grad=False, device=None, dtype=None):
    """Make a Tensor from Python data or an array.

    A NumPy/CuPy floating array keeps its dtype; Python floats and lists become
    float32; integer data (class labels) stays integer and cannot require grad.
    device: 'cpu' or 'gpu'; default: minicnn's default device (see set_default_device).
    """
    if isinstance(data, Tensor):
        data = data.data
    device = backend.default_device() if device is None else device
    return Tensor(_as_array(data, device, dtype), requires_grad=requires_grad)
