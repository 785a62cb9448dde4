"""What a checkpoint file must pass before minicnn reads its data: the guards of checkpoint.py.

A checkpoint comes from outside, so it is read defensively. A .npz is a zip archive of .npy
members; here its first bytes are checked (a zip, not a lone .npy), its member list against the
names a checkpoint may hold, each member's .npy header (read alone, a few KB) against the size the
zip declares, with a cap for its entry, and (for arrays) against the shape the architecture or
the given model needs, all before a member's data is decompressed. Arrays are then read in
chunks into arrays of exactly their checked size; JSON entries are checked for depth before
parsing. Every failure is one CheckpointError naming the file and the entry.
"""

import json
import math
import re

import numpy as np

from .errors import CheckpointError
from .files import regular_file
from .nn.registry import shorten

# A .npz is a zip archive; these are the first bytes of a zip with members and of an empty one.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_SIGNATURE = b"\x93NUMPY"

MAX_JSON_DEPTH = 64  # a real entry nests a few levels; an architecture nests 4 per Sequential
JSON_CAPS = {"architecture": 1 << 20, "optimizer": 1 << 20, "schedule": 1 << 20, "state": 1 << 24}  # bytes
SMALL_CAP = 1 << 12  # format and version
JSON_ENTRIES = tuple(JSON_CAPS)
_CHUNK = 1 << 20
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def quoted(key):
    """An entry's name as messages show it: 'model/0.weight'; escaped (repr) and cut when it holds
    anything unprintable (a newline, a terminal escape) or is long, so a file cannot forge lines."""
    return f"'{key}'" if key.isprintable() and len(key) <= 80 else shorten(key, 80)


def check_signature(path):
    """A regular file (not a FIFO, a device or a folder) that begins as a zip archive does."""
    if not path.exists():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at '{path}'")
    regular_file(path, "a minicnn checkpoint (.npz)", CheckpointError)
    with open(path, "rb") as file:
        start = file.read(len(_NPY_SIGNATURE))
    if start.startswith(_NPY_SIGNATURE):
        raise CheckpointError(f"'{path}' is a single .npy array, not a minicnn checkpoint (.npz)")
    if not start.startswith(_ZIP_SIGNATURES):
        raise CheckpointError(f"'{path}' is not a minicnn checkpoint: it is not a .npz (zip) archive")


def members_of(path, archive):
    """{entry name: ZipInfo} ('model/0.weight' for member 'model/0.weight.npy'); names checked later."""
    members = {}
    for info in archive.infolist():
        key = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise CheckpointError(f"checkpoint '{path}': entry {quoted(key)} appears twice")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"checkpoint '{path}': entry {quoted(key)} is encrypted")
        members[key] = info
    return members


def check_member_names(path, members):
    for key, info in members.items():
        allowed = info.filename.endswith(".npy") and (
            key in ("format", "version") + JSON_ENTRIES
            or (key.startswith("model/") and len(key) > len("model/"))
            or re.fullmatch(r"optimizer/[A-Za-z_][A-Za-z0-9_]*/[0-9]{1,9}", key) is not None)
        if not allowed:
            raise CheckpointError(f"checkpoint '{path}': member {shorten(info.filename, 80)} is not an entry of a "
                                  "minicnn checkpoint (format, version, architecture, state, optimizer, schedule, "
                                  "model/<name>, optimizer/<slot>/<index>, each a .npy)")


def array_header(path, archive, info, key):
    """(shape, dtype, fortran_order, header bytes) of member `info`, checked against its declared size.

    Only the header is read (at most a few KB), so nothing is decompressed beyond it.
    """
    where = f"checkpoint '{path}': entry {quoted(key)}"
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f".npy format version {version} is not read here")
        except ValueError as error:
            raise CheckpointError(f"{where} is not a .npy array: {error}") from None
        header_bytes = member.tell()
    if dtype.hasobject:
        raise CheckpointError(f"'{path}' holds pickled objects, which minicnn never loads (entry {quoted(key)})")
    if dtype.kind not in "biufcU" or dtype.fields is not None or dtype.subdtype is not None:
        raise CheckpointError(f"{where} has dtype {dtype}, which a checkpoint never holds")
    data_bytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if info.file_size != header_bytes + data_bytes:
        raise CheckpointError(f"{where}: the archive declares {info.file_size} bytes but its .npy header declares "
                              f"shape {shape} of {dtype}, {header_bytes + data_bytes} bytes")
    return shape, dtype, fortran_order, header_bytes


def read_array(path, archive, info, key, header):
    """The array of member `info`, read in chunks into an array of the size its checked header declares."""
    shape, dtype, fortran_order, header_bytes = header
    array = np.empty(math.prod(shape), dtype=dtype)
    target = array.view(np.uint8)
    with archive.open(info) as member:
        member.read(header_bytes)
        done = 0
        while done < target.size:
            chunk = member.read(min(_CHUNK, target.size - done))
            if not chunk:
                raise CheckpointError(f"'{path}' is damaged or truncated: entry {quoted(key)} ends early")
            target[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        if member.read(1):
            raise CheckpointError(f"'{path}' is damaged: entry {quoted(key)} holds more than its header declares")
    return array.reshape(shape, order="F" if fortran_order else "C")


def small_entry(path, archive, members, key, cap):
    """The 0-d array of entry `key` (None when absent), refused before reading when it declares more than `cap`."""
    if key not in members:
        return None
    header = array_header(path, archive, members[key], key)
    if members[key].file_size > cap + header[3]:
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' declares {members[key].file_size} bytes, "
                              f"more than the {cap} an entry '{key}' may hold")
    return read_array(path, archive, members[key], key, header)


def json_entry(path, archive, members, key):
    """The JSON entry `key` decoded (None when the file has none), its depth checked before parsing."""
    text = small_entry(path, archive, members, key, JSON_CAPS[key])
    if text is None:
        return None
    if text.shape != () or text.dtype.kind != "U":
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' should be a JSON string, got a {text.dtype} array")
    text = str(text)
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' nests {depth} levels deep; "
                              f"a checkpoint's entries nest at most {MAX_JSON_DEPTH}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"checkpoint '{path}': entry '{key}' is not valid JSON ({error})") from None


def json_depth(text):
    """How deeply the JSON `text` nests its arrays and objects (0 for a number or a string), found without parsing."""
    skeleton_text = _STRING.sub('""', text)  # brackets inside strings do not nest
    codes = np.frombuffer(skeleton_text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def check_model_arrays(path, target, expected, headers):
    shapes = {key[len("model/"):]: header[0] for key, header in headers.items() if key.startswith("model/")}
    name = type(target).__name__
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{path}' does not fit the {name}: the stored weights do not match "
                              f"(missing: {shorten(missing) if missing else 'none'}; "
                              f"unexpected: {shorten(unexpected) if unexpected else 'none'})")
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise CheckpointError(f"checkpoint '{path}' does not fit the {name}: '{key}' has shape {shapes[key]} "
                                  f"in the state but {shape} in the model")
        dtype = headers["model/" + key][1]
        if dtype.kind not in "fiu":
            raise CheckpointError(f"checkpoint '{path}': entry 'model/{key}' has dtype {dtype}, not a number type")


def check_optimizer_arrays(path, optimizer_json, parameter_shapes, headers):
    """{entry: (slot, position)} for each optimizer array, checked against its place and its parameter's shape."""
    places = {}
    for key, (shape, dtype, _, _) in headers.items():
        if not key.startswith("optimizer/"):
            continue
        _, slot, position = key.split("/")
        position = int(position)
        if not (isinstance(optimizer_json, dict) and isinstance(optimizer_json.get(slot), list)
                and position < len(optimizer_json[slot]) and optimizer_json[slot][position] is None):
            raise CheckpointError(f"checkpoint '{path}': array '{key}' has no place in the optimizer's state")
        if position >= len(parameter_shapes) or shape != parameter_shapes[position]:
            wanted = parameter_shapes[position] if position < len(parameter_shapes) else "no parameter"
            raise CheckpointError(f"checkpoint '{path}': array '{key}' has shape {shape}, but parameter {position} "
                                  f"of the model has {wanted}")
        if dtype.kind != "f":
            raise CheckpointError(f"checkpoint '{path}': entry '{key}' has dtype {dtype}, not a floating type")
        places[key] = (slot, position)
    return places
