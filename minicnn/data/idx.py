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
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

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


def read_idx(path):
    """The array stored in the IDX file at `path` (gzipped or raw), in native byte order.

    Raises DataError, naming the file, when the file is not IDX, is truncated,
    has bytes left over after the data, or is a corrupt gzip stream.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if content[:2] == GZIP_MAGIC:
        content = gunzip(content, path)
    return decode_idx(content, path)


def gunzip(content, where):
    """The decompressed bytes of gzip data `content`; DataError naming `where` if it is corrupt."""
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as exc:
        # OSError covers BadGzipFile; EOFError means the stream stops early.
        raise DataError(f"{where}: corrupt gzip data ({exc})") from None


def decode_idx(content, where):
    """The array in the IDX bytes `content`; `where` (a path or URL) names them in errors."""
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
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(content) - header_size
    if found != expected:
        problem = "truncated file" if found < expected else "extra bytes after the data"
        raise DataError(
            f"{where}: {problem}: expected {expected} bytes of data for shape {shape}, found {found}"
        )
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
    atomic_write_bytes(path, content)


def atomic_write_bytes(path, content):
    """Write `content` to `path` through a temporary file in the same folder and os.replace.

    Readers see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(content)
        os.chmod(temp_name, 0o644)  # mkstemp makes the file private; a cache is meant to be read by all
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise
