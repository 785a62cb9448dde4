"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension and
then the array itself, big-endian and row-major:

    byte 0-1: 0x00 0x00
    byte 2:   element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte 3:   number of dimensions, ndim
    then:     ndim sizes (uint32 each), then prod(sizes) elements

Files are often distributed gzipped; `read_idx` recognises gzip by its first
two bytes (1f 8b), whatever the file is called.
"""

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..backend import format_bytes, memory_limit
from ..errors import DataError
from ..files import write_bytes_atomically

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype, as the file stores it.
_DTYPE_OF_CODE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_DTYPE = {(dtype.kind, dtype.itemsize): code for code, dtype in _DTYPE_OF_CODE.items()}


def read_idx(path, max_bytes=None):
    """The array stored in the IDX file at `path` (gzipped or raw), in native byte order.

    max_bytes: the most bytes the decoded file may take (default: backend.memory_limit()).
    The header's declared size is checked against the file's length (raw) or the cap (gzip)
    before the data are read or decompressed, so a small file cannot make this allocate much.
    Raises DataError, naming the file, when the file is not IDX, is truncated, has bytes left
    over after the data, declares more than the cap, or is a corrupt gzip stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            start = file.read(4 + 4 * 255)  # the longest header: 255 dimensions
            if start[:2] == GZIP_MAGIC:
                content = gunzip_idx(start + file.read(), path, max_bytes)
            else:
                _, shape, header_size, data_size = idx_header(start, path)
                _check_length(path, shape, data_size, os.fstat(file.fileno()).st_size - header_size)
                content = start + file.read()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    return decode_idx(content, path)


class GzipStream:
    """Reads the decompressed bytes of gzip data (one member or several, as `gzip` writes them) a piece at a time.

    Nothing is decompressed beyond what `read` asks for, so a small stream that would expand to
    gigabytes costs only what the caller is prepared to accept.
    """

    CHUNK = 1 << 24  # decompress at most 16 MiB per call

    def __init__(self, content, where):
        self.where = where
        self.decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper
        self.pending = bytes(content)  # compressed bytes not yet given to the decompressor
        self.finished = False

    def read(self, size):
        """Up to `size` more decompressed bytes; fewer only where the stream ends."""
        pieces, have = [], 0
        while have < size and not self.finished:
            try:
                piece = self.decompressor.decompress(self.pending, min(size - have, self.CHUNK))
            except zlib.error as exc:
                raise DataError(f"{self.where}: corrupt gzip data ({exc})") from None
            progressed = piece or len(self.decompressor.unconsumed_tail) != len(self.pending)
            self.pending = self.decompressor.unconsumed_tail
            pieces.append(piece)
            have += len(piece)
            if self.decompressor.eof:
                # The next member, if any; gzip allows zero bytes of padding after the last one.
                self.pending = self.decompressor.unused_data.lstrip(b"\x00")
                if self.pending:
                    self.decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                else:
                    self.finished = True
            elif not progressed:
                raise DataError(f"{self.where}: corrupt gzip data (the stream ends before its end-of-stream marker)")
        return b"".join(pieces)


def gunzip_idx(content, where, max_size=None):
    """The IDX bytes (header and data) inside gzip data `content`, decompressing only what the header declares.

    max_size: the most bytes the IDX file may have (default backend.memory_limit()); a header
    declaring more is refused before the data are decompressed. DataError naming `where` otherwise too.
    """
    limit = memory_limit() if max_size is None else max_size
    stream = GzipStream(content, where)
    start = stream.read(4)
    start += stream.read(4 * start[3]) if len(start) == 4 else b""
    _, shape, header_size, data_size = idx_header(start, where)
    if header_size + data_size > limit:
        raise DataError(
            f"{where}: the IDX header declares shape {shape}, {format_bytes(data_size)} of data, "
            f"more than the {format_bytes(limit)} this file may hold (max_bytes, or backend.set_memory_limit)"
        )
    data = stream.read(data_size + 1)  # one byte more tells "extra bytes" from an exact fit
    _check_length(where, shape, data_size, len(data) if len(data) <= data_size else f"more than {data_size}")
    return start + data


def idx_header(content, where):
    """(dtype, shape, header_size, data_size) from the start of IDX bytes `content`.

    Sizes are Python ints: a header whose dimensions multiply past 2**63 gives its true size.
    """
    if len(content) < 4:
        raise DataError(f"{where}: not an IDX file: {len(content)} bytes, shorter than the 4-byte magic number")
    zero1, zero2, type_code, ndim = content[:4]
    if zero1 != 0 or zero2 != 0 or type_code not in _DTYPE_OF_CODE:
        raise DataError(
            f"{where}: not an IDX file: bad magic number {content[:4].hex(' ')} (expected 00 00, then a type "
            f"code among {', '.join(f'{code:02x}' for code in _DTYPE_OF_CODE)}, then the number of dimensions)"
        )
    if ndim == 0:
        raise DataError(f"{where}: IDX header says the array has 0 dimensions; expected at least 1")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(
            f"{where}: truncated IDX header: {ndim} dimensions need {header_size} header bytes, "
            f"the file has {len(content)}"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    dtype = _DTYPE_OF_CODE[type_code]
    return dtype, shape, header_size, math.prod(shape) * dtype.itemsize


def _check_length(where, shape, expected, found):
    """DataError unless the data after the header are exactly `expected` bytes long (`found` may be text)."""
    if found != expected:
        problem = "truncated file" if isinstance(found, int) and found < expected else "extra bytes after the data"
        raise DataError(f"{where}: {problem}: expected {expected} bytes of data for shape {shape}, found {found}")


def decode_idx(content, where):
    """The array in the IDX bytes `content`; `where` (a path or URL) names them in errors."""
    dtype, shape, header_size, data_size = idx_header(content, where)
    _check_length(where, shape, data_size, len(content) - header_size)
    array = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def write_idx(path, array):
    """Write `array` to `path` as an IDX file, gzipped when the name ends with '.gz'.

    array: any shape with at least one dimension; dtype uint8, int8, int16, int32,
    float32 or float64. The file appears whole or not at all: it is written to a
    temporary file beside `path` and then renamed over it.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODE_OF_DTYPE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        supported = ", ".join(str(dtype.newbyteorder("=")) for dtype in _DTYPE_OF_CODE.values())
        raise DataError(f"write_idx({path}): dtype {array.dtype} has no IDX type code; use one of {supported}")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx({path}): IDX stores 1 to 255 dimensions, the array has {array.ndim}")
    if max(array.shape) >= 2**32:
        raise DataError(f"write_idx({path}): IDX sizes are uint32, shape {array.shape} does not fit")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + np.ascontiguousarray(array, dtype=_DTYPE_OF_CODE[code]).tobytes()
    if path.name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)  # mtime=0: the same array always gives the same bytes
    write_bytes_atomically(path, content)
