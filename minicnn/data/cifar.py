"""CIFAR-10 from its "python version" archive, read without unpickling.

The archive cifar-10-python.tar.gz holds cifar-10-batches-py/data_batch_1..5 and
test_batch. Each batch is a pickled dict: b'data' a uint8 NumPy array
(10000, 3072) whose rows are 1024 red, 1024 green, then 1024 blue values of a
32x32 image in row-major order, and b'labels' a list of 10000 ints in 0..9.

`pickle.load` would run whatever code a file asks for, so we never call it.
Instead `read_pickled_batch` walks the opcode stream with `pickletools.genops`,
which only decodes opcodes, and interprets the few that plain data needs (dicts,
lists, tuples, strings, numbers) on a stack of its own. The only callables a
batch may name are the handful NumPy uses to rebuild an array, and those are
never imported: a placeholder stands in for each, and the array is rebuilt from
its raw bytes with np.frombuffer. Anything else is refused.
"""

import io
import pickletools
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{number}" for number in range(1, 6)),
    "test": ("test_batch",),
}
IMAGE_SHAPE = (3, 32, 32)


# ----- placeholders for the few globals a CIFAR-10 batch names ----------------------------------
class _Global:
    """Stands in for a whitelisted global; `role` says which one. Nothing is imported."""

    def __init__(self, role):
        self.role = role


class _PendingArray:
    """numpy's _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills in."""


class _PendingDtype:
    """numpy.dtype('u1') before BUILD sets its byte order."""

    def __init__(self, dtype):
        self.dtype = dtype


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",  # how NumPy pickles arrays at protocol 5
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # Python 3 stores bytes this way at protocol 2
}
_ALLOWED_DTYPES = {"u1": np.uint8, "uint8": np.uint8, "i8": np.int64, "int64": np.int64}

# Opcodes whose argument is the value to push, as is.
_PUSH_ARGUMENT = {
    "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
}
# Python 2 `str` opcodes: genops decodes them as latin-1 text; they were bytes.
_PUSH_PY2_STRING = {"STRING", "BINSTRING", "SHORT_BINSTRING"}
_PUSH_CONSTANT = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": dict, "EMPTY_LIST": list,
                  "EMPTY_TUPLE": tuple}
_IGNORED = {"PROTO", "FRAME"}


def read_pickled_batch(stream, where):
    """The object pickled in binary `stream`, for the plain-data subset a CIFAR-10 batch uses.

    where: the file's name, for messages. Raises DataError for anything outside
    that subset (another global, an unknown opcode) before anything is run.
    """
    try:
        return _interpret(pickletools.genops(stream), where)
    except DataError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        # ValueError: genops met a truncated or unknown opcode; the others: a malformed stack.
        raise DataError(f"{where}: not a readable pickle of a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None


def _interpret(opcodes, where):
    stack, marks, memo = [], [], {}

    def pop_to_mark():
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for opcode, argument, _position in opcodes:
        name = opcode.name
        if name in _PUSH_ARGUMENT:
            stack.append(argument)
        elif name in _PUSH_PY2_STRING:
            stack.append(argument.encode("latin-1"))
        elif name in _PUSH_CONSTANT:
            constant = _PUSH_CONSTANT[name]
            stack.append(constant() if callable(constant) else constant)
        elif name in _IGNORED:
            pass
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise DataError(f"{where}: malformed pickle: {len(stack)} objects left at STOP, expected 1")
            return stack.pop()
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[argument] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[argument])
        elif name == "LIST":
            stack.append(pop_to_mark())
        elif name == "TUPLE":
            stack.append(tuple(pop_to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            items = tuple(stack[-size:])
            del stack[-size:]
            stack.append(items)
        elif name == "DICT":
            items = pop_to_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name == "APPEND":
            item = stack.pop()
            stack[-1].append(item)
        elif name == "APPENDS":
            items = pop_to_mark()
            stack[-1].extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = pop_to_mark()
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name == "GLOBAL":
            module, _, attribute = argument.partition(" ")
            stack.append(_allowed_global(module, attribute, where))
        elif name == "STACK_GLOBAL":
            attribute, module = stack.pop(), stack.pop()
            stack.append(_allowed_global(module, attribute, where))
        elif name == "REDUCE":
            arguments, function = stack.pop(), stack.pop()
            stack.append(_reduce(function, arguments, where))
        elif name == "BUILD":
            state, target = stack.pop(), stack.pop()
            built = _build(target, state, where)
            stack.append(built)
            # The memo may hold the placeholder (it is memoized before BUILD); point it at the result.
            for key, value in memo.items():
                if value is target:
                    memo[key] = built
        else:
            raise DataError(
                f"refusing to read {where}: it uses the pickle opcode {name}, which a CIFAR-10 batch never does"
            )
    raise DataError(f"{where}: the pickle ends without a STOP opcode")


def _allowed_global(module, attribute, where):
    role = _ALLOWED_GLOBALS.get((module, attribute))
    if role is None:
        raise DataError(
            f"refusing to read {where}: it needs {module}.{attribute}, which a CIFAR-10 batch never does"
        )
    return _Global(role)


def _reduce(function, arguments, where):
    role = function.role if isinstance(function, _Global) else None
    if role == "encode" and len(arguments) == 2 and isinstance(arguments[0], str) \
            and arguments[1] in ("latin1", "latin-1"):
        return arguments[0].encode("latin-1")
    if role == "reconstruct" and isinstance(arguments[0], _Global) and arguments[0].role == "ndarray":
        return _PendingArray()
    if role == "dtype" and isinstance(arguments[0], (str, bytes)):
        name = _text(arguments[0])
        if name not in _ALLOWED_DTYPES:
            raise DataError(f"refusing to read {where}: it holds an array of dtype {name!r}, "
                            f"expected one of {sorted(_ALLOWED_DTYPES)}")
        return _PendingDtype(np.dtype(_ALLOWED_DTYPES[name]))
    if role == "frombuffer" and len(arguments) == 4:
        raw, dtype, shape, order = arguments
        return _array_from_bytes(raw, _final_dtype(dtype, where), shape, _text(order) == "F", where)
    raise DataError(f"refusing to read {where}: it calls {role or function!r} with unexpected arguments")


def _build(target, state, where):
    if isinstance(target, _PendingDtype):
        # state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(part is not None for part in state[2:5]):
            raise DataError(f"refusing to read {where}: it holds a structured dtype, expected uint8 or int64")
        byte_order = _text(state[1])
        return target.dtype.newbyteorder(byte_order) if byte_order in ("<", ">") else target.dtype
    if isinstance(target, _PendingArray):
        # state: (version, shape, dtype, is_fortran, raw bytes)
        if not isinstance(state, tuple) or len(state) != 5:
            raise DataError(f"{where}: unexpected NumPy array state {type(state).__name__} of length "
                            f"{len(state) if isinstance(state, tuple) else '?'}")
        _version, shape, dtype, is_fortran, raw = state
        return _array_from_bytes(raw, _final_dtype(dtype, where), shape, bool(is_fortran), where)
    raise DataError(f"refusing to read {where}: it sets the state of a {type(target).__name__}, "
                    "which a CIFAR-10 batch never does")


def _text(value):
    # A Python 2 pickle holds dtype names and byte orders as `str`, which we read as bytes.
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _final_dtype(dtype, where):
    if isinstance(dtype, np.dtype):
        return dtype
    raise DataError(f"{where}: expected a NumPy dtype in the array's state, got {type(dtype).__name__}")


def _array_from_bytes(raw, dtype, shape, is_fortran, where):
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise DataError(f"{where}: the array's data is a {type(raw).__name__}, expected raw bytes")
    if not isinstance(shape, tuple) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise DataError(f"{where}: bad array shape {shape!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{where}: array of shape {shape} and dtype {dtype} needs {expected} bytes, found {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if is_fortran else "C")
    return array.astype(dtype.newbyteorder("="))


# ----- the CIFAR-10 archive ----------------------------------------------------------------------
def load_cifar10(path, split="train"):
    """CIFAR-10 images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9.

    path: cifar-10-python.tar.gz, or the extracted cifar-10-batches-py folder
    (or a folder that contains it). split: 'train' (data_batch_1..5, N=50000) or
    'test' (test_batch, N=10000). See CIFAR10_CLASSES for the label names.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(path).expanduser()
    names = SPLIT_FILES[split]
    if path.is_dir():
        contents = _read_from_folder(path, names)
    elif path.is_file():
        contents = _read_from_archive(path, names)
    else:
        raise DataError(f"load_cifar10: {path} does not exist; give cifar-10-python.tar.gz or its extracted folder")
    images, labels = [], []
    for name in names:
        where = f"{path}:{name}"
        batch = read_pickled_batch(io.BytesIO(contents[name]), where)
        batch_images, batch_labels = _checked_batch(batch, where)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _read_from_folder(path, names):
    if (path / BATCH_FOLDER).is_dir():
        path = path / BATCH_FOLDER
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise DataError(f"load_cifar10: {path} lacks {', '.join(missing)}; expected the cifar-10-batches-py folder")
    return {name: (path / name).read_bytes() for name in names}


def _read_from_archive(path, names):
    wanted = {f"{BATCH_FOLDER}/{name}": name for name in names}
    contents = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            # One pass in archive order (a .tar.gz cannot seek back cheaply); members are read, never extracted.
            for member in archive:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    contents[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"load_cifar10: {path} is not a readable tar archive ({exc})") from None
    missing = [member for member, name in wanted.items() if name not in contents]
    if missing:
        raise DataError(f"load_cifar10: {path} has no member {', '.join(missing)}; expected cifar-10-python.tar.gz")
    return contents


def _checked_batch(batch, where):
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    data, labels = _entry(batch, "data", where), _entry(batch, "labels", where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be a uint8 array (N, 3072), got {shown}")
    if isinstance(labels, list) and not all(isinstance(label, int) for label in labels):
        raise DataError(f"{where}: 'labels' must be a list of ints")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{where}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape((len(data),) + IMAGE_SHAPE), labels


def _entry(batch, key, where):
    # Python 2 wrote the keys as byte strings, Python 3 pickles may hold them as text.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DataError(f"{where}: the batch has no {key!r} entry (keys: {sorted(map(repr, batch))})")
