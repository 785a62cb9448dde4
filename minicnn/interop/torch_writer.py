"""Writing a state dict in torch.save's zip format with NumPy and zipfile only.

The file is what `torch.save(state_dict, path)` writes, so `torch.load(path, weights_only=True)`
reads it: <archive>/data.pkl, <archive>/data/<n> (one storage per tensor, stored uncompressed and
aligned to 64 bytes as torch aligns them), <archive>/byteorder and <archive>/version.

data.pkl is written opcode by opcode (pickle protocol 2), never by pickling objects: an
OrderedDict of `torch._utils._rebuild_tensor_v2(storage, 0, shape, strides, False, OrderedDict())`
calls, each storage a persistent id ('storage', torch.<Type>Storage, '<n>', 'cpu', numel).
"""

import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..files import write_atomically
from .torch_reader import STORAGE_DTYPES

STORAGE_TYPES = {np.dtype(dtype): name for name, dtype in STORAGE_DTYPES.items() if dtype != "bfloat16"}
ALIGNMENT = 64  # torch aligns each storage's bytes in the file, so they can be memory-mapped
ARCHIVE_NAME = "archive"  # the folder inside the zip; torch names it after the file, any name loads
FORMAT_VERSION = b"3\n"


class _ProtocolTwoPickle:
    """The few pickle opcodes a state dict needs, appended to a bytearray."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def mark(self):
        self.out += b"("

    def tuple_from_mark(self):
        self.out += b"t"

    def empty_tuple(self):
        self.out += b")"

    def global_name(self, module, name):
        self.out += b"c" + f"{module}\n{name}\n".encode("ascii")

    def integer(self, value):
        if 0 <= value < 1 << 8:
            self.out += b"K" + struct.pack("<B", value)  # BININT1
        elif 0 <= value < 1 << 16:
            self.out += b"M" + struct.pack("<H", value)  # BININT2
        elif -(1 << 31) <= value < 1 << 31:
            self.out += b"J" + struct.pack("<i", value)  # BININT
        else:
            encoded = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
            self.out += b"\x8a" + struct.pack("<B", len(encoded)) + encoded  # LONG1

    def text(self, value):
        encoded = value.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(encoded)) + encoded  # BINUNICODE

    def integers(self, values):
        self.mark()
        for value in values:
            self.integer(value)
        self.tuple_from_mark()

    def opcode(self, code):
        self.out += code


def state_dict_pickle(arrays):
    """data.pkl's bytes for {name: C-contiguous array}, the storage of the i-th array being data/<i>."""
    pickle = _ProtocolTwoPickle()
    pickle.global_name("collections", "OrderedDict")
    pickle.empty_tuple()
    pickle.opcode(b"R")  # REDUCE: OrderedDict()
    pickle.mark()
    for number, (name, array) in enumerate(arrays.items()):
        pickle.text(name)
        pickle.global_name("torch._utils", "_rebuild_tensor_v2")
        pickle.mark()
        pickle.mark()  # the persistent id
        pickle.text("storage")
        pickle.global_name("torch", STORAGE_TYPES[array.dtype.newbyteorder("=")])
        pickle.text(str(number))
        pickle.text("cpu")
        pickle.integer(array.size)
        pickle.tuple_from_mark()
        pickle.opcode(b"Q")  # BINPERSID
        pickle.integer(0)  # storage offset
        pickle.integers(array.shape)
        pickle.integers(tuple(stride // array.itemsize for stride in array.strides))
        pickle.opcode(b"\x89")  # NEWFALSE: requires_grad
        pickle.global_name("collections", "OrderedDict")
        pickle.empty_tuple()
        pickle.opcode(b"R")  # the (empty) backward hooks
        pickle.tuple_from_mark()
        pickle.opcode(b"R")  # REDUCE: _rebuild_tensor_v2(...)
    pickle.opcode(b"u")  # SETITEMS
    pickle.opcode(b".")  # STOP
    return bytes(pickle.out)


def write_torch_state_dict(state, path):
    """Write {name: NumPy array} to `path` as torch.save(state_dict, path) would; returns the path.

    Supported dtypes: float16/32/64, int8/16/32/64, uint8, bool, complex64/128 (PyTorch's storage
    types). Each array is written C-contiguous and little-endian.
    """
    arrays = {}
    for name, array in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"write_torch_state_dict: key {name!r} is not a string")
        array = np.asarray(array)
        if array.dtype.newbyteorder("=") not in STORAGE_TYPES:
            raise CheckpointError(f"write_torch_state_dict: '{name}' has dtype {array.dtype}, which has no "
                                  f"PyTorch storage type here (supported: {sorted(map(str, STORAGE_TYPES))})")
        # astype keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
        arrays[name] = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    path = Path(path).expanduser()
    write_atomically(path, lambda file: _write_archive(file, arrays))  # a kill mid-write leaves no half file
    return path


def _write_archive(file, arrays):
    """torch.save's zip layout of `arrays` ({name: little-endian C-contiguous array}) into the open `file`."""
    prefix = ARCHIVE_NAME + "/"
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(prefix + "data.pkl", state_dict_pickle(arrays))
        archive.writestr(prefix + "byteorder", b"little")
        for number, array in enumerate(arrays.values()):
            entry = zipfile.ZipInfo(f"{prefix}data/{number}", date_time=(1980, 1, 1, 0, 0, 0))
            entry.extra = _alignment_padding(file.tell(), len(entry.filename))
            archive.writestr(entry, array.tobytes())
        archive.writestr(prefix + "version", FORMAT_VERSION)


def _alignment_padding(header_offset, name_length):
    """An extra field that puts an entry's data, after its 30-byte local header, on an ALIGNMENT boundary."""
    data_offset = header_offset + 30 + name_length + 4  # the padding field's own 4-byte header
    padding = -data_offset % ALIGNMENT
    return b"FB" + struct.pack("<H", padding) + b"Z" * padding
