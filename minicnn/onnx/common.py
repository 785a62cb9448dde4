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


MAX_SHOWN = 80  # characters of a name from a file shown in a message


def shown(text):
    """A name, key or value read from a file as a message shows it: repr-quoted, so that a newline or an
    ANSI escape shows as \\n or \\x1b instead of forging lines on the user's terminal; cut when long."""
    text = str(text)
    if len(text) > MAX_SHOWN:
        return f"{text[:MAX_SHOWN]!r}... ({len(text)} characters)"
    return repr(text)


def escaped(text):
    """Free text that quotes a file (another library's message): one line, escaped as shown() escapes, unquoted."""
    text = " ".join(str(text).split())
    return repr(text[:4 * MAX_SHOWN])[1:-1] + ("..." if len(text) > 4 * MAX_SHOWN else "")
