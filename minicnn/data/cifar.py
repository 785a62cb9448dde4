"""CIFAR-10 from its "python version" archive, read without unpickling.

The archive cifar-10-python.tar.gz holds cifar-10-batches-py/data_batch_1..5 and
test_batch. Each batch is a pickled dict: b'data' a uint8 NumPy array
(10000, 3072) whose rows are 1024 red, 1024 green, then 1024 blue values of a
32x32 image in row-major order, and b'labels' a list of 10000 ints in 0..9.

`pickle.load` would run whatever code a file asks for, so we never call it: a batch is read
by minicnn.pickle_reader's bounded interpreter, told that a batch may hold plain data and uint8
or int64 NumPy arrays (rebuilt from their raw bytes, nothing imported) and nothing else.

A file is data an attacker may have written, so everything the reader does is bounded by the
file's own size (see minicnn.pickle_reader), and, in the archive, by the bytes it decompresses
and the size each member declares. Every failure is a DataError naming the file and what was
wrong.
"""

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, shown
from ..files import regular_file
from ..pickle_reader import BYTES_GLOBALS, NUMPY_ARRAY_GLOBALS, PickleReader, describe

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


class BatchReader(PickleReader):
    """The bounded pickle interpreter, told what a CIFAR-10 batch may hold: plain data, bytes as
    Python 3 pickles them, and uint8 or int64 NumPy arrays."""

    subject = "a CIFAR-10 batch"
    error = DataError
    allowed_globals = {**NUMPY_ARRAY_GLOBALS, **BYTES_GLOBALS}
    allowed_dtypes = {"u1": np.uint8, "uint8": np.uint8, "i8": np.int64, "int64": np.int64}
    # A real batch has a few opcodes per image (label, file name, appends) against its 3072 pixel bytes.
    opcodes_base, bytes_per_opcode = 10_000, 128


def read_pickled_batch(stream, where, file_size=None):
    """The object pickled in binary `stream`, for the plain-data subset a CIFAR-10 batch uses.

    where: the file's name, for messages; file_size: the size of the file the stream comes from
    when it is decompressed (an archive's), which bounds the objects created. Reads at most
    MAX_BATCH_BYTES. Raises DataError for anything outside that subset (another global, an
    unknown opcode) before anything is run, and for input that would exceed the reader's bounds
    (see minicnn.pickle_reader).
    """
    content = stream.read(MAX_BATCH_BYTES + 1)
    if len(content) > MAX_BATCH_BYTES:
        raise DataError(f"{where}: larger than {MAX_BATCH_BYTES} bytes, more than a CIFAR-10 batch can be")
    return BatchReader(bytes(content), where, file_size).read()


# ----- one batch ---------------------------------------------------------------------------------
def read_cifar_batch(content, where, file_size=None):
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9 from one batch file's bytes.

    where: the file's name, for messages; file_size: see read_pickled_batch. Raises DataError for
    anything else.
    """
    batch = read_pickled_batch(io.BytesIO(content), where, file_size)
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
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else describe(data)
        raise DataError(f"{where}: 'data' must be a uint8 array (N, 3072), got {found}")
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
        raise DataError(f"{where}: labels must be in 0..9, found {shown(int(outside))}")
    return np.asarray(values, dtype=np.int64).reshape(count)


def _entry(batch, key, where):
    # Python 2 wrote the keys as byte strings, Python 3 pickles may hold them as text.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    keys = ", ".join(shown(name) for name in list(batch)[:8]) + (", ..." if len(batch) > 8 else "")
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
    elif path.exists():
        status = regular_file(path, "cifar-10-python.tar.gz", DataError)  # not a FIFO or a device, which never end
        batches = _read_from_archive(path, names, status.st_size)
    else:
        raise DataError(f"load_cifar10: {path} does not exist; give cifar-10-python.tar.gz or its extracted folder")
    images, labels = zip(*(batches[name] for name in names))
    return np.concatenate(images), np.concatenate(labels)


def _read_from_folder(path, names):
    if (path / BATCH_FOLDER).is_dir():
        path = path / BATCH_FOLDER
    missing = [name for name in names if not (path / name).exists()]
    if missing:
        raise DataError(f"load_cifar10: {path} lacks {', '.join(missing)}; expected the cifar-10-batches-py folder")
    batches = {}
    for name in names:
        where = f"{path / name}"
        try:
            if regular_file(path / name, "a CIFAR-10 batch", DataError).st_size > MAX_BATCH_BYTES:
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


def _read_from_archive(path, names, file_size):
    wanted = {f"{BATCH_FOLDER}/{name}": name for name in names}
    batches = {}
    try:
        with open(path, "rb") as file, \
                tarfile.open(fileobj=_CappedReader(_decompressed(file), MAX_ARCHIVE_BYTES, path), mode="r:") \
                as archive:
            # One pass in archive order (a .tar.gz cannot seek back cheaply); members are read, never
            # extracted, and checked before tarfile reads or skips their data.
            for count, member in enumerate(archive, start=1):
                where = f"{path}:{shown(member.name, quoted=False)}"
                _check_member(member, count, where, member.name.removeprefix("./") in wanted)
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or name in batches:
                    continue
                content = archive.extractfile(member).read(member.size)
                if len(content) != member.size:
                    raise DataError(f"{where}: truncated, {len(content)} of {member.size} bytes")
                batches[name] = read_cifar_batch(content, f"{path}:{name}", file_size)
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
