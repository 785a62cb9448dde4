"""A bounded pickle interpreter: plain data read from a pickle without ever unpickling it.

`pickle.load` would import and call whatever a file names, so minicnn never calls it. Instead
`PickleReader` walks the opcode stream with `pickletools.genops`, which only decodes opcodes, and
interprets the few that plain data needs (dicts, lists, tuples, strings, bytes, numbers) on a stack
of its own. A global is never imported: one the reader allows (a (module, name) pair in
`allowed_globals`) becomes a placeholder carrying its role, and `reduce` and `build` give the roles
meaning. Out of the box the roles are Python 3's way of pickling bytes (`_codecs.encode`) and
NumPy's ways of pickling an array, which is rebuilt from its raw bytes with np.frombuffer.
Anything else is refused before anything runs.

A file is data an attacker may have written, so everything the reader does is bounded by the
pickle's own size: the number of opcodes, the bytes it creates, the nesting depth and the weight of
what it builds (and hashes); the objects it creates are bounded by the honest size of the file
(a pickle inflated from a small zip entry gets no more), and integers by their number of bits.
Every failure is one line, `error`, naming the file, the opcode and its byte offset; values and
names from the file are shown escaped and cut (`describe`, and minicnn.errors.shown).

Readers of a format subclass it: minicnn.data.cifar reads CIFAR-10 batches, minicnn.interop reads
PyTorch's data.pkl.
"""

import io
import math
import pickletools
import warnings

import numpy as np

from .errors import DataError, shown

# ----- bounds -------------------------------------------------------------------------------------
# Real data nests a dict, a list, a tuple: a few levels. CPython hashes and compares nested tuples
# recursively, so an unbounded depth would crash the interpreter.
MAX_NESTING_DEPTH = 32
# Memo keys: BINPUT and LONG_BINPUT write at most 32 bits; a text PUT could name a huge integer, and
# integers whose hashes collide would make each memo insertion scan all the others.
MAX_MEMO_KEY = 1 << 32
# Bytes the reader may create beyond what the opcodes carry (array copies, _codecs.encode) and the
# total size of the keys it hashes, in multiples of the pickle's size: real data creates its arrays
# once (twice for Python 3's protocol 2 bytes, which are encoded from text first).
MATERIALISE_FACTOR, MATERIALISE_BASE = 2, 1 << 20
# Objects the reader may create (values pushed, containers, memo entries, globals, call results),
# counted against the honest size of the file the pickle came from: one opcode byte can make an
# object of a few hundred bytes. A container costs its tracking too, so it counts as several; so
# counted, a PyTorch state dict creates one object per 2 bytes of its pickle (at most), CIFAR's
# batches far fewer.
OBJECTS_BASE, BYTES_PER_OBJECT, CONTAINER_OBJECTS = 10_000, 1, 4
# Integers: a pickle may spell one with millions of digits (LONG4), which Python refuses to print
# (ValueError) and whose arithmetic is slow; real data holds sizes, counts and labels.
MAX_INTEGER_BITS = 1024
MAX_ARRAY_DIMENSIONS, MAX_ARRAY_SIDE = 32, 2**40


def describe(value):
    """A short, bounded description of a value read from a file, for messages: "str 'w'"."""
    return f"{type(value).__name__} {shown(value)}"


# ----- placeholders: what stands for a global, or for an object BUILD has yet to fill in ---------
class Global:
    """Stands in for an allowed global; `role` says which one. Nothing is imported."""

    def __init__(self, role):
        self.role = role


class Placeholder:
    """An object that BUILD replaces by another; the memo entries pointing at it are redirected."""


class _PendingArray(Placeholder):
    """numpy's _reconstruct(ndarray, (0,), b'b'): an empty array that BUILD fills in."""


class _PendingDtype(Placeholder):
    """numpy.dtype('u1') before BUILD sets its byte order."""

    def __init__(self, dtype):
        self.dtype = dtype


BYTES_GLOBALS = {("_codecs", "encode"): "encode"}  # Python 3 stores bytes this way at protocol 2
NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",  # how NumPy pickles arrays at protocol 5
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
}

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


class PickleReader:
    """Interprets one pickle's opcodes on its own stack, within bounds set by the pickle's size.

    content: the pickle's bytes; where: the file's name, for messages; file_size: the size of the
    file the pickle was decompressed from, if it was (it bounds the objects created, with
    len(content)). `read()` returns the object. A format's reader subclasses it: `subject` names
    the format in messages, `error` is the exception raised, `allowed_globals` maps (module,
    name) to a role (BYTES_GLOBALS, NUMPY_ARRAY_GLOBALS or roles of its own), `allowed_dtypes`
    maps the dtype names an array may have to NumPy types, `opcodes_base + len(content) //
    bytes_per_opcode` bounds the opcodes, and `reduce`, `build` and `persistent_load` may be
    overridden to give roles of its own meaning.

    Containers (lists, tuples, dicts) it builds are tracked by id: their nesting depth and their
    weight (the number of objects and bytes a recursive hash, comparison or conversion would visit,
    shared references counted each time). A container may be modified only until it is placed in
    another one, which is how every pickler writes plain data; so depth and weight never change
    after the fact, and no container can end up inside itself.
    """

    subject = "a pickle of plain data"
    error = DataError
    allowed_globals = {}
    allowed_dtypes = {}
    opcodes_base, bytes_per_opcode = 1000, 1  # every opcode takes at least one byte

    def __init__(self, content, where, file_size=None):
        self.content, self.where = content, where
        self.max_opcodes = self.opcodes_base + len(content) // self.bytes_per_opcode
        self.budget = MATERIALISE_FACTOR * len(content) + MATERIALISE_BASE
        # A pickle inflated from a small file (a deflated zip entry) is held to the file's size.
        self.honest_size = len(content) if file_size is None else min(len(content), file_size)
        self.max_objects = OBJECTS_BASE + self.honest_size // BYTES_PER_OBJECT
        self.objects = 0  # objects created, containers counted CONTAINER_OBJECTS times
        self.materialised = 0  # bytes created by REDUCE and BUILD
        self.hashed = 0  # total weight of the dict keys inserted
        self.stack, self.marks, self.memo = [], [], {}
        self.containers = {}  # id -> [object, depth, weight]; holds each object so its id stays its own
        self.placed = set()  # ids of containers already inside another container
        self.placeholder_keys = {}  # id of a Placeholder -> the memo keys it was stored under
        self.opcode, self.position = "start", 0

    # -- the interpreter ----------------------------------------------------------------------------
    def read(self):
        """The object the pickle holds; raises `error` for anything outside plain data and the bounds."""
        try:
            with warnings.catch_warnings():  # genops warns of odd escapes in Python 2 strings
                warnings.simplefilter("ignore", DeprecationWarning)
                return self.interpret()
        except self.error:
            raise
        except Exception as exc:  # genops on a truncated or unknown opcode, or anything unforeseen
            self.fail(f"not a readable pickle of {self.subject} ({type(exc).__name__}: {str(exc)[:200]})")

    def interpret(self):
        for count, (opcode, argument, position) in enumerate(pickletools.genops(io.BytesIO(self.content))):
            name = self.opcode = opcode.name
            self.position = position
            if count >= self.max_opcodes:
                self.fail(f"holds more than {self.max_opcodes} opcodes, more than {self.subject} of "
                          f"{len(self.content)} bytes has")
            if name == "STOP":
                if len(self.stack) != 1 or self.marks:
                    self.fail(f"malformed pickle: {len(self.stack)} objects left at STOP, expected 1")
                return self.stack.pop()
            if name in _PUSH_ARGUMENT:
                self.count_objects(1)
                if type(argument) is int and argument.bit_length() > MAX_INTEGER_BITS:
                    self.fail(f"holds an integer of {argument.bit_length()} bits; {self.subject} holds none "
                              f"above {MAX_INTEGER_BITS}")
                self.stack.append(argument)
            elif name in _PUSH_PY2_STRING:
                self.count_objects(1)
                self.stack.append(argument.encode("latin-1"))
            elif name in _PUSH_CONSTANT:
                self.stack.append(_PUSH_CONSTANT[name])
            elif name in _NEW_CONTAINER:
                self.stack.append(self.register(_NEW_CONTAINER[name]()))
            elif name in _IGNORED:
                pass
            elif name in _DISPATCH:
                getattr(self, _DISPATCH[name])(argument)
            else:
                self.fail(f"refusing to read it: the pickle opcode {name} is one {self.subject} never uses")
        self.fail("the pickle ends without a STOP opcode")

    # One method per family of opcodes; `argument` is what genops decoded after the opcode.
    def mark(self, argument):
        self.marks.append(len(self.stack))

    def put(self, argument):
        self.memoize(argument)

    def memoize_next(self, argument):
        self.memoize(len(self.memo))

    def get(self, argument):
        if argument not in self.memo:
            self.fail(f"malformed pickle: memo entry {shown(argument)} was never stored")
        self.stack.append(self.memo[argument])

    def list_from_mark(self, argument):
        items = self.pop_to_mark()
        self.stack.append(self.register(items, items))

    def tuple_from_mark(self, argument):
        items = tuple(self.pop_to_mark())
        self.stack.append(self.register(items, items))

    def small_tuple(self, argument):
        items = tuple(reversed([self.pop() for _ in range(int(self.opcode[-1]))]))  # TUPLE1, TUPLE2, TUPLE3
        self.stack.append(self.register(items, items))

    def dict_from_mark(self, argument):
        items = self.pop_to_mark()
        self.stack.append(self.register(self.new_dict(items), items))

    def append(self, argument):
        items = [self.pop()] if self.opcode == "APPEND" else self.pop_to_mark()
        target = self.top(list)
        self.adopt(target, items)
        target.extend(items)

    def set_items(self, argument):
        items = [self.pop() for _ in range(2)][::-1] if self.opcode == "SETITEM" else self.pop_to_mark()
        target = self.top(dict)
        self.adopt(target, items)
        self.insert_items(target, items)

    def global_(self, argument):
        if self.opcode == "GLOBAL":
            module, _, attribute = argument.partition(" ")
        else:  # STACK_GLOBAL
            attribute = self.pop()
            module = self.pop()
        self.count_objects(1)
        self.stack.append(self.allowed_global(module, attribute))

    def persistent_id(self, argument):
        self.count_objects(1)
        self.stack.append(self.persistent_load(self.pop()))

    def call(self, argument):
        arguments = self.pop()
        function = self.pop()
        self.count_objects(1)
        self.stack.append(self.reduce(function, arguments))

    def set_state(self, argument):
        state = self.pop()
        target = self.pop()
        self.count_objects(1)
        built = self.build(target, state)
        self.stack.append(built)
        # The memo may hold the placeholder (it is memoized before BUILD); point it at the result.
        for key in self.placeholder_keys.pop(id(target), ()):
            if self.memo.get(key) is target:
                self.memo[key] = built

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
        self.count_objects(CONTAINER_OBJECTS)
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

    def count_objects(self, count):
        self.objects += count
        if self.objects > self.max_objects:
            self.fail(f"creates more than {self.max_objects} objects, more than {self.subject} of "
                      f"{self.honest_size} bytes can hold")

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
        if key not in self.memo:
            self.count_objects(1)
        self.memo[key] = value
        if isinstance(value, Placeholder):
            self.placeholder_keys.setdefault(id(value), []).append(key)

    # -- what the objects mean: dicts, globals, calls, states -----------------------------------------
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
            if isinstance(module, str) and isinstance(attribute, str):
                needed = shown(f"{module}.{attribute}", quoted=False)
            else:
                needed = f"{describe(module)} . {describe(attribute)}"
            self.fail(f"refusing to read it: it needs {needed}, which {self.subject} never does")
        return Global(role)

    def reduce(self, function, arguments):
        """REDUCE: function(*arguments) for the roles of BYTES_GLOBALS and NUMPY_ARRAY_GLOBALS."""
        role = function.role if isinstance(function, Global) else None
        if not isinstance(arguments, tuple):
            self.fail(f"calls {role or describe(function)} with {describe(arguments)}, expected a tuple")
        if role == "encode" and len(arguments) == 2 and isinstance(arguments[0], str) \
                and arguments[1] in ("latin1", "latin-1"):
            self.charge_bytes(len(arguments[0]))
            try:
                return arguments[0].encode("latin-1")
            except UnicodeEncodeError:
                self.fail("encodes text with characters beyond latin-1 as bytes")
        if role == "reconstruct" and len(arguments) == 3 and isinstance(arguments[0], Global) \
                and arguments[0].role == "ndarray":
            return _PendingArray()
        if role == "dtype" and arguments and isinstance(arguments[0], (str, bytes)):
            name = _text(arguments[0])
            if name not in self.allowed_dtypes:
                self.fail(f"refusing to read it: it holds an array of dtype {name[:40]!r}, "
                          f"expected one of {sorted(self.allowed_dtypes)}")
            return _PendingDtype(np.dtype(self.allowed_dtypes[name]))
        if role == "frombuffer" and len(arguments) == 4:
            raw, dtype, shape, order = arguments
            return self.array_from_bytes(raw, dtype, shape, _text(order) == "F")
        self.fail(f"refusing to read it: it calls {role or describe(function)} with unexpected arguments")

    def build(self, target, state):
        """BUILD: `target` given its `state`; here NumPy's dtypes and arrays."""
        if isinstance(target, _PendingDtype):
            # state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
            if not isinstance(state, tuple) or len(state) < 5 or any(part is not None for part in state[2:5]):
                self.fail(f"refusing to read it: it holds a structured dtype, expected one of "
                          f"{sorted(self.allowed_dtypes)}")
            byte_order = _text(state[1])
            return target.dtype.newbyteorder(byte_order) if byte_order in ("<", ">") else target.dtype
        if isinstance(target, _PendingArray):
            # state: (version, shape, dtype, is_fortran, raw bytes)
            if not isinstance(state, tuple) or len(state) != 5:
                self.fail(f"unexpected NumPy array state {describe(state)}")
            _version, shape, dtype, is_fortran, raw = state
            return self.array_from_bytes(raw, dtype, shape, bool(is_fortran))
        self.fail(f"refusing to read it: it sets the state of a {type(target).__name__}, "
                  f"which {self.subject} never does")

    def array_from_bytes(self, raw, dtype, shape, is_fortran):
        """A native-endian array of `shape` and `dtype` copied from `raw` (bytes, or latin-1 text)."""
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
        if not isinstance(shape, tuple) or len(shape) > MAX_ARRAY_DIMENSIONS \
                or not all(type(size) is int and 0 <= size <= MAX_ARRAY_SIDE for size in shape):
            self.fail(f"bad array shape {describe(shape)} for {len(raw)} bytes of data")
        expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
        if len(raw) != expected:
            self.fail(f"array of shape {shape} and dtype {dtype} needs {expected} bytes, found {len(raw)}")
        self.charge_bytes(expected)
        array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if is_fortran else "C")
        return array.astype(dtype.newbyteorder("="))


# Opcode -> the method that interprets it (a subclass may override any of them).
_DISPATCH = {
    "MARK": "mark", "MEMOIZE": "memoize_next", "PUT": "put", "BINPUT": "put", "LONG_BINPUT": "put",
    "GET": "get", "BINGET": "get", "LONG_BINGET": "get",
    "LIST": "list_from_mark", "TUPLE": "tuple_from_mark", "DICT": "dict_from_mark",
    "TUPLE1": "small_tuple", "TUPLE2": "small_tuple", "TUPLE3": "small_tuple",
    "APPEND": "append", "APPENDS": "append", "SETITEM": "set_items", "SETITEMS": "set_items",
    "GLOBAL": "global_", "STACK_GLOBAL": "global_", "BINPERSID": "persistent_id",
    "REDUCE": "call", "BUILD": "set_state",
}


def _text(value):
    # A Python 2 pickle holds dtype names and byte orders as `str`, which we read as bytes.
    return value.decode("latin-1") if isinstance(value, bytes) else value
