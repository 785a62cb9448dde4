"""Which pixels decided the prediction: a saliency map and Grad-CAM, as NumPy arrays.

    predicted, saliency = saliency_map(model, image)   # (H, W) >= 0
    predicted, cam = grad_cam(model, image)            # (H, W) in [0, 1], last Conv2D layer

Both run one forward and one backward pass of a single image in eval mode and
put the model back in the mode it was in. The model's parameters are left
untouched, their .grad included: they are frozen (requires_grad=False) for the
pass, so backward computes only the gradients these maps need.

This module draws nothing (minicnn.viz.plots does) and never imports matplotlib.
It also holds the two helpers the other viz modules share: `named_layers`, which
names every layer of a model, and `image_batch`, which turns one image into a
batch of one.
"""

import contextlib

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..nn import Conv2D
from ..tensor import Tensor


# ----- shared helpers ---------------------------------------------------------------------------------

def named_layers(model):
    """[(name, module)] for every leaf module (one without sub-modules), in forward order.

    The name is the module's dotted position and its class, e.g. '0 Conv2D', '1 ReLU'
    for a Sequential (the same position as in named_parameters: '0.weight'), and just
    the class name for a model that is itself a single layer.
    """
    layers, stack = [], [("", model)]
    while stack:
        path, module = stack.pop()
        children = list(module.named_children())
        if not children:
            layers.append((f"{path} {type(module).__name__}".strip(), module))
            continue
        # Pushed in reverse so that they come off the stack in their own order.
        stack.extend((f"{path}.{name}" if path else name, child) for name, child in reversed(children))
    return layers


def _find_layer(model, layer, where):
    """The (name, module) of `layer`: a Module of the model, or a name from named_layers."""
    layers = named_layers(model)
    for name, module in layers:
        if module is layer or name == layer:
            return name, module
    raise ValueError(f"{where}: {layer!r} is not a layer of the model; its layers are {[n for n, _ in layers]}")


def image_batch(model, image):
    """One image as a float Tensor (1, C, H, W) on the model's device, in its parameters' dtype.

    image: a NumPy array (H, W), (C, H, W) or (1, C, H, W), or such a Tensor;
    uint8 pixels are scaled to [0, 1], as the DataLoader does.
    """
    array = image.data if isinstance(image, Tensor) else image
    array = backend.to_numpy(array) if backend.is_cupy_array(array) else np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1:
        raise ShapeError(f"expected one image (H, W), (C, H, W) or (1, C, H, W), got shape {array.shape}")
    parameters = model.parameters()
    dtype = parameters[0].dtype if parameters else backend.DEFAULT_FLOAT
    array = array / np.float32(255) if array.dtype == np.uint8 else array
    return Tensor(backend.to_device(array.astype(dtype), model.device))


@contextlib.contextmanager
def _inspecting(model):
    """Eval mode and frozen parameters for the block; the model's mode and flags come back after."""
    parameters = model.parameters()
    flags = [parameter.requires_grad for parameter in parameters]
    for parameter in parameters:
        parameter.requires_grad = False
    try:
        with model.evaluating():
            yield
    finally:
        for parameter, flag in zip(parameters, flags):
            parameter.requires_grad = flag


def _backward_from_class(logits, where):
    """The predicted class of logits (1, classes); backward of that class's logit."""
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ShapeError(f"{where}: the model should return logits (1, classes) for one image, got {logits.shape}")
    predicted = int(backend.to_numpy(logits.data)[0].argmax())
    xp = backend.get_array_module(logits.data)
    one_hot = xp.zeros_like(logits.data)
    one_hot[0, predicted] = 1  # the gradient of logit[predicted] alone
    logits.backward(one_hot)
    return predicted


# ----- the maps ---------------------------------------------------------------------------------------

def saliency_map(model, image):
    """The gradient of the predicted class's logit with respect to the input image.

    Returns (predicted class, map (H, W) float64), where map[i, j] is the largest
    |d logit[predicted] / d image[c, i, j]| over the channels c: the pixels whose
    change would move the prediction most.
    """
    with _inspecting(model):
        x = image_batch(model, image)
        x.requires_grad = True
        predicted = _backward_from_class(model(x), "saliency_map")
    gradient = backend.to_numpy(x.grad[0]).astype(np.float64)  # (C, H, W)
    return predicted, np.abs(gradient).max(axis=0)


def last_conv_layer(model):
    """The (name, module) of the model's last Conv2D layer; ValueError when it has none."""
    convolutions = [(name, module) for name, module in named_layers(model) if isinstance(module, Conv2D)]
    if not convolutions:
        raise ValueError(f"{type(model).__name__} has no Conv2D layer, so there is no feature map to explain")
    return convolutions[-1]


def grad_cam(model, image, layer=None):
    """Grad-CAM: where in the image the feature maps of `layer` supported the predicted class.

    layer: a layer of the model (the module, or its name from named_layers); default
    the last Conv2D layer. With A_k (h, w) the layer's k-th output map for this image
    and alpha_k the mean over the map of d logit[predicted] / d A_k, the map is
    ReLU(sum_k alpha_k A_k), divided by its maximum (all zeros when nothing is
    positive) and stretched bilinearly to the image size.

    Returns (predicted class, map (H, W) float64 in [0, 1]).
    """
    name, module = last_conv_layer(model) if layer is None else _find_layer(model, layer, "grad_cam")
    seen = {}

    def keep_maps(module, inputs, output):
        seen["maps"] = output.data

    def keep_gradient(module, grad_output):
        seen["grads"] = grad_output

    # The forward hook keeps the layer's output, the backward hook the gradient that reaches it.
    forward_handle = module.register_forward_hook(keep_maps)
    backward_handle = module.register_backward_hook(keep_gradient)
    try:
        with _inspecting(model):
            x = image_batch(model, image)
            x.requires_grad = True  # with every parameter frozen, the graph hangs on the input
            predicted = _backward_from_class(model(x), "grad_cam")
    finally:
        forward_handle.remove()
        backward_handle.remove()
    if "grads" not in seen or seen["maps"].ndim != 4:
        raise ShapeError(f"grad_cam: layer '{name}' should output feature maps (1, K, h, w) that the "
                         f"prediction depends on; got {getattr(seen.get('maps'), 'shape', None)}")
    maps = backend.to_numpy(seen["maps"][0]).astype(np.float64)  # (K, h, w)
    grads = backend.to_numpy(seen["grads"][0]).astype(np.float64)
    weights = grads.mean(axis=(1, 2))  # alpha_k: how much map k, as a whole, pushes the class up
    cam = np.maximum(np.tensordot(weights, maps, axes=1), 0)
    peak = cam.max()
    cam = cam / peak if peak > 0 else cam
    height, width = x.shape[2:]
    return predicted, resize_bilinear(cam, (height, width))  # a weighted mean of neighbours: still in [0, 1]


def resize_bilinear(array, size):
    """A 2-d array (h, w) resized to size (H, W) by bilinear interpolation.

    Each output pixel's centre is mapped back to the input grid (as PyTorch's
    align_corners=False does) and clamped at the borders.
    """
    (h, w), (H, W) = array.shape, size

    def sample_points(out_size, in_size):
        position = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    top, bottom, fy = sample_points(H, h)
    left, right, fx = sample_points(W, w)
    upper = array[top][:, left] * (1 - fx) + array[top][:, right] * fx
    lower = array[bottom][:, left] * (1 - fx) + array[bottom][:, right] * fx
    return upper * (1 - fy[:, None]) + lower * fy[:, None]
