"""ONNX: write a minicnn model for deployment (export) and open a CNN from any framework (load).

    from minicnn import onnx as mo
    mo.export(model, "cnn.onnx", input_shape=(1, 28, 28))   # onnxruntime, Netron, ... read it
    model = mo.load("cnn.onnx")                               # an nn.Sequential with the file's weights

Both sides go through the `onnx` package (the `onnx` extra: python3 -m pip install -e ".[onnx]"),
imported only when one of these functions runs; `import minicnn` never needs it.
"""

from .common import OPSET, OnnxError, require_onnx
from .export import EXPORTABLE, export, to_model_proto
from .load import SUPPORTED_OPS, load, read

__all__ = ["EXPORTABLE", "OPSET", "OnnxError", "SUPPORTED_OPS", "export", "load", "read", "require_onnx",
           "to_model_proto"]
