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

A file is data an attacker may have written, so everything the reader does is
bounded by the file's own size: the number of opcodes, the bytes it creates,
the nesting depth and size of what it builds (and hashes), and, in the archive,
the bytes it decompresses and the size each member declares. Every failure is a
DataError naming the file and what was wrong.
"""

import bz2
import gzip
import io
import lzma
import math
import pickletools
import reprlib
import tarfile
import warnings
import zlib
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

# ----- bounds -------------------------------------------------------------------------------------
# An official batch file is about 31 MB (31,035,704 bytes for data_batch_1). A batch re-pickled by
# Python 3 at protocol 2 stores its 30,720,000 pixel bytes as UTF-8 text, up to twice that size;
# nothing a CIFAR-10 batch can be is larger than this.
MAX_BATCH_BYTES = 64 << 20
# The official archive holds 9 members; its batches are about 6 x 31 MB once decompressed.
MAX_ARCHIVE_MEMBERS = 1000
MAX_ARCHIVE_BYTES = 7 * MAX_BATCH_BYTES
# A real batch nests a dict, a list, a tuple: a few levels. CPython hashes and compares nested
# tuples recursively, so an unbounded depth would crash the interpreter.
MAX_NESTING_DEPTH = 32
# Memo keys: BINPUT and LONG_BINPUT write at most 32 bits; a text PUT could name a huge integer, and
# integers whose hashes collide would make each memo insertion scan all the others.
MAX_MEMO_KEY = 1 << 32
# A real batch has a few opcodes per image (label, file name, appends) against its 3072 pixel bytes.
OPCODES_BASE, BYTES_PER_OPCODE = 10_000, 128
# Bytes the reader may create beyond what the opcodes carry (array copies, _codecs.encode) and
# the total size of the keys it hashes, in multiples of the file's size: a real batch creates its
# pixel array once (twice for the Python 3 protocol 2 flavour, which encodes the text first).
MATERIALISE_FACTOR, MATERIALISE_BASE = 2, 1 << 20
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 3


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
_PUSH_CONSTANT = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_NEW_CONTAINER = {"EMPTY_DICT": dict, "EMPTY_LIST": list, "EMPTY_TUPLE": tuple}
_IGNORED = {"PROTO", "FRAME"}


def describe(value):
    """A short, bounded description of a value read from a file, for messages."""
    return f"{type(value).__name__} {_SHORT.repr(value)}"


def read_pickled_batch(stream, where):
    """The object pickled in binary `stream`, for the plain-data subset a CIFAR-10 batch uses.

    where: the file's name, for messages. Reads at most MAX_BATCH_BYTES. Raises DataError for
    anything outside that subset (another global, an unknown opcode) before anything is run,
    and for input that would exceed the reader's bounds (see the module's docstring).
    """
    content = stream.read(MAX_BATCH_BYTES + 1)
    if len(content) > MAX_BATCH_BYTES:
        raise DataError(f"{where}: larger than {MAX_BATCH_BYTES} bytes, more than a CIFAR-10 batch can be")
    return PickleReader(bytes(content), where).read()


class PickleReader:
    """Interprets one pickle's opcodes on its own stack, within bounds set by the pickle's size.

    It reads a CIFAR-10 batch as it stands; other plain-data formats reuse it by subclassing
    (minicnn.interop reads PyTorch's data.pkl this way): `allowed_globals` maps (module, name)
    to a role, `reduce`, `build` and `persistent_load` give the roles meaning, `subject` names
    the format in messages and `error` is the exception raised.

    Containers (lists, tuples, dicts) it builds are tracked by id: their nesting depth and their
    weight (the number of objects and bytes a recursive hash, comparison or conversion would visit,
    shared references counted each time). A container may be modified only until it is placed in
    another one, which is how every pickler writes plain data; so depth and weight never change
    after the fact, and no container can end up inside itself.
    """

    subject = "a CIFAR-10 batch"
    error = DataError
    allowed_globals = _ALLOWED_GLOBALS
    opcodes_base, bytes_per_opcode = OPCODES_BASE, BYTES_PER_OPCODE

    def __init__(self, content, where):
        self.content, self.where = content, where
        self.max_opcodes = self.opcodes_base + len(content) // self.bytes_per_opcode
        self.budget = MATERIALISE_FACTOR * len(content) + MATERIALISE_BASE
        self.materialised = 0  # bytes created by REDUCE and BUILD
        self.hashed = 0  # total weight of the dict keys inserted
        self.stack, self.marks, self.memo = [], [], {}
        self.containers = {}  # id -> [object, depth, weight]; holds each object so its id stays its own
        self.placed = set()  # ids of containers already inside another container
        self.placeholder_keys = {}  # id of a pending array or dtype -> the memo keys it was stored under
        self.opcode, self.position = "start", 0

    # -- bookkeeping --------------------------------------------------------------------------------
    def fail(self, problem):
        raise self.error(f"{self.where}: {problem} (opcode {self.opcode} at byte {self.position})")

    def pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self.fail("malformed pickle: the stack is empty")
        return self.stack.pop()

    def pop_to_mark(self):
        if not self.marks:
            self.fail("malformed pickle: no MARK before it")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self, kind):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self.fail("malformed pickle: the stack is empty")
        target = self.stack[-1]
        if type(target) is not kind:
            self.fail(f"expected a {kind.__name__} to add to, found {describe(target)}")
        if id(target) in self.placed:
            self.fail(f"modifies a {kind.__name__} already placed inside another object, "
                      f"which {self.subject} never does")
        return target

    def weight(self, value):
        entry = self.containers.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1], entry[2]
        if isinstance(value, (bytes, bytearray, str)):
            return 0, 1 + len(value)
        return 0, 1

    def register(self, container, items=()):
        self.containers[id(container)] = [container, 1, 1]
        self.adopt(container, items)
        return container

    def adopt(self, container, items):
        """Account for `items` placed inside `container` (a tracked list, tuple or dict)."""
        entry = self.containers[id(container)]
        for item in items:
            if item is container:
                self.fail(f"places a {type(container).__name__} inside itself")
            depth, weight = self.weight(item)
            entry[1] = max(entry[1], depth + 1)
            entry[2] += weight
            if id(item) in self.containers and self.containers[id(item)][0] is item:
                self.placed.add(id(item))
        if entry[1] > MAX_NESTING_DEPTH:
            self.fail(f"nests objects more than {MAX_NESTING_DEPTH} levels deep; {self.subject} needs a few")
        if entry[2] > self.budget:
            self.fail(f"builds an object of weight {entry[2]}, more than {self.budget} for a file of "
                      f"{len(self.content)} bytes")

    def charge_keys(self, keys):
        for key in keys:
            self.hashed += self.weight(key)[1]
        if self.hashed > self.budget:
            self.fail(f"hashes dict keys totalling {self.hashed} objects and bytes, more than {self.budget} "
                      f"for a file of {len(self.content)} bytes")
        for key in keys:
            try:
                hash(key)
            except TypeError:
                self.fail(f"uses an unhashable dict key, {describe(key)}")

    def charge_bytes(self, count):
        self.materialised += count
        if self.materialised > self.budget:
            self.fail(f"creates {self.materialised} bytes, more than {self.budget} for a file of "
                      f"{len(self.content)} bytes ({self.subject} creates about its own size)")

    def memoize(self, key):
        if not (type(key) is int and 0 <= key < MAX_MEMO_KEY):
            self.fail(f"malformed pickle: a memo key must be a whole number below {MAX_MEMO_KEY}")
        if not self.stack:
            self.fail("malformed pickle: the stack is empty")
        value = self.stack[-1]
        self.memo[key] = value
        if isinstance(value, (_PendingArray, _PendingDtype)):
            self.placeholder_keys.setdefault(id(value), []).append(key)

    # -- the interpreter ----------------------------------------------------------------------------
    def read(self):
        try:
            with warnings.catch_warnings():  # genops warns of odd escapes in Python 2 strings
                warnings.simplefilter("ignore", DeprecationWarning)
                return self.interpret()
        except self.error:
            raise
        except Exception as exc:  # genops on a truncated or unknown opcode, or anything unforeseen
            self.fail(f"not a readable pickle of {self.subject} ({type(exc).__name__}: {str(exc)[:200]})")

    def interpret(self):
        stack = self.stack
        for count, (opcode, argument, position) in enumerate(pickletools.genops(io.BytesIO(self.content))):
            name = self.opcode = opcode.name
            self.position = position
            if count >= self.max_opcodes:
                self.fail(f"holds more than {self.max_opcodes} opcodes, more than {self.subject} of "
                          f"{len(self.content)} bytes has")
            if name in _PUSH_ARGUMENT:
                stack.append(argument)
            elif name in _PUSH_PY2_STRING:
                stack.append(argument.encode("latin-1"))
            elif name in _PUSH_CONSTANT:
                stack.append(_PUSH_CONSTANT[name])
            elif name in _NEW_CONTAINER:
                stack.append(self.register(_NEW_CONTAINER[name]()))
            elif name in _IGNORED:
                pass
            elif name == "MARK":
                self.marks.append(len(stack))
            elif name == "STOP":
                if len(stack) != 1 or self.marks:
                    self.fail(f"malformed pickle: {len(stack)} objects left at STOP, expected 1")
                return stack.pop()
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                self.memoize(argument)
            elif name == "MEMOIZE":
                self.memoize(len(self.memo))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if argument not in self.memo:
                    self.fail(f"malformed pickle: memo entry {argument} was never stored")
                stack.append(self.memo[argument])
            elif name == "LIST":
                items = self.pop_to_mark()
                stack.append(self.register(items, items))
            elif name == "TUPLE":
                items = tuple(self.pop_to_mark())
                stack.append(self.register(items, items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                items = tuple(reversed([self.pop() for _ in range(int(name[-1]))]))
                stack.append(self.register(items, items))
            elif name == "DICT":
                items = self.pop_to_mark()
                stack.append(self.register(self.new_dict(items), items))
            elif name == "APPEND":
                item = self.pop()
                target = self.top(list)
                self.adopt(target, [item])
                target.append(item)
            elif name == "APPENDS":
                items = self.pop_to_mark()
                target = self.top(list)
                self.adopt(target, items)
                target.extend(items)
            elif name in ("SETITEM", "SETITEMS"):
                items = [self.pop() for _ in range(2)][::-1] if name == "SETITEM" else self.pop_to_mark()
                target = self.top(dict)
                self.adopt(target, items)
                self.insert_items(target, items)
            elif name == "GLOBAL":
                module, _, attribute = argument.partition(" ")
                stack.append(self.allowed_global(module, attribute))
            elif name == "STACK_GLOBAL":
                attribute = self.pop()
                module = self.pop()
                stack.append(self.allowed_global(module, attribute))
            elif name == "BINPERSID":
                stack.append(self.persistent_load(self.pop()))
            elif name == "REDUCE":
                arguments = self.pop()
                function = self.pop()
                stack.append(self.reduce(function, arguments))
            elif name == "BUILD":
                state = self.pop()
                target = self.pop()
                built = self.build(target, state)
                stack.append(built)
                # The memo may hold the placeholder (it is memoized before BUILD); point it at the result.
                for key in self.placeholder_keys.pop(id(target), ()):
                    if self.memo.get(key) is target:
                        self.memo[key] = built
            else:
                self.fail(f"refusing to read it: the pickle opcode {name} is one {self.subject} never uses")
        self.fail("the pickle ends without a STOP opcode")

    def new_dict(self, items):
        if len(items) % 2:
            self.fail(f"malformed pickle: {len(items)} items for a dict, expected key-value pairs")
        keys = items[::2]
        # Text keys hash with a per-process salt; numbers (or tuples of them) chosen to share one hash
        # would make building the dict take time quadratic in its size.
        key = next((key for key in keys if type(key) not in (str, bytes)), None)
        if key is not None:
            self.fail(f"uses {describe(key)} as a dict key; {self.subject} keys its dicts by name")
        self.charge_keys(keys)
        return dict(zip(keys, items[1::2]))

    def insert_items(self, target, items):
        """SETITEM(S): key-value pairs `items` (a flat list) into the dict `target`."""
        target.update(self.new_dict(items))

    def persistent_load(self, persistent_id):
        """BINPERSID: what an object stored outside the pickle stands for; plain data has none."""
        self.fail(f"refusing to read it: it refers to an object stored outside the pickle "
                  f"({describe(persistent_id)}), which {self.subject} never does")

    def allowed_global(self, module, attribute):
        role = None
        if isinstance(module, str) and isinstance(attribute, str):
            role = self.allowed_globals.get((module, attribute))
        if role is None:
            shown = f"{module}.{attribute}" if isinstance(module, str) and isinstance(attribute, str) \
                else f"{describe(module)} . {describe(attribute)}"
            self.fail(f"refusing to read it: it needs {shown[:200]}, which {self.subject} never does")
        return _Global(role)

    def reduce(self, function, arguments):
        role = function.role if isinstance(function, _Global) else None
        if not isinstance(arguments, tuple):
            self.fail(f"calls {role or describe(function)} with {describe(arguments)}, expected a tuple")
        if role == "encode" and len(arguments) == 2 and isinstance(arguments[0], str) \
                and arguments[1] in ("latin1", "latin-1"):
            self.charge_bytes(len(arguments[0]))
            try:
                return arguments[0].encode("latin-1")
            except UnicodeEncodeError:
                self.fail("encodes text with characters beyond latin-1 as bytes")
        if role == "reconstruct" and len(arguments) == 3 and isinstance(arguments[0], _Global) \
                and arguments[0].role == "ndarray":
            return _PendingArray()
        if role == "dtype" and arguments and isinstance(arguments[0], (str, bytes)):
            name = _text(arguments[0])
            if name not in _ALLOWED_DTYPES:
                self.fail(f"refusing to read it: it holds an array of dtype {name[:40]!r}, "
                          f"expected one of {sorted(_ALLOWED_DTYPES)}")
            return _PendingDtype(np.dtype(_ALLOWED_DTYPES[name]))
        if role == "frombuffer" and len(arguments) == 4:
            raw, dtype, shape, order = arguments
            return self.array_from_bytes(raw, dtype, shape, _text(order) == "F")
        self.fail(f"refusing to read it: it calls {role or describe(function)} with unexpected arguments")

    def build(self, target, state):
        if isinstance(target, _PendingDtype):
            # state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
            if not isinstance(state, tuple) or len(state) < 5 or any(part is not None for part in state[2:5]):
                self.fail("refusing to read it: it holds a structured dtype, expected uint8 or int64")
            byte_order = _text(state[1])
            return target.dtype.newbyteorder(byte_order) if byte_order in ("<", ">") else target.dtype
        if isinstance(target, _PendingArray):
            # state: (version, shape, dtype, is_fortran, raw bytes)
            if not isinstance(state, tuple) or len(state) != 5:
                self.fail(f"unexpected NumPy array state {describe(state)}")
            _version, shape, dtype, is_fortran, raw = state
            return self.array_from_bytes(raw, dtype, shape, bool(is_fortran))
        self.fail(f"refusing to read it: it sets the state of a {type(target).__name__}, "
                  "which a CIFAR-10 batch never does")

    def array_from_bytes(self, raw, dtype, shape, is_fortran):
        if not isinstance(dtype, np.dtype):
            self.fail(f"expected a NumPy dtype in the array's state, got {describe(dtype)}")
        if isinstance(raw, str):
            self.charge_bytes(len(raw))
            try:
                raw = raw.encode("latin-1")
            except UnicodeEncodeError:
                self.fail("holds an array whose text data has characters beyond latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            self.fail(f"the array's data is {describe(raw)}, expected raw bytes")
        if not isinstance(shape, tuple) or len(shape) > 32 \
                or not all(type(size) is int and 0 <= size <= 2**40 for size in shape):
            self.fail(f"bad array shape {describe(shape)} for {len(raw)} bytes of data")
        expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
        if len(raw) != expected:
            self.fail(f"array of shape {shape} and dtype {dtype} needs {expected} bytes, found {len(raw)}")
        self.charge_bytes(expected)
        array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if is_fortran else "C")
        return array.astype(dtype.newbyteorder("="))


def _text(value):
    # A Python 2 pickle holds dtype names and byte orders as `str`, which we read as bytes.
    return value.decode("latin-1") if isinstance(value, bytes) else value


# ----- one batch ---------------------------------------------------------------------------------
def read_cifar_batch(content, where):
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9 from one batch file's bytes.

    where: the file's name, for messages. Raises DataError for anything else.
    """
    batch = read_pickled_batch(io.BytesIO(content), where)
    try:
        return _checked_batch(batch, where)
    except DataError:
        raise
    except Exception as exc:  # a net under the checks below; none is expected to land here
        raise DataError(f"{where}: not a CIFAR-10 batch ({type(exc).__name__}: {str(exc)[:200]})") from None


def _checked_batch(batch, where):
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict with 'data' and 'labels', got {describe(batch)}")
    data, labels = _entry(batch, "data", where), _entry(batch, "labels", where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else describe(data)
        raise DataError(f"{where}: 'data' must be a uint8 array (N, 3072), got {shown}")
    return data.reshape((len(data),) + IMAGE_SHAPE), _checked_labels(labels, len(data), where)


def _checked_labels(labels, count, where):
    """labels: a list or tuple of ints, or a 1-D integer array, one per image, each in 0..9."""
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"{where}: 'labels' must be integers, got an array of {labels.dtype} {labels.shape}")
        values = labels
    elif isinstance(labels, (list, tuple)):
        wrong = next((label for label in labels if type(label) is not int), None)
        if wrong is not None:
            raise DataError(f"{where}: 'labels' must be integers in 0..9, found {describe(wrong)}")
        values = labels
    else:
        raise DataError(f"{where}: 'labels' must be a list of integers in 0..9, got {describe(labels)}")
    if len(values) != count:
        raise DataError(f"{where}: {count} images but {len(values)} labels")
    if isinstance(values, np.ndarray):
        outside = values[(values < 0) | (values > 9)]
        outside = outside[0] if len(outside) else None
    else:
        outside = next((label for label in values if not 0 <= label <= 9), None)
    if outside is not None:
        raise DataError(f"{where}: labels must be in 0..9, found {_SHORT.repr(int(outside))}")
    return np.asarray(values, dtype=np.int64).reshape(count)


def _entry(batch, key, where):
    # Python 2 wrote the keys as byte strings, Python 3 pickles may hold them as text.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    keys = ", ".join(_SHORT.repr(name) for name in list(batch)[:8]) + (", ..." if len(batch) > 8 else "")
    raise DataError(f"{where}: the batch has no {key!r} entry (keys: {keys})")


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
        batches = _read_from_folder(path, names)
    elif path.is_file():
        batches = _read_from_archive(path, names)
    else:
        raise DataError(f"load_cifar10: {path} does not exist; give cifar-10-python.tar.gz or its extracted folder")
    images, labels = zip(*(batches[name] for name in names))
    return np.concatenate(images), np.concatenate(labels)


def _read_from_folder(path, names):
    if (path / BATCH_FOLDER).is_dir():
        path = path / BATCH_FOLDER
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise DataError(f"load_cifar10: {path} lacks {', '.join(missing)}; expected the cifar-10-batches-py folder")
    batches = {}
    for name in names:
        where = f"{path / name}"
        try:
            if (path / name).stat().st_size > MAX_BATCH_BYTES:
                raise DataError(f"{where}: larger than {MAX_BATCH_BYTES} bytes, more than a CIFAR-10 batch can be")
            with open(path / name, "rb") as file:
                content = file.read(MAX_BATCH_BYTES + 1)
        except OSError as exc:
            raise DataError(f"load_cifar10: cannot read {where} ({exc})") from None
        if len(content) > MAX_BATCH_BYTES:
            raise DataError(f"{where}: larger than {MAX_BATCH_BYTES} bytes, more than a CIFAR-10 batch can be")
        batches[name] = read_cifar_batch(content, where)
    return batches


class _CappedReader:
    """A read-only file over `stream` that refuses to go past `limit` bytes and reads in chunks,
    so no header's declared size makes tarfile allocate more than the data really holds."""

    CHUNK = 1 << 20

    def __init__(self, stream, limit, where):
        self.stream, self.limit, self.where = stream, limit, where

    def _check(self, position):
        if position > self.limit:
            raise DataError(f"load_cifar10: {self.where} holds more than {self.limit} bytes once decompressed, "
                            "more than cifar-10-python.tar.gz does")

    def read(self, size=-1):
        if size is None or size < 0:
            size = self.limit + 1
        chunks, left = [], size
        while left > 0:
            chunk = self.stream.read(min(left, self.CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            self._check(self.stream.tell())
        return b"".join(chunks)

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            self._check(offset)
        elif whence == io.SEEK_CUR:
            self._check(self.stream.tell() + offset)
        else:
            raise io.UnsupportedOperation("seek from the end")
        return self.stream.seek(offset, whence)

    def tell(self):
        return self.stream.tell()


def _decompressed(file):
    """`file` decompressed as its first bytes say (gzip, bzip2, xz), or as is."""
    magic = file.read(6)
    file.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=file, mode="rb")  # reads a stream of several gzip members as one
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(file)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(file)
    return file


def _read_from_archive(path, names):
    wanted = {f"{BATCH_FOLDER}/{name}": name for name in names}
    batches = {}
    try:
        with open(path, "rb") as file, \
                tarfile.open(fileobj=_CappedReader(_decompressed(file), MAX_ARCHIVE_BYTES, path), mode="r:") \
                as archive:
            # One pass in archive order (a .tar.gz cannot seek back cheaply); members are read, never
            # extracted, and checked before tarfile reads or skips their data.
            for count, member in enumerate(archive, start=1):
                where = f"{path}:{member.name[:200]}"
                _check_member(member, count, where, member.name.removeprefix("./") in wanted)
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or name in batches:
                    continue
                content = archive.extractfile(member).read(member.size)
                if len(content) != member.size:
                    raise DataError(f"{where}: truncated, {len(content)} of {member.size} bytes")
                batches[name] = read_cifar_batch(content, f"{path}:{name}")
                if len(batches) == len(names):
                    break
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(f"load_cifar10: {path} is not a readable tar archive ({str(exc)[:200]})") from None
    except Exception as exc:  # tarfile meeting a malformed header in a way it does not report itself
        raise DataError(f"load_cifar10: {path} is not a readable tar archive "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    missing = [member for member, name in wanted.items() if name not in batches]
    if missing:
        raise DataError(f"load_cifar10: {path} has no member {', '.join(missing)}; expected cifar-10-python.tar.gz")
    return batches


def _check_member(member, count, where, is_wanted):
    if count > MAX_ARCHIVE_MEMBERS:
        raise DataError(f"load_cifar10: {where}: more than {MAX_ARCHIVE_MEMBERS} members, "
                        "cifar-10-python.tar.gz has 9")
    if member.issparse():
        raise DataError(f"{where}: a sparse member, which cifar-10-python.tar.gz never holds")
    if member.size > MAX_BATCH_BYTES:
        raise DataError(f"{where}: declares {member.size} bytes, more than a CIFAR-10 batch can be "
                        f"({MAX_BATCH_BYTES})")
    if is_wanted and not member.isreg():
        raise DataError(f"{where}: not a regular file (tar type {member.type!r}); expected a CIFAR-10 batch")
