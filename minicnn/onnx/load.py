"""ONNX file -> minicnn nn.Sequential, so that a CNN trained anywhere can be studied in minicnn.

The file comes from outside, so it is read defensively and nothing in it is executed:
its size is checked before it is parsed; the graph must be a chain from its one input to its
one output (each tensor read by exactly one node); every operator outside SUPPORTED_OPS is
named in one error; every initialiser's dtype and size, and every attribute minicnn cannot
honour (asymmetric pads, dilations, groups, SAME padding, ceil mode), are refused with the
node's name. Only then are minicnn layers built, and the weights copied into them.

Memory is checked before it is allocated. The weights are in the file, so together they may take
at most backend.file_budget(file size, MAX_BYTES_PER_FILE_BYTE) (a stored value never takes more
than 8 bytes in memory). One sample's tensors are not in the file (the input's shape is declared,
and a Conv's pads can make a map of any size), so the declared input, each layer's output and a
convolution's or pooling's padded input and columns are capped by MAX_SAMPLE_BYTES (256 MiB, or
backend.memory_limit() when that is lower) for one sample, before the layer runs.
Names, keys and messages read from the file are shown escaped and cut (minicnn.errors.shown).
"""

from math import prod
from pathlib import Path

import numpy as np

from .. import backend
from .. import nn
from ..checkpoint import Checkpoint
from ..errors import shown
from ..tensor import Tensor, no_grad
from .common import OnnxError, escaped, require_onnx
from .reading import parse_file

SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Constant", "Conv", "Dropout", "Flatten", "Gemm",
                 "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Relu", "Reshape", "Sigmoid", "Softmax",
                 "Tanh")
MAX_ELEMENTS = 2**31 - 1  # per initialiser
MAX_BYTES_PER_FILE_BYTE = 8  # a stored value takes at least 1 byte of the file (a varint) and at most 8 in memory
MAX_SAMPLE_BYTES = 256 << 20  # one sample's tensors at one layer while the model is built (VGG-16 at 224x224: 128 MB)
_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # TensorProto FLOAT, FLOAT16, DOUBLE
_INT_TYPES = {6: np.int32, 7: np.int64}  # shapes for Reshape
_TYPED_FIELD = {1: "float_data", 10: "int32_data", 11: "double_data", 6: "int32_data", 7: "int64_data"}


def load(path):
    """The model in the ONNX file at `path` as an nn.Sequential in eval mode (call .train() to fine-tune).

    Raises FileNotFoundError for a missing file and OnnxError (a ValueError) for anything
    minicnn cannot read or build, naming the node; ImportError when the `onnx` extra is missing.
    """
    return read(path).model


def read(path):
    """load(), wrapped as a checkpoint.Checkpoint (no optimizer; state['run']['dataset'] when minicnn wrote it)."""
    path = Path(path)
    proto = parse_file(path)
    try:
        model = _Builder(path, proto).build()
    except MemoryError:  # past every check above: the machine had less memory free than the limits allow
        raise OnnxError(f"'{path}': the machine ran out of memory while the model was built; lower "
                        f"backend.set_memory_limit to have such files refused before they are read") from None
    properties = {entry.key: entry.value for entry in proto.metadata_props}
    dataset = properties.get("minicnn.dataset")
    if dataset is not None and not (dataset.isprintable() and len(dataset) <= 64):
        raise OnnxError(f"'{path}': its metadata minicnn.dataset {shown(dataset)} is not a dataset's name")
    state = {"run": {"dataset": dataset}} if dataset is not None else {}
    return Checkpoint(model=model, architecture=nn.describe(model), state=state, optimizer_state=None,
                      schedule_state=None, path=path)


def _node_name(node, index):
    op_type = node.op_type if node.op_type.isidentifier() else shown(node.op_type)
    return f"{op_type} node {shown(node.name)}" if node.name else f"{op_type} node #{index}"


class _Builder:
    """Checks a parsed ModelProto and builds the chain of minicnn layers it describes."""

    def __init__(self, path, proto):
        self.path, self.proto, self.graph = path, proto, proto.graph
        self.opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)

    def fail(self, message):
        raise OnnxError(f"'{self.path}': {message}")

    # ----- checks of the whole graph, before any layer is built ---------------------------------------
    def build(self):
        self.check_operators()
        self.constants = self.read_constants()
        self.input_name, self.sample_shape = self.check_input()
        if len(self.graph.output) != 1:
            self.fail(f"the graph has {len(self.graph.output)} outputs; minicnn models have one")
        self.check_order()
        self.check_with_onnx()
        chain = self.chain()
        return self.make_model(chain)

    def check_operators(self):
        if self.opset is None or not 7 <= self.opset:
            self.fail(f"opset {self.opset} of the default domain is not supported (7 or later)")
        unsupported = []
        for index, node in enumerate(self.graph.node):
            foreign = node.domain not in ("", "ai.onnx")
            if foreign or node.op_type not in SUPPORTED_OPS:
                domain = f" from domain {shown(node.domain)}" if foreign else ""
                op_type = node.op_type if node.op_type.isidentifier() else shown(node.op_type)
                unsupported.append(f"{op_type} ({_node_name(node, index)}){domain}")
        if unsupported:
            self.fail(f"{len(unsupported)} operator(s) minicnn cannot build: {'; '.join(unsupported)}. "
                      f"Supported: {', '.join(SUPPORTED_OPS)}")
        if self.graph.sparse_initializer:
            self.fail("sparse initialisers are not supported")

    def read_constants(self):
        """{name: NumPy array} of every initialiser and Constant node, each checked before it is converted."""
        self.check_constant_bytes()
        constants = {}
        for tensor in self.graph.initializer:
            constants[tensor.name] = self.tensor_array(tensor, f"initialiser {shown(tensor.name)}")
        for index, node in enumerate(self.graph.node):
            if node.op_type == "Constant":
                values = [attribute for attribute in node.attribute if attribute.name == "value"]
                if len(node.attribute) != 1 or not values:
                    self.fail(f"{_node_name(node, index)}: only a Constant with a 'value' tensor is supported")
                constants[node.output[0]] = self.tensor_array(values[0].t, _node_name(node, index))
        return constants

    def check_constant_bytes(self):
        """Refuse, before any is converted, weights that together would take more than the file's budget."""
        tensors = list(self.graph.initializer) + [attribute.t for node in self.graph.node if node.op_type == "Constant"
                                                  for attribute in node.attribute if attribute.name == "value"]
        itemsizes = {code: np.dtype(dtype).itemsize for code, dtype in (_FLOAT_TYPES | _INT_TYPES).items()}
        # prod of a negative or absurd shape is refused tensor by tensor in tensor_array; here only the total.
        needed = sum(prod(max(0, size) for size in tensor.dims) * itemsizes.get(tensor.data_type, 8)
                     for tensor in tensors)
        budget = backend.file_budget(self.proto.ByteSize(), MAX_BYTES_PER_FILE_BYTE)
        if needed > budget:
            self.fail(f"its weights declare {backend.format_bytes(needed)}, more than the "
                      f"{backend.format_bytes(budget)} a file of {self.proto.ByteSize():,} bytes may take "
                      f"(backend.file_budget; backend.set_memory_limit)")

    def check_sample_bytes(self, what, parts):
        """Refuse a layer whose tensors for one sample, parts {name: shape}, exceed MAX_SAMPLE_BYTES."""
        itemsize = np.dtype(backend.DEFAULT_FLOAT).itemsize
        needed = sum(prod(shape) for shape in parts.values()) * itemsize
        limit = min(MAX_SAMPLE_BYTES, backend.memory_limit())
        if needed > limit:
            shapes = ", ".join(f"{name} {tuple(shape)}" for name, shape in parts.items())
            self.fail(f"{what}: one sample needs {backend.format_bytes(needed)} ({shapes}), more than the "
                      f"{backend.format_bytes(limit)} minicnn.onnx allows (MAX_SAMPLE_BYTES, "
                      f"backend.set_memory_limit)")

    def tensor_array(self, tensor, what):
        from onnx import TensorProto, numpy_helper
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            self.fail(f"{what} keeps its data in an external file, which minicnn does not read")
        dtypes = _FLOAT_TYPES | _INT_TYPES
        if tensor.data_type not in dtypes:
            name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in TensorProto.DataType.values() \
                else str(tensor.data_type)
            self.fail(f"{what} has dtype {name}; minicnn reads FLOAT, FLOAT16, DOUBLE weights (INT32, INT64 shapes)")
        dims = list(tensor.dims)
        if any(size < 0 for size in dims) or len(dims) > 8 or prod(dims) > MAX_ELEMENTS:
            self.fail(f"{what} has the shape {dims}, which minicnn refuses (negative, over 8 axes or too large)")
        count = prod(dims)
        itemsize = np.dtype(dtypes[tensor.data_type]).itemsize
        stored = (len(tensor.raw_data) // itemsize if len(tensor.raw_data) % itemsize == 0 else -1) \
            if tensor.HasField("raw_data") else len(getattr(tensor, _TYPED_FIELD[tensor.data_type]))
        if stored != count:
            held = f"{len(tensor.raw_data)} bytes" if tensor.HasField("raw_data") else f"{stored} values"
            self.fail(f"{what} has the shape {dims} ({count} values of {itemsize} bytes) but holds {held}")
        return numpy_helper.to_array(tensor)

    def check_input(self):
        inputs = [value for value in self.graph.input if value.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(shown(value.name) for value in inputs[:8])
            self.fail(f"the graph has {len(inputs)} inputs besides its weights ({names}); minicnn models take one")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in _FLOAT_TYPES:
            self.fail(f"input {shown(value.name)} has element type {tensor_type.elem_type}; minicnn reads float images")
        dims = list(tensor_type.shape.dim)
        if not tensor_type.HasField("shape") or len(dims) < 2:
            self.fail(f"input {shown(value.name)} has no shape of two or more axes; minicnn needs (N, C, H, W) "
                      f"or (N, F)")
        sample = []
        for axis, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                self.fail(f"input {shown(value.name)} has no fixed size along axis {axis}; minicnn needs one sample's "
                          f"shape (only the batch axis may vary)")
            sample.append(int(dim.dim_value))
        self.check_sample_bytes(f"input {shown(value.name)}", {"input": sample})
        return value.name, tuple(sample)

    def check_order(self):
        """Every node reads only tensors made before it: no dangling input, no cycle."""
        defined = {self.input_name} | set(self.constants)
        made_later = {name: index for index, node in enumerate(self.graph.node) for name in node.output}
        for index, node in enumerate(self.graph.node):
            for name in node.input:
                if name and name not in defined:
                    if name in made_later and made_later[name] >= index:
                        self.fail(f"{_node_name(node, index)} reads {shown(name)} before it is computed "
                                  f"(a cycle, or nodes out of order)")
                    self.fail(f"{_node_name(node, index)} reads {shown(name)}, which no node, input or "
                              f"initialiser provides (a dangling input)")
            for name in node.output:
                if name in defined and name:
                    self.fail(f"{_node_name(node, index)} writes {shown(name)}, which is already defined")
                defined.add(name)
        output = self.graph.output[0].name
        if output not in defined:
            self.fail(f"the graph's output {shown(output)} is computed by no node")

    def check_with_onnx(self):
        onnx = require_onnx()
        try:
            onnx.checker.check_model(self.proto)
        except Exception as error:  # onnx.checker.ValidationError, or a C++ error for a malformed proto
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.fail(f"onnx.checker refuses the model: {escaped(first)}")

    def chain(self):
        """[(index, node)] from the input to the output: each tensor must be read by exactly one node."""
        readers = {}
        for index, node in enumerate(self.graph.node):
            if node.op_type == "Constant":
                continue
            data = [name for name in node.input if name and name not in self.constants]
            if len(data) != 1:
                what = "a residual addition of two computed tensors" if node.op_type == "Add" and len(data) == 2 \
                    else f"{len(data)} computed inputs"
                self.fail(f"{_node_name(node, index)} has {what}; minicnn.onnx builds chains of layers, each with "
                          f"one input")
            readers.setdefault(data[0], []).append((index, node))
        output, current, chain = self.graph.output[0].name, self.input_name, []
        while current != output:
            found = readers.get(current, [])
            if len(found) != 1:
                names = ", ".join(_node_name(node, index) for index, node in found)
                self.fail(f"tensor {shown(current)} is read by {len(found)} nodes ({names or 'none'}); minicnn.onnx "
                          f"builds chains, where each tensor feeds the next node only")
            index, node = found[0]
            extra = [name for name in node.output[1:] if name and (name in readers or name == output)]
            if extra:
                self.fail(f"{_node_name(node, index)}: its extra output(s) {', '.join(map(shown, extra))} are used; "
                          f"minicnn uses the first only")
            chain.append((index, node))
            current = node.output[0]
        if len(chain) != sum(node.op_type != "Constant" for node in self.graph.node):
            on_chain = {index for index, _ in chain}
            off = [_node_name(node, index) for index, node in enumerate(self.graph.node)
                   if node.op_type != "Constant" and index not in on_chain]
            self.fail(f"node(s) off the path from input to output: {', '.join(off)}")
        return chain

    # ----- building the layers ---------------------------------------------------------------------
    def make_model(self, chain):
        self.shape = (1, *self.sample_shape)  # one zero sample is run through each layer to follow the shapes
        layers, weights, skip = [], [], False
        for position, (index, node) in enumerate(chain):
            if skip:
                skip = False
                continue
            self.where = _node_name(node, index)
            following = chain[position + 1][1] if position + 1 < len(chain) else None
            try:
                made = getattr(self, f"make_{node.op_type}")(node, following)
            except (ValueError, TypeError) as error:
                if isinstance(error, OnnxError):
                    raise
                self.fail(f"{self.where}: {error}")
            if made is None:
                continue
            layer, state, skip = made
            self.shape = self.run(layer)
            layers.append(layer)
            weights.append(state)
        if not layers:
            self.fail("the graph holds no layer minicnn can build (only Identity or Dropout nodes)")
        # Sequential chooses each layer's initialisation on construction, so the weights are copied after it.
        model = nn.Sequential(*layers, input_shape=self.sample_shape)
        for layer, state in zip(layers, weights):
            if state:
                layer.load_state_dict({name: np.asarray(array, dtype=backend.DEFAULT_FLOAT)
                                       for name, array in state.items()})
        return model.eval()

    def run(self, layer):
        x = Tensor(np.zeros(self.shape, dtype=backend.DEFAULT_FLOAT))
        try:
            with layer.evaluating(), no_grad():
                return tuple(layer(x).shape)
        except ValueError as error:
            sample = ", ".join(map(str, self.shape[1:]))
            self.fail(f"{self.where} does not fit its input of shape (N, {sample}): {error}")

    def attributes(self, node):
        from onnx import helper
        return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}

    def constant(self, node, position, rank=None, size=None, what="weight"):
        """The constant at input `position` of node, with the expected rank / leading size checked."""
        if position >= len(node.input) or not node.input[position]:
            return None
        name = node.input[position]
        if name not in self.constants:
            self.fail(f"{self.where}: its {what} {shown(name)} is computed, not a stored constant")
        array = self.constants[name]
        if array.dtype.kind != "f" and what not in ("shape",):
            self.fail(f"{self.where}: its {what} {shown(name)} has dtype {array.dtype}, not a float")
        if rank is not None and array.ndim != rank:
            self.fail(f"{self.where}: its {what} {shown(name)} has shape {list(array.shape)}, expected {rank} axes")
        if size is not None and array.shape[0] != size:
            self.fail(f"{self.where}: its {what} {shown(name)} has shape {list(array.shape)}, expected ({size},)")
        return array

    def need_rank(self, rank):
        if len(self.shape) != rank:
            self.fail(f"{self.where} needs a {rank}-d input, got shape (N, {', '.join(map(str, self.shape[1:]))})")

    def data_first(self, node):
        if node.input[0] in self.constants:
            self.fail(f"{self.where}: its first input is a constant; minicnn needs the data there")

    def window(self, node, attributes, kernel=None):
        """(kernel, stride, padding) pairs of a Conv or pooling node, refusing what minicnn cannot do."""
        kernel_shape = list(attributes.get("kernel_shape", kernel or []))
        if len(kernel_shape) != 2 or (kernel is not None and kernel_shape != list(kernel)):
            self.fail(f"{self.where}: kernel_shape {kernel_shape} must be 2 sizes (matching the weight's)")
        strides = list(attributes.get("strides", [1, 1]))
        pads = list(attributes.get("pads", [0, 0, 0, 0]))
        dilations = list(attributes.get("dilations", [1, 1]))
        auto_pad = attributes.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad not in ("NOTSET", "VALID"):
            self.fail(f"{self.where}: auto_pad {auto_pad} is not supported (give explicit pads; NOTSET or VALID)")
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        if len(strides) != 2 or len(pads) != 4 or len(dilations) != 2:
            self.fail(f"{self.where}: strides {strides}, pads {pads}, dilations {dilations} are not 2-d")
        if pads[:2] != pads[2:]:
            self.fail(f"{self.where}: asymmetric pads {pads} ([top, left, bottom, right]) are not supported; "
                      f"minicnn pads both sides of an axis equally")
        if dilations != [1, 1]:
            self.fail(f"{self.where}: dilations {dilations} are not supported (only 1)")
        if min(kernel_shape) < 1 or min(strides) < 1 or min(pads) < 0:
            self.fail(f"{self.where}: kernel_shape {kernel_shape}, strides {strides} must be >= 1 and "
                      f"pads {pads} >= 0")
        if attributes.get("ceil_mode", 0) != 0:
            self.fail(f"{self.where}: ceil_mode=1 is not supported (minicnn rounds output sizes down)")
        return tuple(kernel_shape), tuple(strides), tuple(pads[:2])

    def check_window_bytes(self, kernel, stride, padding, out_channels):
        """Refuse a Conv or pooling whose padded input, columns and output for one sample are too large."""
        channels, height, width = self.shape[1:]
        padded = (channels, height + 2 * padding[0], width + 2 * padding[1])
        out_height = max(0, (padded[1] - kernel[0]) // stride[0] + 1)
        out_width = max(0, (padded[2] - kernel[1]) // stride[1] + 1)
        self.check_sample_bytes(self.where, {"padded input": padded,
                                             "columns": (channels * kernel[0] * kernel[1], out_height, out_width),
                                             "output": (out_channels, out_height, out_width)})

    def make_Conv(self, node, following):
        self.need_rank(4)
        self.data_first(node)
        attributes = self.attributes(node)
        if attributes.get("group", 1) != 1:
            self.fail(f"{self.where}: group={attributes['group']} (grouped or depthwise convolution) is not supported")
        weight = self.constant(node, 1, rank=4)
        bias = self.constant(node, 2, rank=1, size=weight.shape[0], what="bias")
        kernel, stride, padding = self.window(node, attributes, weight.shape[2:])
        self.check_window_bytes(kernel, stride, padding, weight.shape[0])
        layer = nn.Conv2D(weight.shape[1], weight.shape[0], kernel, stride, padding, bias=bias is not None)
        return layer, {"weight": weight, **({"bias": bias} if bias is not None else {})}, False

    def make_pool(self, node, kind):
        self.need_rank(4)
        attributes = self.attributes(node)
        kernel, stride, padding = self.window(node, attributes)
        self.check_window_bytes(kernel, stride, padding, self.shape[1])
        if kind is nn.AvgPool2D and any(padding) and attributes.get("count_include_pad", 0) != 1:
            self.fail(f"{self.where}: count_include_pad=0 with padding is not supported (minicnn's AvgPool2D "
                      f"counts the padding zeros in the mean)")
        if attributes.get("storage_order", 0) != 0:
            self.fail(f"{self.where}: storage_order=1 is not supported")
        return kind(kernel, stride, padding), {}, False

    def make_MaxPool(self, node, following):
        return self.make_pool(node, nn.MaxPool2D)

    def make_AveragePool(self, node, following):
        return self.make_pool(node, nn.AvgPool2D)

    def make_GlobalAveragePool(self, node, following):
        self.need_rank(4)
        return nn.AvgPool2D(self.shape[2:]), {}, False  # the window is the whole feature map: (N, C, 1, 1)

    def make_Gemm(self, node, following):
        self.need_rank(2)
        self.data_first(node)
        attributes = self.attributes(node)
        if attributes.get("transA", 0) != 0:
            self.fail(f"{self.where}: transA=1 is not supported (the data is (N, features))")
        transposed = attributes.get("transB", 0) == 1
        weight = self.constant(node, 1, rank=2) * attributes.get("alpha", 1.0)
        out_features = weight.shape[0] if transposed else weight.shape[1]
        bias = self.constant(node, 2, what="bias")
        if bias is not None:
            if bias.size not in (1, out_features) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
                self.fail(f"{self.where}: its bias has shape {list(bias.shape)}, expected ({out_features},)")
            bias = np.broadcast_to(bias.reshape(-1), (out_features,)) * attributes.get("beta", 1.0)
        # Gemm with transB=1 is PyTorch's Linear (weight (out, in)); transB=0 is minicnn's Dense (weight (in, out)).
        kind = nn.Linear if transposed else nn.Dense
        layer = kind(weight.shape[1] if transposed else weight.shape[0], out_features, bias=bias is not None)
        return layer, {"weight": weight, **({"bias": bias} if bias is not None else {})}, False

    def make_MatMul(self, node, following):
        self.need_rank(2)
        self.data_first(node)
        weight = self.constant(node, 1, rank=2)
        bias, fused = None, False
        if following is not None and following.op_type == "Add":
            # MatMul then Add of a constant vector is Dense: fold the two nodes into one layer.
            name = next(name for name in following.input if name != node.output[0])
            if name in self.constants and self.constants[name].size == weight.shape[1]:
                bias, fused = self.constants[name].reshape(-1), True
        layer = nn.Dense(weight.shape[0], weight.shape[1], bias=bias is not None)
        return layer, {"weight": weight, **({"bias": bias} if bias is not None else {})}, fused

    def make_Add(self, node, following):
        self.fail(f"{self.where}: an Add of a constant is supported only right after a MatMul (as its bias)")

    def make_Flatten(self, node, following):
        axis = self.attributes(node).get("axis", 1)
        if not -len(self.shape) <= axis <= len(self.shape) or axis % len(self.shape) != 1:
            self.fail(f"{self.where}: axis={axis} is not supported; minicnn flattens all but the batch axis (axis=1)")
        return nn.Flatten(), {}, False

    def make_Reshape(self, node, following):
        target = self.constant(node, 1, rank=1, what="shape")
        features = prod(self.shape[1:])
        if self.attributes(node).get("allowzero", 0) != 0 or target.dtype.kind != "i" or target.size != 2:
            self.fail(f"{self.where}: only a Reshape to (N, features) is supported, got shape {target.tolist()}")
        batch, width = (int(size) for size in target)
        if width not in (-1, features) or (batch == -1 and width == -1) or batch < -1 or (batch > 0 and width == -1):
            self.fail(f"{self.where}: only a Reshape to (N, {features}) is supported, got shape {target.tolist()}")
        return nn.Flatten(), {}, False

    def make_activation(self, kind):
        return kind(), {}, False

    def make_Relu(self, node, following):
        return self.make_activation(nn.ReLU)

    def make_Sigmoid(self, node, following):
        return self.make_activation(nn.Sigmoid)

    def make_Tanh(self, node, following):
        return self.make_activation(nn.Tanh)

    def make_Identity(self, node, following):
        return None

    def make_Dropout(self, node, following):
        attributes = self.attributes(node)
        ratio = self.constant(node, 1, what="ratio")
        training = self.constant(node, 2, what="training_mode") if len(node.input) > 2 and node.input[2] else None
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            self.fail(f"{self.where}: training_mode=True is not supported (minicnn loads models for inference)")
        p = float(np.asarray(ratio).reshape(-1)[0]) if ratio is not None else float(attributes.get("ratio", 0.5))
        return nn.Dropout(p), {}, False  # the identity in eval mode; kept so that fine-tuning drops out as trained

    def make_BatchNormalization(self, node, following):
        attributes = self.attributes(node)
        if len(self.shape) not in (2, 4):
            self.fail(f"{self.where} needs a 2-d or 4-d input, got shape {self.shape}")
        if attributes.get("training_mode", 0) != 0 or attributes.get("spatial", 1) != 1:
            self.fail(f"{self.where}: training_mode=1 or spatial=0 is not supported")
        channels = self.shape[1]
        state = {name: self.constant(node, position, rank=1, size=channels, what=name)
                 for position, name in enumerate(("weight", "bias", "running_mean", "running_var"), start=1)}
        if any(array is None for array in state.values()):
            self.fail(f"{self.where}: scale, bias, mean and variance must all be given")
        kind = nn.BatchNorm1D if len(self.shape) == 2 else nn.BatchNorm2D
        # ONNX's momentum weighs the old running value (0.9); minicnn's, as PyTorch's, weighs the new batch (0.1).
        layer = kind(channels, momentum=1 - attributes.get("momentum", 0.9), eps=attributes.get("epsilon", 1e-5))
        return layer, state, False

    def make_Softmax(self, node, following):
        rank = len(self.shape)
        axis = self.attributes(node).get("axis", -1 if self.opset >= 13 else 1)
        if not -rank <= axis < rank:
            self.fail(f"{self.where}: axis={axis} is out of range for its {rank}-d input (from {-rank} to {rank - 1})")
        axis %= rank
        if self.opset < 13 and axis != rank - 1:
            # Before opset 13, Softmax flattened axes axis.. into one; only over the last axis is it minicnn's.
            self.fail(f"{self.where}: opset {self.opset} Softmax over axes {axis}.. is not supported (only the last)")
        return nn.Softmax(axis), {}, False
