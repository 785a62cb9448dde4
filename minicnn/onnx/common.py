"""What export and load share: the error they raise, the opset they write, and the guarded import of `onnx`."""

OPSET = 17  # every operator minicnn writes has had its present meaning since opset 13; 17 is read by every runtime
IR_VERSION = 8  # the IR version that goes with opset 17, so that older runtimes open the file too
INSTALL_HINT = 'python3 -m pip install -e ".[onnx]"'


class OnnxError(ValueError):
    """An ONNX file cannot be read or built as a minicnn model, or a model cannot be written as ONNX."""


def require_onnx():
    """The `onnx` package, or an ImportError that says which extra to install."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"minicnn.onnx needs the `onnx` package, an optional extra: {INSTALL_HINT}") from None
    return onnx


MAX_ESCAPED = 320  # characters of another library's message about a file that a message quotes


def escaped(text):
    """Free text that quotes a file (another library's message): one line, escaped as repr() escapes
    (as minicnn.errors.shown does), unquoted."""
    text = " ".join(str(text).split())
    return repr(text[:MAX_ESCAPED])[1:-1] + ("..." if len(text) > MAX_ESCAPED else "")
