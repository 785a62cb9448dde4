"""PyTorch state-dict files read without PyTorch and without running pickle.

`torch.save(model.state_dict(), path)` writes a zip archive (the format since PyTorch 1.6, and
the format of torchvision's published weights such as resnet18-f37072fd.pth):

    <archive>/data.pkl      a pickle of an OrderedDict {name: tensor}
    <archive>/data/<key>    the raw bytes of each storage a tensor views
    <archive>/byteorder     'little' or 'big' (absent in old files: little)
    <archive>/version       the format's version

data.pkl describes each tensor as a call `torch._utils._rebuild_tensor_v2(storage, offset, shape,
strides, requires_grad, hooks)`, where `storage` is a persistent id
('storage', torch.FloatStorage, key, location, numel) naming the entry data/<key>. Unpickling it
would import torch and run whatever else the file names, so we never do. The opcodes are walked
by minicnn.pickle_reader.PickleReader (the bounded interpreter that also reads CIFAR-10's pickles)
with an allow-list of the few globals a state dict uses; each tensor becomes a record, and only after
every record is checked against the archive (the entry exists, holds exactly numel items of the
dtype, the strides and offset stay inside it, the totals fit the file's size) are the storages
read and the views copied out with NumPy.
"""

import collections
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, shown
from ..files import regular_file
from ..pickle_reader import PickleReader, describe

# Storage types a state dict names -> the NumPy dtype of their items (little-endian; the byteorder
# record may say otherwise). NumPy has no bfloat16: its items are read as uint16 and widened to
# float32 exactly (a bfloat16 is the top half of a float32).
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}

# ----- bounds -------------------------------------------------------------------------------------
# data.pkl takes about 200 bytes per tensor: ResNet-18's is 12 KB, a model of 100,000 tensors 20 MB.
MAX_PICKLE_BYTES = 64 << 20
# torch stores storages uncompressed; a re-zipped file may deflate them. Decompressed bytes may be at
# most this many times the file's size (float weights barely compress; a zip bomb expands 1000-fold).
MAX_EXPANSION = 8
# The tensors' bytes may exceed their storages' (two views of one storage, a bfloat16 widened to
# float32) by at most this factor, so strides of 0 cannot turn a tiny storage into a huge array.
MAX_VIEW_FACTOR = 4
SLACK_BYTES = 1 << 20
MAX_DIMENSIONS = 64
# Counts, offsets, sizes and strides in items: 2**48 is far beyond any real tensor, and keeps every
# product with an item size inside NumPy's int64 (huge Python ints would escape as ValueError).
MAX_INDEX = 1 << 48
MAX_ARCHIVE_ENTRIES = 1_000_000


class _Storage:
    """A persistent id ('storage', storage type, key, location, numel): numel items at data/<key>."""

    def __init__(self, key, type_name, numel):
        self.key, self.type_name, self.numel = key, type_name, numel
        self.dtype = STORAGE_DTYPES[type_name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _TensorRecord:
    """_rebuild_tensor_v2's arguments: a view (offset, shape, strides in items) of one storage."""

    def __init__(self, storage, offset, shape, strides):
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


class StateDictPickleReader(PickleReader):
    """Reads data.pkl of a torch.save'd state dict: plain data, OrderedDicts, tensor records.

    Storages come from the persistent ids; any global outside ALLOWED_GLOBALS (torch.storage.
    _load_from_bytes, which unpickles a nested file, os.system, ...) is refused before anything runs.
    """

    subject = "a PyTorch state dict"
    error = CheckpointError
    allowed_globals = {
        ("collections", "OrderedDict"): "ordered_dict",
        ("torch._utils", "_rebuild_tensor_v2"): "rebuild_tensor_v2",
        ("torch._utils", "_rebuild_tensor"): "rebuild_tensor",
        ("torch._utils", "_rebuild_parameter"): "rebuild_parameter",
        **{("torch", type_name): "storage " + type_name for type_name in STORAGE_DTYPES},
    }

    def __init__(self, content, where, file_size=None):
        super().__init__(content, where, file_size)
        self.storages = {}  # key -> _Storage, so every tensor of one storage shares it

    def persistent_load(self, persistent_id):
        if not (isinstance(persistent_id, tuple) and len(persistent_id) == 5 and persistent_id[0] == "storage"):
            self.fail(f"refusing to read it: unknown persistent id {describe(persistent_id)}, "
                      "expected ('storage', storage type, key, location, numel)")
        _, storage_type, key, location, numel = persistent_id
        role = getattr(storage_type, "role", "")
        if not (isinstance(role, str) and role.startswith("storage ")):
            self.fail(f"refusing to read it: a storage of type {describe(storage_type)}, "
                      f"expected one of torch.{', torch.'.join(STORAGE_DTYPES)}")
        if type(numel) is int and numel > MAX_INDEX:
            self.fail(f"a storage declares more than {MAX_INDEX} items")
        if not (isinstance(key, str) and 0 < len(key) <= 200 and isinstance(location, str)
                and type(numel) is int and numel >= 0):
            self.fail(f"bad storage id {describe(persistent_id)}, expected a text key and location and a count")
        storage = _Storage(key, role.split(" ", 1)[1], numel)
        known = self.storages.setdefault(key, storage)
        if (known.type_name, known.numel) != (storage.type_name, storage.numel):
            self.fail(f"storage {shown(key)} is declared twice differently: {known.numel} items of "
                      f"{known.type_name}, then {numel} of {storage.type_name}")
        return known

    def reduce(self, function, arguments):
        role = getattr(function, "role", None)
        if not isinstance(arguments, tuple):
            self.fail(f"calls {role or describe(function)} with {describe(arguments)}, expected a tuple")
        if role == "ordered_dict" and arguments == ():
            return self.register({})
        # _rebuild_tensor_v2(storage, offset, shape, strides, requires_grad, hooks[, metadata]); the first
        # version, of PyTorch 0.4's files, has the first four.
        arity = {"rebuild_tensor_v2": (6, 7), "rebuild_tensor": (4,)}.get(role, ())
        if len(arguments) in arity:
            storage, offset, shape, strides = arguments[:4]
            if role == "rebuild_tensor_v2" and not (type(arguments[4]) is bool and type(arguments[5]) is dict):
                self.fail(f"{role}: expected requires_grad and a hooks dict, got "
                          f"{describe(arguments[4])}, {describe(arguments[5])}")
            return self.tensor_record(storage, offset, shape, strides)
        if role == "rebuild_parameter" and len(arguments) == 3 and isinstance(arguments[0], _TensorRecord):
            return arguments[0]  # a Parameter saved as such: its data is the tensor
        self.fail(f"refusing to read it: it calls {role or describe(function)} with {describe(arguments)}")

    def tensor_record(self, storage, offset, shape, strides):
        if not isinstance(storage, _Storage):
            self.fail(f"a tensor's storage is {describe(storage)}, expected a persistent storage id")

        def integers(value):
            return isinstance(value, tuple) and len(value) <= MAX_DIMENSIONS \
                and all(type(item) is int and item >= 0 for item in value)

        if type(offset) is not int or offset < 0 or not integers(shape) or not integers(strides) \
                or len(shape) != len(strides):
            self.fail(f"a tensor of storage {shown(storage.key)} has offset {describe(offset)}, shape "
                      f"{describe(shape)}, strides {describe(strides)}; expected non-negative ints, "
                      f"shape and strides of equal length (at most {MAX_DIMENSIONS})")
        # An empty tensor's other sides count too: NumPy refuses to make (0, 2**62, 2**62).
        if max((offset, *strides, math.prod(size or 1 for size in shape)), default=0) > MAX_INDEX:
            self.fail(f"a tensor of storage {shown(storage.key)} has an offset, stride or size above "
                      f"{MAX_INDEX} items")
        return _TensorRecord(storage, offset, shape, strides)

    def build(self, target, state):
        # The state dict's OrderedDict carries `_metadata` (each module's version) as its attribute.
        if type(target) is dict and (state is None or type(state) is dict):
            return target
        self.fail(f"refusing to read it: it sets the state of a {type(target).__name__} to {describe(state)}")

    def new_dict(self, items):
        # Every dict of a state dict is keyed by text: stricter than the base reader, which takes bytes too.
        key = next((key for key in items[::2] if type(key) is not str), None)
        if key is not None:
            self.fail(f"a key is {describe(key)}, expected a name (text)")
        mapping = super().new_dict(items)
        if 2 * len(mapping) != len(items):
            seen = set()
            repeated = next(key for key in items[::2] if key in seen or seen.add(key))
            self.fail(f"the key {describe(repeated)} appears twice")
        return mapping

    def insert_items(self, target, items):
        mapping = self.new_dict(items)
        repeated = next((key for key in mapping if key in target), None)
        if repeated is not None:
            self.fail(f"the key {describe(repeated)} appears twice")
        target.update(mapping)


def read_torch_state_dict(path):
    """{name: NumPy array} from a file written by torch.save(model.state_dict(), path).

    Reads the zip format (PyTorch 1.6 and later; torchvision's published weights) without
    importing torch and without unpickling: dtypes, shapes, strides and storage offsets are
    honoured, and every array is a writeable native-endian copy (bfloat16 becomes float32).
    Raises CheckpointError, naming the file and the entry, for anything else: a global outside the
    allow-list, a truncated archive, a missing or wrongly sized storage, a view reaching outside
    its storage, sizes out of proportion to the file.
    """
    path = Path(path).expanduser()
    where = str(path)
    try:
        file_size = regular_file(path, "a PyTorch state dict", CheckpointError).st_size
        with open(path, "rb") as file:
            head = file.read(4)
            if not zipfile.is_zipfile(file):
                raise CheckpointError(_not_a_zip_message(where, head))
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                return _read_archive(archive, file_size, where)
    except CheckpointError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError) as exc:
        raise CheckpointError(f"{where}: not a readable PyTorch zip file ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


def _not_a_zip_message(where, head):
    if head[:2] == b"\x80\x02":  # torch.save's format before 1.6 begins with a pickled magic number
        return (f"{where}: a PyTorch file in the legacy format (before PyTorch 1.6), which cannot be read "
                "without unpickling; load it with torch and save it again with a recent torch.save")
    if head == b"PK\x03\x04":
        return (f"{where}: a zip archive cut short (its directory, at the end of the file, is missing); "
                "an interrupted download or copy?")
    return f"{where}: not a zip archive, so not a file written by torch.save (PyTorch 1.6 or later)"


def _read_archive(archive, file_size, where):
    infos = archive.infolist()
    if len(infos) > MAX_ARCHIVE_ENTRIES:
        raise CheckpointError(f"{where}: {len(infos)} entries, more than {MAX_ARCHIVE_ENTRIES}")
    names = collections.Counter(info.filename for info in infos)
    repeated = next((name for name, count in names.items() if count > 1), None)
    if repeated is not None:  # zipfile would read the last copy, another reader the first
        raise CheckpointError(f"{where}: {shown(repeated, quoted=False)}: appears {names[repeated]} times in the "
                              "archive")
    pickles = [info for info in infos if info.filename.count("/") == 1 and info.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        found = ", ".join(shown(info.filename, quoted=False) for info in pickles[:4])
        raise CheckpointError(f"{where}: expected one <archive>/data.pkl entry, found {len(pickles)} ({found})")
    prefix = pickles[0].filename[: -len("data.pkl")]
    byte_order = "<"
    if prefix + "byteorder" in archive.namelist():
        record = bytes(_read_entry(archive, archive.getinfo(prefix + "byteorder"), 16, where))
        if record not in (b"little", b"big"):
            raise CheckpointError(f"{where}: {shown(prefix + 'byteorder', quoted=False)} says {record[:16]!r}, "
                                  "expected b'little' or b'big'")
        byte_order = "<" if record == b"little" else ">"

    limit = min(MAX_PICKLE_BYTES, MAX_EXPANSION * file_size + SLACK_BYTES)
    content = bytes(_read_entry(archive, pickles[0], limit, where))
    pickle_where = f"{where}: {shown(pickles[0].filename, quoted=False)}"
    reader = StateDictPickleReader(content, pickle_where, file_size)
    records = _checked_records(reader.read(), pickle_where)
    storage_infos = _checked_storages(archive, reader.storages, prefix, file_size, where)
    _check_views(records, reader.storages, where)

    raw = {key: _read_entry(archive, info, info.file_size, where) for key, info in storage_infos.items()}
    uses = collections.Counter(record.storage.key for record in records.values())
    return {name: _materialise(record, raw[record.storage.key], byte_order, uses[record.storage.key] == 1)
            for name, record in records.items()}


def _read_entry(archive, info, limit, where):
    """The bytes of one entry, refusing before reading when it declares more than `limit`.

    Only stored and deflated entries are read: zipfile bounds a deflated entry's output by the
    bytes asked for, but decompresses a bzip2 or LZMA chunk whole, and a few hundred bytes of
    bzip2 expand to gigabytes before the declared size is ever compared.
    """
    entry_where = f"{where}: {shown(info.filename, quoted=False)}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{entry_where}: compressed with method {info.compress_type}; "
                              "torch.save stores entries uncompressed, and only stored or deflated entries "
                              "are read")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{entry_where}: encrypted, which torch.save never does")
    if info.file_size > limit:
        raise CheckpointError(f"{entry_where}: declares {info.file_size} bytes, more than "
                              f"the {limit} it may hold")
    content = bytearray(info.file_size)  # writeable, so a tensor that is its whole storage needs no copy
    with archive.open(info) as entry:
        count = entry.readinto(content)
        count += len(entry.read(1))  # reading to the end makes zipfile check the CRC
    if count != info.file_size:
        raise CheckpointError(f"{entry_where}: holds {count} bytes, its header says "
                              f"{info.file_size}")
    return content


def _checked_records(state, where):
    if type(state) is not dict:
        raise CheckpointError(f"{where}: holds {describe(state)}, not a state dict {{name: tensor}}")
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{where}: a key is {describe(name)}, expected a parameter name")
        if type(value) is dict:
            raise CheckpointError(
                f"{where}: entry {shown(name)} is a dict, not a tensor: this looks like a training "
                f"checkpoint (keys {', '.join(shown(key) for key in list(state)[:6])}); save "
                f"model.state_dict() on its own")
        if not isinstance(value, _TensorRecord):
            raise CheckpointError(f"{where}: entry {shown(name)} is {describe(value)}, expected a tensor")
    return state


def _checked_storages(archive, storages, prefix, file_size, where):
    infos, total = {}, 0
    for key, storage in storages.items():
        entry = shown(f"{prefix}data/{key}", quoted=False)  # for messages
        try:
            info = archive.getinfo(f"{prefix}data/{key}")
        except KeyError:
            raise CheckpointError(f"{where}: {entry}: missing; data.pkl names storage {shown(key)} "
                                  f"({storage.numel} items of {storage.type_name})") from None
        expected = storage.numel * storage.itemsize
        if info.file_size != expected:
            raise CheckpointError(f"{where}: {entry}: holds {info.file_size} bytes, but data.pkl declares "
                                  f"{storage.numel} items of {storage.type_name}, {expected} bytes")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(f"{where}: {entry}: stored uncompressed in {info.compress_size} bytes "
                                  f"but declares {info.file_size}")
        total += expected
        infos[key] = info
    limit = MAX_EXPANSION * file_size + SLACK_BYTES
    if total > limit:
        raise CheckpointError(f"{where}: its storages declare {total} bytes, more than {limit} for a file "
                              f"of {file_size} bytes")
    return infos


def _check_views(records, storages, where):
    """Every view stays inside its storage, and all views together are in proportion to the storages."""
    total = 0
    for name, record in records.items():
        storage = record.storage
        count = math.prod(record.shape)  # Python integers: no overflow
        if count:
            last = record.offset + sum((size - 1) * stride for size, stride in zip(record.shape, record.strides))
            inside = last < storage.numel
        else:
            inside = record.offset <= storage.numel
        if not inside:
            raise CheckpointError(
                f"{where}: tensor {shown(name)} (shape {record.shape}, strides {record.strides}, "
                f"offset {record.offset}) reaches outside its storage {shown(storage.key)} of "
                f"{storage.numel} items")
        total += count * (4 if storage.dtype == "bfloat16" else storage.itemsize)
    stored = sum(storage.numel * storage.itemsize for storage in storages.values())
    limit = MAX_VIEW_FACTOR * stored + SLACK_BYTES
    if total > limit:
        raise CheckpointError(f"{where}: its tensors take {total} bytes, more than {limit} for "
                              f"storages of {stored} bytes")


def _materialise(record, raw, byte_order, only_view):
    """The tensor `record` describes, from its storage's bytes `raw` (a bytearray).

    only_view: no other tensor views this storage, so a tensor that is the whole storage in order
    (nearly every tensor of a state dict) is returned without a copy.
    """
    storage = record.storage
    dtype = np.dtype("u2" if storage.dtype == "bfloat16" else storage.dtype).newbyteorder(byte_order)
    shape = record.shape
    if math.prod(shape) == 0:
        array = np.empty(shape, dtype=dtype.newbyteorder("="))
    else:
        items = np.frombuffer(raw, dtype=dtype, count=storage.numel)
        # Checked by _check_views: every index offset + sum(i * stride) lies inside `items`.
        view = np.lib.stride_tricks.as_strided(
            items[record.offset:], shape=shape, strides=tuple(stride * dtype.itemsize for stride in record.strides),
            writeable=False)
        if only_view and record.offset == 0 and view.size == storage.numel and view.flags.c_contiguous \
                and dtype.isnative:
            array = items.reshape(shape)
        else:
            array = np.array(view, dtype=dtype.newbyteorder("="), order="C")
    if storage.dtype == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array
