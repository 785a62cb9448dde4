"""minicnn model -> ONNX graph, one node (or none) per layer, built with onnx.helper.

Layer by layer (x is the running tensor, N the dynamic batch axis):
    Conv2D             Conv(x, W, B)            pads [top, left, bottom, right] = [ph, pw, ph, pw]
    MaxPool2D          MaxPool                  ONNX pads with -inf as minicnn does; ties give the same value
    AvgPool2D          AveragePool              count_include_pad=1: minicnn counts padding zeros in the mean
    Dense              Gemm(x, W, B)            W is (in, out), so transB=0
    Linear             Gemm(x, W, B), transB=1  W is (out, in), PyTorch's layout
    Flatten            Flatten(axis=1)
    ReLU/Sigmoid/Tanh  Relu/Sigmoid/Tanh
    Softmax            Softmax(axis)
    BatchNorm1D/2D     BatchNormalization       inference form: the running mean and variance
    Dropout            (nothing)                the identity at inference
    Sequential         its layers, in order (nested ones too)
"""

from pathlib import Path

import numpy as np

from .. import backend
from .. import nn
from ..files import write_bytes_atomically
from ..tensor import Tensor, no_grad
from .common import IR_VERSION, OPSET, OnnxError, require_onnx

EXPORTABLE = ("AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "Linear",
              "MaxPool2D", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh")
DEFAULT_INPUT_SHAPE = (1, 28, 28)


def export(model, path, input_shape=None, softmax=False, metadata=None):
    """Write `model` to `path` as an ONNX file; returns the path.

    input_shape: one sample's shape without the batch axis, e.g. (1, 28, 28); default the
    model's own input_shape, else (1, 28, 28). The batch axis is dynamic ('N').
    softmax: append a Softmax, so the file gives probabilities instead of logits.
    metadata: optional {str: str} written as the model's metadata_props.
    Raises OnnxError naming the first layer that cannot be exported, before writing anything.
    """
    data = to_model_proto(model, input_shape, softmax, metadata).SerializeToString()
    path = Path(path)
    write_bytes_atomically(path, data)  # a kill mid-write leaves no half file
    return path


def to_model_proto(model, input_shape=None, softmax=False, metadata=None):
    """The onnx.ModelProto that export() writes, checked by onnx.checker before it is returned."""
    onnx = require_onnx()
    from onnx import TensorProto, helper

    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or DEFAULT_INPUT_SHAPE)
    graph = _GraphBuilder()
    output = "input"
    for where, layer in _leaf_layers(model, "model"):
        output = graph.add_layer(where, layer, output)
    if softmax:
        output = graph.node("Softmax", [output], "softmax", axis=-1)
    if output == "input":  # a model of Dropout only: ONNX needs a node between input and output
        output = graph.node("Identity", [output], "identity")

    output_shape = _output_shape(model, input_shape)
    graph_proto = helper.make_graph(
        graph.nodes, "minicnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", *output_shape])],
        initializer=graph.initializers,
    )
    proto = helper.make_model(graph_proto, producer_name="minicnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    if metadata:
        helper.set_model_props(proto, {str(key): str(value) for key, value in metadata.items()})
    onnx.checker.check_model(proto)
    return proto


def _leaf_layers(module, where):
    """(position text, layer) for each layer, nested Sequentials opened: 'model[2][0]'."""
    if isinstance(module, nn.Sequential):
        for position, layer in enumerate(module.layers):
            yield from _leaf_layers(layer, f"{where}[{position}]")
    else:
        yield where, module


def _output_shape(model, input_shape):
    """One sample's output shape, from a forward pass of a zero batch of one in eval mode.

    This also checks that input_shape fits the model before anything is written.
    """
    device = getattr(model, "device", "cpu")
    x = Tensor(backend.to_device(np.zeros((1, *input_shape), backend.DEFAULT_FLOAT), device))
    try:
        with model.evaluating(), no_grad():
            return tuple(int(size) for size in model(x).shape[1:])
    except (ValueError, TypeError) as error:
        raise OnnxError(f"export: input_shape {input_shape} does not fit the model: {error}") from None


def _array(tensor):
    """A parameter or buffer as a float32 NumPy array (ONNX files from minicnn are float32)."""
    return np.ascontiguousarray(backend.to_numpy(getattr(tensor, "data", tensor)), dtype=np.float32)


class _GraphBuilder:
    """Collects nodes and initialisers; names each after the layer's position, e.g. 'model[0].weight'."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(_array(array), name))
        return name

    def node(self, op_type, inputs, name, **attributes):
        from onnx import helper
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def add_layer(self, where, layer, x):
        """Append the nodes of one layer reading tensor x; returns the name of its output tensor."""
        kind = type(layer)
        if kind is nn.Dropout:
            return x  # the identity at inference
        if kind in (nn.ReLU, nn.Sigmoid, nn.Tanh):
            return self.node({nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}[kind], [x], where)
        if kind is nn.Flatten:
            return self.node("Flatten", [x], where, axis=1)
        if kind is nn.Softmax:
            return self.node("Softmax", [x], where, axis=int(layer.axis))
        if kind is nn.Conv2D:
            inputs = [x, self.constant(f"{where}.weight", layer.weight)]
            if layer.bias is not None:
                inputs.append(self.constant(f"{where}.bias", layer.bias))
            (ph, pw) = layer.padding
            return self.node("Conv", inputs, where, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                             pads=[ph, pw, ph, pw], dilations=[1, 1], group=1)
        if kind in (nn.Dense, nn.Linear):
            inputs = [x, self.constant(f"{where}.weight", layer.weight)]
            if layer.bias is not None:
                inputs.append(self.constant(f"{where}.bias", layer.bias))
            # Dense keeps its weight as (in, out); Linear as (out, in), which Gemm reads with transB=1.
            return self.node("Gemm", inputs, where, transB=int(kind is nn.Linear))
        if issubclass(kind, (nn.MaxPool2D, nn.AvgPool2D)) and kind.forward in (nn.MaxPool2D.forward,
                                                                                nn.AvgPool2D.forward):
            settings = layer.config()
            window = settings.get("pool_size", settings.get("kernel_size"))
            stride = settings["stride"] or window
            (ph, pw) = settings["padding"]
            attributes = dict(kernel_shape=window, strides=stride, pads=[ph, pw, ph, pw])
            if kind.forward is nn.AvgPool2D.forward:
                return self.node("AveragePool", [x], where, count_include_pad=1, **attributes)
            return self.node("MaxPool", [x], where, **attributes)
        if kind in (nn.BatchNorm1D, nn.BatchNorm2D):
            inputs = [x] + [self.constant(f"{where}.{name}", getattr(layer, name))
                            for name in ("weight", "bias", "running_mean", "running_var")]
            return self.node("BatchNormalization", inputs, where, epsilon=float(layer.eps))
        raise OnnxError(f"export: {where} is a {kind.__name__}, which minicnn.onnx cannot export "
                        f"(it exports {', '.join(EXPORTABLE)})")
