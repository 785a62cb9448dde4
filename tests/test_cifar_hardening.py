"""The CIFAR reader against hostile files: each class of attack is built here, byte by byte, and
must end in a DataError naming the file and the problem, in bounded time and memory.

Nothing here writes or allocates more than a few MiB: inputs *declare* huge sizes and must be
refused before anything that large is created. The slow tests rerun each case in a subprocess
and check its peak memory (ru_maxrss); no test asserts a time.
"""

import gzip
import io
import pickle
import pickletools
import resource
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from minicnn.data import load_cifar10
from minicnn.data import cifar
from minicnn.data.cifar import read_cifar_batch, read_pickled_batch
from minicnn.errors import DataError
from special_files import KINDS, SAYS, raised_within, special_path

PROTO2 = b"\x80\x02"


_RANDOM = object()


def _pickled_batch(count=2, labels=_RANDOM, protocol=2, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = [int(label) for label in rng.integers(0, 10, size=count)] if labels is _RANDOM else labels
    return pickle.dumps({b"data": data, b"labels": labels, b"filenames": [b"a.png"] * count}, protocol=protocol)


def _read(stream, where="hostile"):
    return read_pickled_batch(io.BytesIO(stream), where)


# ----- hostile pickles, built from raw opcodes ---------------------------------------------------
def deep_key(depth, kind="tuple"):
    """{b"k": value} whose value nests `depth` containers."""
    if kind == "tuple":  # () then TUPLE1 again and again: ((((),),),)
        return PROTO2 + b"}U\x01k" + b")" + b"\x85" * depth + b"s."
    if kind == "list":  # MARK MARK ... LIST LIST: [[[...]]]
        return PROTO2 + b"}U\x01k" + b"(" * depth + b"l" * depth + b"s."
    return PROTO2 + b"}U\x01k" + b"(U\x01k" * depth + b"}" + b"d" * depth + b"s."  # {b"k": {b"k": ...}}


def doubling_key(levels):
    """{b"k": t} where t = (t', t') and t' = (t'', t''): a few bytes per level, 2**levels leaves to walk."""
    return PROTO2 + b"}U\x01k)" + b"q\x00h\x00\x86" * levels + b"s."


def repeated_encode(size=1 << 20, repeats=1500):
    """[encode, s, 'latin1'] + [_codecs.encode(s, 'latin1')] * repeats, s memoised, of `size` characters."""
    stream = PROTO2 + b"(c_codecs\nencode\nq\x01X" + struct.pack("<I", size) + b"a" * size + b"q\x02"
    stream += b"X\x06\x00\x00\x00latin1q\x03"
    stream += b"h\x01h\x02h\x03\x86R" * repeats
    return stream + b"l."


_DTYPE_U1 = b"cnumpy\ndtype\nU\x02u1\x85R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"


def repeated_array(size=1 << 20, repeats=1500):
    """The memoised inputs, then [numpy _frombuffer(raw, uint8, (size,), 'C')] * repeats on one `size`-byte buffer."""
    stream = PROTO2 + b"(cnumpy.core.numeric\n_frombuffer\nq\x00B" + struct.pack("<I", size) + bytes(size)
    stream += b"q\x01" + _DTYPE_U1 + b"q\x02J" + struct.pack("<i", size) + b"\x85q\x03U\x01Cq\x04"
    stream += b"h\x00(h\x01h\x02h\x03h\x04tR" * repeats
    return stream + b"l."


def memo_and_builds(memo_entries, builds, padding):
    """A dict holding `padding` bytes (which lift the opcode allowance), one int memoised under
    `memo_entries` keys, and `builds` dtypes each memoised before its BUILD: the old reader walked
    the whole memo at every BUILD."""
    parts = [PROTO2 + b"}U\x03padB" + struct.pack("<I", padding), bytes(padding), b"s"]
    parts += [b"U\x04memoK\x07"] + [b"r" + struct.pack("<I", key) for key in range(memo_entries)] + [b"s"]
    parts += [b"U\x06dtypes]("]
    for index in range(builds):
        parts += [b"cnumpy\ndtype\nU\x02u1\x85Rr" + struct.pack("<I", memo_entries + index),
                  b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"]
    return b"".join(parts + [b"es."])


def many_opcodes(count):
    return PROTO2 + b"(" + b"K\x00" * count + b"l."


@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_nesting_deeper_than_the_bound_is_refused(kind):
    with pytest.raises(DataError, match=r"^deep: nests objects more than 32 levels deep"):
        _read(deep_key(1000, kind), "deep")
    assert isinstance(_read(deep_key(30, kind)), dict)  # within the bound: read


def test_tuple_key_nested_200000_deep_is_a_data_error_not_a_crash(tmp_path):
    # The reproducer: CPython's tuple hash recursed until SIGSEGV.
    with pytest.raises(DataError, match="^deep200k: "):
        _read(deep_key(200_000), "deep200k")
    archive = _archive(tmp_path / "deep.tar.gz", {"test_batch": deep_key(200_000)})
    with pytest.raises(DataError, match=r"deep\.tar\.gz:test_batch: "):
        load_cifar10(archive, "test")


def test_shared_references_cannot_make_a_key_exponentially_costly():
    with pytest.raises(DataError, match=r"builds an object of weight \d+, more than \d+ for a file of"):
        _read(doubling_key(30))
    assert len(_read(doubling_key(8))) == 1  # 2**8 leaves: fine


@pytest.mark.parametrize("make", [repeated_encode, repeated_array], ids=["_codecs.encode", "array rebuild"])
def test_reapplying_a_callable_to_a_memoised_object_is_bounded(make):
    stream = make()
    with pytest.raises(DataError, match=r"creates \d+ bytes, more than \d+ for a file of \d+ bytes"):
        _read(stream)
    assert len(_read(make(repeats=1))) in (4, 6)  # the memoised inputs and one result: a real batch's way


def test_memo_handling_is_linear_in_the_file():
    stream = memo_and_builds(memo_entries=100_000, builds=2_000, padding=16 << 20)
    result = _read(stream)
    assert len(result[b"dtypes"]) == 2000 and all(dtype == np.dtype("<u1") for dtype in result[b"dtypes"])
    assert result[b"memo"] == 7


def test_opcode_count_is_bounded_by_the_file_size():
    with pytest.raises(DataError, match=r"holds more than 11562 opcodes"):
        _read(many_opcodes(100_000))
    assert len(_read(many_opcodes(5_000))) == 5_000


# ----- malformed structure: every failure is a DataError with the file's name -------------------
@pytest.mark.parametrize("stream, message", [
    (PROTO2 + b"K\x01K\x02a.", "expected a list to add to, found int 1"),
    (PROTO2 + b"K\x01(K\x02e.", "expected a list to add to, found int 1"),
    (PROTO2 + b"K\x01K\x02K\x03s.", "expected a dict to add to, found int 1"),
    (PROTO2 + b"K\x01(K\x02K\x03u.", "expected a dict to add to, found int 1"),
    (PROTO2 + b"}(K\x02u.", "1 items for a dict, expected key-value pairs"),
    (PROTO2 + b"}(]K\x02u.", "uses list \\[\\] as a dict key; a CIFAR-10 batch keys its dicts by name"),
    (PROTO2 + b"]q\x00h\x00a.", "places a list inside itself"),
    (PROTO2 + b"]q\x00]q\x01h\x00ah\x00K\x00a.", "modifies a list already placed inside another object"),
    (PROTO2 + b"a.", "the stack is empty"),
    (PROTO2 + b"e.", "no MARK before it"),
    (PROTO2 + b"h\x05.", "memo entry 5 was never stored"),
    (PROTO2 + b"K\x01K\x02.", "2 objects left at STOP"),
    (PROTO2 + b"K\x01", "pickle exhausted before seeing STOP"),
    (PROTO2 + b"\x8c\x05ab.", r"not a readable pickle .*ValueError"),  # protocol 4 opcode, truncated
    (PROTO2 + b"L" + b"9" * 5000 + b"L\n.", r"not a readable pickle .*ValueError"),  # too many digits
    (PROTO2 + b"X\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86c_codecs\nencode\n.", "2 objects left"),
    (PROTO2 + b"c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.",
     "characters beyond latin-1"),
    (PROTO2 + b"K\x01)R.", "calls int 1 with unexpected arguments"),
    (PROTO2 + b"K\x01K\x02b.", "sets the state of a int"),
], ids=["APPEND", "APPENDS", "SETITEM", "SETITEMS", "odd DICT", "list key", "self", "placed", "underflow",
        "no mark", "memo", "two left", "no stop", "truncated", "long digits", "leftover", "euro", "int call",
        "int state"])
def test_malformed_pickles_are_data_errors(stream, message):
    with pytest.raises(DataError, match=rf"^malformed: .*{message}"):
        _read(stream, "malformed")


def _with_shape(stream, old, new):
    assert stream.count(old) == 1
    return stream.replace(old, new)


def test_array_shapes_beyond_any_size_are_data_errors():
    stream = _pickled_batch(count=4)
    long_one = b"\x8a\x09" + (2**64).to_bytes(9, "little", signed=True)
    huge = _with_shape(stream, b"K\x04M\x00\x0c\x86", long_one + b"M\x00\x0c\x86")
    with pytest.raises(DataError, match=r"bad array shape tuple \(18446744073709551616, 3072\)"):
        _read(huge)
    wrapping = _with_shape(stream, b"K\x04M\x00\x0c\x86", b"\x8a\x08" + (2**62).to_bytes(8, "little") + b"K\x04\x86")
    with pytest.raises(DataError, match="bad array shape"):
        _read(wrapping)
    negative = _with_shape(stream, b"K\x04M\x00\x0c\x86", b"J\xff\xff\xff\xffM\x00\x0c\x86")
    with pytest.raises(DataError, match="bad array shape"):
        _read(negative)


@pytest.mark.parametrize("labels, message", [
    ((1.9, 2.9), "must be integers in 0..9, found float 1.9"),
    ([1, 2.0], "must be integers in 0..9, found float 2.0"),
    ([True, False], "must be integers in 0..9, found bool True"),
    ([2**70, 1], "labels must be in 0..9, found 1180591620717411303424"),
    ([-1, 1], "labels must be in 0..9, found -1"),
    ("12", "must be a list of integers in 0..9, got str '12'"),
    (b"\x01\x02", "must be a list of integers in 0..9, got bytes"),
    ({0: 1, 1: 2}, "uses int 0 as a dict key; a CIFAR-10 batch keys its dicts by name"),
    (None, "must be a list of integers in 0..9, got NoneType None"),
    ([1], "2 images but 1 labels"),
    ([1, 2, 3], "2 images but 3 labels"),
    (np.array([1.0, 2.0]), "it holds an array of dtype 'f8'"),
    (np.array([[1, 2]]), r"must be integers, got an array of int64 \(1, 2\)"),
    (np.array([1, 2], dtype=np.int32), "it holds an array of dtype 'i4'"),
    (np.array([3, 12]), "labels must be in 0..9, found 12"),
], ids=["float tuple", "one float", "bools", "2**70", "negative", "str", "bytes", "dict", "None", "too few",
        "too many", "float array", "int32 array", "2-D array", "array 12"])
def test_labels_must_be_integers_in_0_to_9_one_per_image(labels, message):
    with pytest.raises(DataError, match=rf"^labels-file: .*{message}"):
        read_cifar_batch(_pickled_batch(labels=labels), "labels-file")


def test_integer_labels_as_list_tuple_or_array_are_read():
    for labels in ([3, 9], (3, 9), np.array([3, 9], dtype=np.uint8)):
        images, read_labels = read_cifar_batch(_pickled_batch(labels=labels), "ok")
        assert images.shape == (2, 3, 32, 32) and read_labels.tolist() == [3, 9] and read_labels.dtype == np.int64


def test_a_key_nested_to_the_bound_is_named_briefly():
    stream = PROTO2 + b"}" + b")" + b"\x85" * 30 + b"K\x00s."  # 31 levels, and the dict
    with pytest.raises(DataError, match=r"^shallow: uses tuple \(+\.\.\.\),\),\),\) as a dict key"):
        read_cifar_batch(stream, "shallow")


def test_dict_keys_are_names_and_memo_keys_small_numbers():
    # Numbers chosen to share one hash (multiples of 2**61 - 1) would make building a dict, or the memo,
    # take time quadratic in the file: only text keys (salted hashes) and memo keys below 2**32 are read.
    colliding = PROTO2 + b"}(" + b"".join(b"\x8a\x09" + ((2**61 - 1) * k).to_bytes(9, "little") + b"K\x00"
                                          for k in range(1, 4)) + b"u."
    with pytest.raises(DataError, match=r"uses int \d+ as a dict key"):
        _read(colliding)
    with pytest.raises(DataError, match=r"a memo key must be a whole number below 4294967296"):
        _read(PROTO2 + b"K\x00p4294967296\n.")
    assert _read(PROTO2 + b"K\x07p4294967295\n.") == 7


def test_batch_larger_than_any_cifar_batch_is_refused_before_reading(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as file:
        file.truncate(cifar.MAX_BATCH_BYTES + 1)  # a sparse file: nothing written
    with pytest.raises(DataError, match=r"test_batch: larger than 67108864 bytes"):
        load_cifar10(tmp_path, "test")


# ----- hostile archives --------------------------------------------------------------------------
def _archive(path, files, compress=gzip.compress):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    path.write_bytes(compress(buffer.getvalue()))
    return path


def tar_header(name, size, kind=tarfile.REGTYPE, patch=None):
    """One GNU tar header, with `patch` {offset: bytes} written into it before the checksum."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, 0
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[124:136] = tarfile.itn(size, 12, tarfile.GNU_FORMAT)  # by hand: tarfile would check it
    for offset, value in (patch or {}).items():
        block[offset:offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block[:512])
    return bytes(block[:512])


def sparse_archive(real_size=2**31):
    """A GNU sparse member claiming `real_size` bytes, stored in one byte: 143 bytes once gzipped."""
    patch = {386: b"%011o\0" % (real_size - 1), 398: b"%011o\0" % 1, 483: b"%011o\0" % real_size}
    tar = tar_header("cifar-10-batches-py/test_batch", 1, tarfile.GNUTYPE_SPARSE, patch) + bytes(512) + bytes(1024)
    return gzip.compress(tar)


def declared_size_archive(size=2**31, name="cifar-10-batches-py/test_batch"):
    return gzip.compress(tar_header(name, size) + bytes(1024))


def multi_member_gzip(members=8, member_size=60 << 20, chunk=1 << 20):
    """`members` regular members of `member_size` zero bytes each (within a batch's size, more than an
    archive's in all), each arriving in gzip members of `chunk` bytes: built without holding it."""
    zeros = gzip.compress(bytes(chunk))
    parts = []
    for index in range(members):
        parts.append(gzip.compress(tar_header(f"cifar-10-batches-py/readme_{index}.html", member_size)))
        parts.append(zeros * (member_size // chunk))
    return b"".join(parts + [gzip.compress(bytes(1024))])


def test_sparse_member_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "sparse.tar.gz"
    path.write_bytes(sparse_archive())
    assert len(path.read_bytes()) < 200
    with tarfile.open(path) as archive:  # what tarfile itself would do: hand out 2 GiB
        assert archive.getmembers()[0].issparse() and archive.getmembers()[0].size == 2**31
    with pytest.raises(DataError, match=r"sparse\.tar\.gz:cifar-10-batches-py/test_batch: a sparse member"):
        load_cifar10(path, "test")


@pytest.mark.parametrize("size", [cifar.MAX_BATCH_BYTES + 1, 2**31, 100 * 2**30])
def test_member_declaring_more_than_a_batch_is_refused(tmp_path, size):
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(declared_size_archive(size))
    with pytest.raises(DataError, match=rf"test_batch: declares {size} bytes, more than a CIFAR-10 batch can be"):
        load_cifar10(path, "test")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE])
def test_batch_member_must_be_a_regular_file(tmp_path, kind):
    path = tmp_path / "odd.tar.gz"
    path.write_bytes(gzip.compress(tar_header("cifar-10-batches-py/test_batch", 0, kind) + bytes(1024)))
    with pytest.raises(DataError, match=r"test_batch: not a regular file"):
        load_cifar10(path, "test")


def test_truncated_member_is_named(tmp_path):
    path = tmp_path / "short.tar.gz"
    path.write_bytes(gzip.compress(tar_header("cifar-10-batches-py/test_batch", 5000) + bytes(512)))
    with pytest.raises(DataError, match=r"short\.tar\.gz"):
        load_cifar10(path, "test")


def test_decompressed_bytes_are_capped_across_gzip_members(tmp_path, monkeypatch):
    path = tmp_path / "members.tar.gz"
    path.write_bytes(multi_member_gzip(members=4, member_size=1 << 20, chunk=64 << 10))  # 64 gzip members
    monkeypatch.setattr(cifar, "MAX_ARCHIVE_BYTES", 1 << 20)
    with pytest.raises(DataError, match=r"members\.tar\.gz holds more than 1048576 bytes once decompressed"):
        load_cifar10(path, "test")


def test_header_declaring_a_huge_extension_is_read_in_bounded_chunks(tmp_path):
    # A GNU long-name header declaring 1 TiB: tarfile asks its file for that many bytes at once.
    path = tmp_path / "longname.tar.gz"
    path.write_bytes(gzip.compress(tar_header("././@LongLink", 2**40, tarfile.GNUTYPE_LONGNAME) + bytes(4096)))
    with pytest.raises(DataError, match=r"longname\.tar\.gz"):
        load_cifar10(path, "test")


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_ARCHIVE_MEMBERS", 10)
    path = _archive(tmp_path / "many.tar.gz", {f"file_{index}": b"" for index in range(20)})
    with pytest.raises(DataError, match="more than 10 members"):
        load_cifar10(path, "test")


@pytest.mark.parametrize("compress", [gzip.compress, __import__("bz2").compress, __import__("lzma").compress,
                                      lambda data: data], ids=["gz", "bz2", "xz", "tar"])
def test_every_compression_tarfile_reads_is_still_read(tmp_path, compress):
    path = _archive(tmp_path / "cifar.tar", {"test_batch": _pickled_batch(count=3)}, compress)
    images, labels = load_cifar10(path, "test")
    assert images.shape == (3, 3, 32, 32) and labels.shape == (3,)


# ----- the fuzz test -----------------------------------------------------------------------------
SEEDS = {protocol: _pickled_batch(count=2, protocol=protocol, seed=protocol) for protocol in (2, 4, 5)}
OPCODE_BYTES = [opcode.code.encode("latin-1") for opcode in pickletools.opcodes]


def mutant(rng):
    """One seeded mutation of a valid protocol 2, 4 or 5 batch."""
    protocol = int(rng.choice(list(SEEDS)))
    stream = bytearray(SEEDS[protocol])
    how = rng.integers(5)
    for _ in range(int(rng.integers(1, 4))):
        if not stream:
            break
        where = int(rng.integers(len(stream)))
        if how == 0:  # byte flip
            stream[where] ^= 1 << int(rng.integers(8))
        elif how == 1:  # random byte
            stream[where] = int(rng.integers(256))
        elif how == 2:  # insertion
            stream[where:where] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif how == 3:  # opcode swap, at an opcode's own position
            positions = [position for _, _, position in pickletools.genops(bytes(SEEDS[protocol]))]
            position = positions[int(rng.integers(len(positions)))]
            if position < len(stream):
                stream[position:position + 1] = OPCODE_BYTES[int(rng.integers(len(OPCODE_BYTES)))]
        else:  # truncation, or a slice repeated
            if rng.integers(2):
                del stream[where:]
            else:
                stream[where:where] = stream[where:where + int(rng.integers(1, 64))]
    return bytes(stream)


def check_mutants(count, seed):
    """Every mutant loads to a valid batch or raises DataError; returns how many of each."""
    rng = np.random.default_rng(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for index in range(count):
        stream = mutant(rng)
        try:
            images, labels = read_cifar_batch(stream, f"mutant-{index}")
        except DataError as error:
            assert str(error).startswith(f"mutant-{index}"), error
            outcomes["refused"] += 1
            continue
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert ((labels >= 0) & (labels <= 9)).all()
        outcomes["loaded"] += 1
    return outcomes


def test_fuzzed_batches_load_or_raise_data_error():
    outcomes = check_mutants(300, seed=16)
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10  # both paths are exercised


@pytest.mark.slow
def test_fuzzed_batches_load_or_raise_data_error_many():
    outcomes = check_mutants(5000, seed=1616)
    assert outcomes["refused"] > 1000 and outcomes["loaded"] > 100


# ----- memory of every case, each in a fresh process --------------------------------------------
_CASES = {
    "deep tuple key": "read(deep_key(200_000))",
    "deep list": "read(deep_key(5000, 'list'))",
    "doubling key": "read(doubling_key(60))",
    "repeated encode": "read(repeated_encode())",
    "repeated array": "read(repeated_array())",
    "memo and builds": "read(memo_and_builds(200_000, 10_000, 60 << 20))",
    "opcodes": "read(many_opcodes(5_000_000))",
    "sparse": "archive(sparse_archive(100 * 2**30))",
    "declared size": "archive(declared_size_archive(100 * 2**30))",
    "long name": "archive(gzip.compress(tar_header('././@LongLink', 2**40, tarfile.GNUTYPE_LONGNAME)))",
    "gzip members": "archive(multi_member_gzip())",
}
_RUNNER = """
import gzip, io, resource, sys, tarfile, tempfile
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_cifar_hardening import *
from test_cifar_hardening import tar_header
from minicnn.data.cifar import read_pickled_batch
from minicnn.errors import DataError
def read(stream):
    read_pickled_batch(io.BytesIO(stream), "case")
def archive(content):
    path = Path(tempfile.mkdtemp()) / "case.tar.gz"
    path.write_bytes(content)
    load_cifar10(path, "test")
try:
    {call}
    outcome = "read"
except DataError as error:
    outcome = "DataError: " + str(error)[:160]
print(outcome)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", _CASES)
def test_each_hostile_case_stays_within_a_few_hundred_mib(case):
    script = _RUNNER.format(tests=str(Path(__file__).parent), call=_CASES[case])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, peak_kib = done.stdout.splitlines()[-2:]
    print(case, outcome, f"peak {int(peak_kib) / 1024:.0f} MiB")
    assert outcome.startswith("DataError") == (case != "memo and builds"), outcome
    assert int(peak_kib) < 400 * 1024, f"{case}: peak {int(peak_kib) / 1024:.0f} MiB"


# ----- regular files only ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_archive_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    # A FIFO or /dev/zero given as the archive was called "does not exist".
    path = special_path(kind, tmp_path, "cifar-10-python.tar.gz")
    error = raised_within(lambda: load_cifar10(path, "test"), path)
    assert isinstance(error, DataError), repr(error)
    assert str(path) in str(error) and SAYS[kind] in str(error) and "not a regular file" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    if kind == "device":
        special_path(kind, tmp_path, "unused")
        path = folder / "test_batch"
        path.symlink_to("/dev/zero")  # a link counts as what it points at
    else:
        path = special_path(kind, folder, "test_batch")
    error = raised_within(lambda: load_cifar10(tmp_path, "test"), path)
    assert isinstance(error, DataError), repr(error)
    assert str(path) in str(error) and SAYS[kind] in str(error) and "not a regular file" in str(error)


# ----- objects in proportion to the archive; names from the archive shown escaped -------------------
def test_a_flood_of_objects_in_a_small_archive_is_refused_early(tmp_path):
    # 8 MiB of EMPTY_LIST gzip to 8 KiB; the objects a batch creates are counted against the archive's size.
    path = _archive(tmp_path / "flood.tar.gz", {"test_batch": PROTO2 + b"]" * (8 << 20) + b"."})
    assert path.stat().st_size < 64 << 10
    with pytest.raises(DataError, match=r"flood\.tar\.gz:test_batch: creates more than \d+ objects, more than a "
                                        r"CIFAR-10 batch of \d+ bytes can hold \(opcode EMPTY_LIST at byte"):
        load_cifar10(path, "test")


def test_member_names_are_shown_escaped_and_cut(tmp_path):
    path = tmp_path / "names.tar.gz"
    path.write_bytes(declared_size_archive(name="cifar-10-batches-py/x\n\x1b[2Jforged line" + "y" * 60))
    with pytest.raises(DataError, match=r"names\.tar\.gz:'cifar-10-batches-py/x\\n\\x1b.*': declares 2147483648 "
                                        r"bytes") as error:
        load_cifar10(path, "test")
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value) and len(str(error.value)) < 400


def test_a_refused_global_is_shown_escaped_and_cut():
    # STACK_GLOBAL takes the module's name from the stack: any text, a newline and an escape code included.
    module, attribute = ("os\n\x1b[2Jminicnn: batch read" + "m" * 300).encode(), b"system"
    stream = (b"\x80\x04X" + struct.pack("<I", len(module)) + module + b"X" + struct.pack("<I", len(attribute))
              + attribute + b"\x93.")
    with pytest.raises(DataError, match=r"^evil: refusing to read it: it needs 'os\\n\\x1b\[2Jminicnn: batch readm+'"
                                        r"\.\.\. \(333 characters\), which a CIFAR-10 batch never does") as error:
        _read(stream, "evil")
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value)
