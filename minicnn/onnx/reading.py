"""Reading an ONNX file defensively: a regular file only, its size checked before it is read, then parsed.

Parsing a protobuf runs nothing from the file; what the model means is checked afterwards, in load.py.
"""

import os

from ..files import open_regular_file
from .common import OnnxError, escaped, require_onnx

MAX_FILE_BYTES = 2**31 - 1  # protobuf's own limit on one message


def parse_file(path):
    """The ModelProto in the file at `path` (a pathlib.Path); OnnxError naming the file when it is not one."""
    return _parse(path, _read_bytes(path))


def _read_bytes(path):
    """The whole file at `path`: a regular file (never a FIFO or device), of a size protobuf can parse."""
    try:
        file = open_regular_file(path, "an ONNX model", OnnxError)
    except FileNotFoundError:
        raise FileNotFoundError(f"minicnn.onnx.load: no file at '{path}'") from None
    with file:
        info = os.fstat(file.fileno())
        size = info.st_size
        _check_file_size(path, size)
        data = file.read(size + 1)
    if len(data) != size:
        raise OnnxError(f"'{path}' changed size while it was read ({size:,} bytes, then {len(data):,})")
    return data


def _check_file_size(path, size):
    if size == 0:
        raise OnnxError(f"'{path}' is empty, not an ONNX model")
    if size > MAX_FILE_BYTES:
        raise OnnxError(f"'{path}' is {size:,} bytes, more than one ONNX protobuf may hold ({MAX_FILE_BYTES:,})")


def _parse(path, data):
    onnx = require_onnx()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends: parsing has no side effects
        raise OnnxError(f"'{path}' is not an ONNX model (truncated or another format): "
                        f"{type(error).__name__}: {escaped(error)}") from None
    # Protobuf parses many byte strings without complaint, so check that this one is a model.
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version < 3 or not proto.graph.node:
        raise OnnxError(f"'{path}' is not an ONNX model (truncated or another format): it has no graph, "
                        f"opset or IR version")
    return proto
