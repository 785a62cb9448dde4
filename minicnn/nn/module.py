"""Module (a container of parameters, buffers and sub-modules) and Parameter.

A buffer is an array that belongs to the model's state without being trained,
such as batch norm's running statistics: saved, loaded and moved with the
parameters, but not returned by parameters(), so no optimizer touches it.
"""

import contextlib

import numpy as np

from .. import backend
from ..errors import DeviceMismatchError, ShapeError
from ..tensor import RemovableHandle, Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: requires grad unless frozen (requires_grad = False, Module.requires_grad_).

    A floating array keeps its dtype (float64 stays float64); other data becomes float32.
    """

    def __init__(self, data):
        if isinstance(data, Tensor):
            data = data.data
        if not backend.is_array(data):
            data = backend.to_device(np.asarray(data), backend.default_device())
        if data.dtype.kind != "f":
            data = data.astype(backend.DEFAULT_FLOAT)
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device='{self.device}')"


class Module:
    """Base class of layers and models: subclasses set Parameters and Modules as attributes
    in __init__ (and buffers with register_buffer) and define forward(). Calling the
    module calls forward.
    """

    # Names of the attributes that are buffers; register_buffer gives an instance its own set.
    _buffer_names = frozenset()
    # Hook lists: None until a register_*_hook call gives the instance its own list.
    _forward_hooks = None
    _backward_hooks = None

    def __init__(self):
        self.training = True

    def __call__(self, *args, **kwargs):
        if not (self._forward_hooks or self._backward_hooks):
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    def _call_with_hooks(self, args, kwargs):
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks or ()):
            replacement = hook(self, args, output)
            if replacement is not None:
                output = replacement
        if self._backward_hooks and isinstance(output, Tensor) and output.requires_grad:
            hooks = self._backward_hooks

            def call_backward_hooks(grad_output):
                # Read the list when backward arrives, so a hook removed after forward is not called.
                for hook in list(hooks):
                    hook(self, grad_output)

            output.register_hook(call_backward_hooks)
        return output

    # ----- hooks ------------------------------------------------------------------------------
    def register_forward_hook(self, fn):
        """Call fn(module, inputs, output) after each forward: inputs is the tuple of positional
        arguments, output the result. If fn returns something other than None, it replaces the output.

        Returns a RemovableHandle; handle.remove() unregisters fn.
        """
        if self._forward_hooks is None:
            self._forward_hooks = []
        self._forward_hooks.append(fn)
        return RemovableHandle(self._forward_hooks, fn)

    def register_backward_hook(self, fn):
        """Call fn(module, grad_output) during backward, where grad_output is the gradient (a raw
        array) with respect to this module's output. Its return value is ignored.

        Only outputs that require grad are watched (not under no_grad()). Returns a
        RemovableHandle; handle.remove() unregisters fn.
        """
        if self._backward_hooks is None:
            self._backward_hooks = []
        self._backward_hooks.append(fn)
        return RemovableHandle(self._backward_hooks, fn)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ----- traversal ----------------------------------------------------------------------
    def named_children(self):
        """(name, module) for each direct sub-module, in the order they were assigned."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for every parameter, e.g. ('0.weight', ...)."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """A list of every Parameter, sub-modules included."""
        return [parameter for _, parameter in self.named_parameters()]

    def register_buffer(self, name, array):
        """Keep `array` (NumPy or CuPy) as attribute `name`: part of the state, never trained.

        The attribute stays a buffer when reassigned (self.name = new_array).
        """
        if not backend.is_array(array):
            raise TypeError(f"register_buffer: '{name}' must be a NumPy or CuPy array, got {type(array).__name__}")
        self._buffer_names = self._buffer_names | {name}
        setattr(self, name, array)

    def named_buffers(self, prefix=""):
        """(dotted name, array) for every buffer, e.g. ('1.running_mean', ...)."""
        for name, value in vars(self).items():
            if name in self._buffer_names:
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    def buffers(self):
        """A list of every buffer array, sub-modules included."""
        return [array for _, array in self.named_buffers()]

    def modules(self):
        """This module and every sub-module, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # ----- modes and devices ------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout active); returns self."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode for the block; the mode it had before comes back afterwards."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def to(self, device=None, dtype=None):
        """Move every parameter (and its gradient) and every buffer to `device`, and/or cast
        them to the floating `dtype` (e.g. numpy.float64 for gradient checks), in place; returns self.
        """
        if device is not None:
            backend.check_device_name(device)
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise TypeError(f"{type(self).__name__}.to: dtype must be a floating type, got {np.dtype(dtype)}")

        def convert(array):
            array = array if device is None else backend.to_device(array, device)
            return array if dtype is None else array.astype(dtype, copy=False)

        for parameter in self.parameters():
            parameter.data = convert(parameter.data)
            if parameter.grad is not None:
                parameter.grad = convert(parameter.grad)
        for module in self.modules():
            for name in module._buffer_names:
                setattr(module, name, convert(getattr(module, name)))
        return self

    @property
    def device(self):
        """The device of the first parameter ('cpu' for a module without parameters)."""
        parameters = self.parameters()
        return parameters[0].device if parameters else backend.default_device()

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on every parameter, in place (PyTorch's spelling); returns self.

        requires_grad_(False) freezes the module: operations then record no gradient for its
        parameters, their .grad stays None, and the optimizers (which skip a parameter without
        a gradient) leave them as they are. Fine-tuning freezes the backbone this way and
        trains only a new head.
        """
        for parameter in self.parameters():
            parameter.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self):
        """Forget every parameter's gradient."""
        for parameter in self.parameters():
            parameter.grad = None

    # ----- saving and loading -----------------------------------------------------------------
    def config(self):
        """The constructor arguments that build this module again, as JSON-able data.

        Built-in layers and Sequential define it; a custom Module has none by default.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no architecture description (config()), so a checkpoint cannot "
            "rebuild it; its weights can still be saved: save_checkpoint writes them without an "
            "architecture, and load_checkpoint(path, model=...) loads them into a model you build"
        )

    def state_dict(self):
        """{dotted name: copy of the array} for every parameter, then every buffer, on its device."""
        state = {name: parameter.data.copy() for name, parameter in self.named_parameters()}
        state.update((name, array.copy()) for name, array in self.named_buffers())
        return state

    def load_state_dict(self, state):
        """Copy arrays from `state` into the parameters and buffers, checking names and shapes first.

        Values may be NumPy or CuPy arrays or Tensors; each is moved to its
        target's device and cast to its dtype. Nothing is changed unless all fit.
        """
        parameters = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        targets = {name: parameter.data for name, parameter in parameters.items()} | buffers
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: state does not match the model "
                f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})"
            )
        arrays = {}
        for name, target in targets.items():
            value = state[name].data if isinstance(state[name], Tensor) else state[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ShapeError(
                    f"{type(self).__name__}.load_state_dict: '{name}' has shape {tuple(value.shape)} "
                    f"in the state but {tuple(target.shape)} in the model"
                )
            arrays[name] = backend.to_device(value, backend.device_of(target)).astype(target.dtype, copy=True)
        for name, parameter in parameters.items():
            parameter.data = arrays[name]
        # Buffers are filled in place (as PyTorch's copy_ does), so no owning module has to be looked up.
        for name, buffer in buffers.items():
            buffer[...] = arrays[name]

    # ----- helpers for layers ----------------------------------------------------------------------
    def check_input(self, x, expected_shape):
        """Raise a clear error unless x is a Tensor on this layer's device matching expected_shape.

        expected_shape: a tuple of ints and None (None: any size), e.g. (None, 576).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{self!r}: expected a Tensor, got {type(x).__name__}")
        expected_text = "(" + ", ".join("N" if i == 0 and s is None else "*" if s is None else str(s) for i, s in enumerate(expected_shape)) + ")"
        if x.ndim != len(expected_shape) or any(s is not None and s != actual for s, actual in zip(expected_shape, x.shape)):
            raise ShapeError(f"{self!r}: expected input of shape {expected_text}, got {x.shape}")
        parameters = self.parameters()
        if parameters and x.device != parameters[0].device:
            raise DeviceMismatchError(
                f"{self!r}: the input is on '{x.device}' but the layer's parameters are on "
                f"'{parameters[0].device}'; move one of them, e.g. x.to('{parameters[0].device}') "
                f"or model.to('{x.device}')"
            )

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"
