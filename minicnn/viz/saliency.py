"""Which pixels decided the prediction: a saliency map and Grad-CAM, as NumPy arrays.

    predicted, saliency = saliency_map(model, image)   # (H, W) >= 0
    predicted, cam = grad_cam(model, image)            # (H, W) in [0, 1], last Conv2D layer after its ReLU
    predicted, cam = grad_cam(model, image, layer="4 ReLU")   # an earlier, finer map (11x11 for cnn)

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
from ..nn import AvgPool2D, BatchNorm2D, Conv2D, Dropout, MaxPool2D, ReLU, Sigmoid, Tanh
from ..tensor import Tensor
from ..windows import output_size


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
    """The (name, module) of `layer`: a Module of the model, a name from named_layers ('3 ReLU'),
    or the position in that name alone (3 or '3')."""
    layers = named_layers(model)
    for name, module in layers:
        if module is layer or (isinstance(layer, (str, int)) and str(layer) in (name, name.split()[0])):
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


ACTIVATIONS = (ReLU, Sigmoid, Tanh)
SAME_SIZE = ACTIVATIONS + (Dropout, BatchNorm2D)  # layers that keep each pixel where it is
WINDOWED = (Conv2D, MaxPool2D, AvgPool2D)  # layers whose output pixel sees a window of input pixels


def grad_cam_layer(model):
    """The (name, module) Grad-CAM explains by default: the last Conv2D's output after its activation.

    Grad-CAM weighs the rectified feature maps (Selvaraju et al.); minicnn's Conv2D
    has no activation of its own, so when the layer after the last Conv2D is a ReLU
    (or Sigmoid, Tanh) that layer is taken, else the Conv2D itself.
    """
    layers = named_layers(model)
    name, module = last_conv_layer(model)
    position = [m for _, m in layers].index(module)
    if position + 1 < len(layers) and isinstance(layers[position + 1][1], ACTIVATIONS):
        return layers[position + 1]
    return name, module


def _pair(value):
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def receptive_field_grid(model, layer, image_size, map_size):
    """Where the cells of `layer`'s output map sit on the image: ((origin_y, spacing_y), (origin_x, spacing_x)).

    Cell (i, j)'s receptive field is centred on pixel (origin_y + spacing_y * i,
    origin_x + spacing_x * j) (pixel centres at whole numbers). Walks the layers up to
    `layer`: a window of size k, stride s and padding p moves the centre by (k - 1) / 2 - p
    input cells and multiplies the spacing by s. Returns None when the layers before it are
    not a plain chain of windows and same-size layers (a residual block, say), which
    shows when the sizes the walk predicts differ from the map's.
    """
    origin, spacing, size = [0.0, 0.0], [1.0, 1.0], list(image_size)
    for name, module in named_layers(model):
        if isinstance(module, WINDOWED):
            config = module.config()
            kernel = _pair(config["kernel_size"] if isinstance(module, Conv2D) else config["pool_size"])
            stride = _pair(config["stride"] or kernel)
            padding = _pair(config["padding"])
            for axis in range(2):
                origin[axis] += spacing[axis] * ((kernel[axis] - 1) / 2 - padding[axis])
                spacing[axis] *= stride[axis]
                size[axis] = output_size(size[axis], kernel[axis], stride[axis], padding[axis])
        elif not isinstance(module, SAME_SIZE):
            return None
        if module is layer:
            break
    if tuple(size) != tuple(map_size):
        return None
    return (origin[0], spacing[0]), (origin[1], spacing[1])


def grad_cam(model, image, layer=None, details=False):
    """Grad-CAM: where in the image the feature maps of `layer` supported the predicted class.

    layer: a layer of the model (the module, its name from named_layers, or its
    position); default grad_cam_layer(model), the last convolution after its ReLU.
    With A_k (h, w) the layer's k-th output map for this image and alpha_k the mean
    over the map of d logit[predicted] / d A_k, the map is ReLU(sum_k alpha_k A_k),
    divided by its maximum (all zeros when nothing is positive).

    The (h, w) map is then laid on the image bilinearly with each cell at the centre
    of its receptive field (receptive_field_grid). Stretching it edge to edge instead,
    as is usual, is right only when padding keeps the maps as large as the image:
    for `cnn` (28 -> 26 -> 13 -> 11 -> 5 -> 3, no padding) the 3x3 cells' centres lie
    on pixels 8.5, 12.5 and 16.5, while stretching would draw them at 4.2, 13.5 and
    22.8, putting the hot region off the digit. Outside the outermost centres the
    border cells' values carry on. Models that are no plain chain are stretched.
    The map is coarse all the same (each of cnn's 3x3 cells sees 18x18 pixels); an
    earlier layer, such as cnn's '4 ReLU' (11x11), gives a finer one.

    Returns (predicted class, map (H, W) float64 in [0, 1]); with details=True also a dict
    with the layer's name, the map's (h, w) and how it was placed ('receptive fields' or 'stretched').
    """
    name, module = grad_cam_layer(model) if layer is None else _find_layer(model, layer, "grad_cam")
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
    image_size = tuple(x.shape[2:])
    grid = receptive_field_grid(model, module, image_size, cam.shape)
    placed = resize_bilinear(cam, image_size, grid)  # a weighted mean of neighbours: still in [0, 1]
    if details:
        return predicted, placed, {"layer": name, "map_shape": cam.shape,
                                   "placed": "stretched" if grid is None else "receptive fields"}
    return predicted, placed


def resize_bilinear(array, size, grid=None):
    """A 2-d array (h, w) resized to size (H, W) by bilinear interpolation.

    grid: ((origin_y, spacing_y), (origin_x, spacing_x)), the output pixel on which each
    input cell is centred (see receptive_field_grid). Default: stretched edge to edge,
    as PyTorch's interpolate with align_corners=False does. Positions beyond the outer
    cells are clamped to them.
    """
    (h, w), (H, W) = array.shape, size
    if grid is None:
        grid = ((H / h - 1) / 2, H / h), ((W / w - 1) / 2, W / w)

    def sample_points(out_size, in_size, origin, spacing):
        position = np.clip((np.arange(out_size) - origin) / spacing, 0, in_size - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    top, bottom, fy = sample_points(H, h, *grid[0])
    left, right, fx = sample_points(W, w, *grid[1])
    upper = array[top][:, left] * (1 - fx) + array[top][:, right] * fx
    lower = array[bottom][:, left] * (1 - fx) + array[bottom][:, right] * fx
    return upper * (1 - fy[:, None]) + lower * fy[:, None]
