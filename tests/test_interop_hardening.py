"""read_torch_state_dict on hostile or broken files: refused with a CheckpointError naming the problem,
before anything is run or any large allocation is made. The files are crafted opcode by opcode."""

import collections
import os
import pickle
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from minicnn.errors import CheckpointError
from minicnn.interop import read_torch_state_dict, write_torch_state_dict
from special_files import KINDS, SAYS, raised_within, special_path


# ----- crafting data.pkl and the archive -----------------------------------------------------------
def text(value):
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def integer(value):
    if -(1 << 31) <= value < 1 << 31:
        return b"J" + struct.pack("<i", value)
    encoded = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    if len(encoded) > 255:
        return b"\x8b" + struct.pack("<I", len(encoded)) + encoded  # LONG4
    return b"\x8a" + bytes([len(encoded)]) + encoded  # LONG1


def global_name(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def integers(values):
    return b"(" + b"".join(integer(value) for value in values) + b"t"


def storage_id(key, numel, storage_type="FloatStorage"):
    return b"(" + text("storage") + global_name("torch", storage_type) + text(key) + text("cpu") + integer(numel) + b"t"


def tensor(key, numel, shape, strides=None, offset=0, storage_type="FloatStorage"):
    """_rebuild_tensor_v2 of a view of storage `key` as torch.save writes it."""
    if strides is None:
        strides = tuple(int(np.prod(shape[position + 1:])) for position in range(len(shape)))
    return (global_name("torch._utils", "_rebuild_tensor_v2") + b"(" + storage_id(key, numel, storage_type) + b"Q"
            + integer(offset) + integers(shape) + integers(strides) + b"\x89"
            + global_name("collections", "OrderedDict") + b")R" + b"t" + b"R")


def ordered_dict(*items):
    pairs = b"".join(text(name) + value for name, value in items)
    return global_name("collections", "OrderedDict") + b")R(" + pairs + b"u"


def state_pickle(*items):
    return b"\x80\x02" + ordered_dict(*items) + b"."


def write_archive(path, data_pkl, storages=(), byteorder=b"little", compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl, compress_type=compression)
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for key, content in dict(storages).items():
            archive.writestr(f"archive/data/{key}", content, compress_type=compression)
        archive.writestr("archive/version", b"3\n")
    return path


SIX_FLOATS = np.arange(6, dtype="<f4").tobytes()


def refused(path, message):
    """Reading `path` raises a CheckpointError that names the file and matches `message`."""
    with pytest.raises(CheckpointError, match=message) as error:
        read_torch_state_dict(path)
    assert str(path) in str(error.value)
    return str(error.value)


def test_the_crafted_baseline_reads(tmp_path):
    # The cases below change one thing each in this file, so each fails for its own reason.
    path = write_archive(tmp_path / "good.pt", state_pickle(("w", tensor("0", 6, (2, 3)))), {"0": SIX_FLOATS})
    state = read_torch_state_dict(path)
    np.testing.assert_array_equal(state["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


# ----- nothing outside the allow-list runs --------------------------------------------------------
class MakesADirectory:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL, STACK_GLOBAL
def test_a_pickled_call_to_a_forbidden_function_is_refused_and_not_run(tmp_path, protocol):
    target = tmp_path / "created-by-the-file"
    data_pkl = pickle.dumps(collections.OrderedDict(w=MakesADirectory(str(target))), protocol=protocol)
    refused(write_archive(tmp_path / "evil.pt", data_pkl), r"refusing to read it: it needs (os|posix)\.mkdir, "
                                                          r"which a PyTorch state dict never does")
    assert not target.exists()


FORBIDDEN = ["os.system", "_load_from_bytes", "QInt8Storage", "OrderedDict(list)", "FloatStorage()",
             "text as storage", "foreign persistent id", "PERSID", "storage type as text", "truncated pickle"]


@pytest.mark.parametrize("data_pkl, message", [
    (b"\x80\x02" + global_name("os", "system") + text("echo") + b"\x85R.", r"it needs os\.system"),
    (state_pickle(("w", global_name("torch.storage", "_load_from_bytes") + b"C\x03abc\x85R")),
     r"it needs torch\.storage\._load_from_bytes"),
    (state_pickle(("w", global_name("torch", "QInt8Storage"))), r"it needs torch\.QInt8Storage"),
    (state_pickle(("w", global_name("collections", "OrderedDict") + b"(]t" + b"R")),
     r"refusing to read it: it calls ordered_dict with tuple \(\[\],\)"),
    (state_pickle(("w", global_name("torch", "FloatStorage") + b")R")), r"it calls storage FloatStorage"),
    (state_pickle(("w", global_name("torch._utils", "_rebuild_tensor_v2") + b"(" + text("0") + integer(0)
                   + integers((1,)) + integers((1,)) + b"\x89}t" + b"R")), r"a tensor's storage is str '0'"),
    (state_pickle(("w", b"(" + text("file") + text("/etc/passwd") + b"tQ")), r"unknown persistent id"),
    (state_pickle(("w", b"P0\n")), r"the pickle opcode PERSID"),
    (state_pickle(("w", b"(" + text("storage") + text("torch.FloatStorage") + text("0") + text("cpu")
                   + integer(6) + b"tQ")), r"a storage of type str 'torch\.FloatStorage'"),
    (state_pickle(("w", tensor("0", 6, (2, 3))))[:-30], r"not a readable pickle of a PyTorch state dict"),
], ids=FORBIDDEN)
def test_globals_calls_and_ids_outside_the_allow_list_are_refused(tmp_path, data_pkl, message):
    refused(write_archive(tmp_path / "crafted.pt", data_pkl, {"0": SIX_FLOATS}), message)


def test_duplicate_keys_are_refused(tmp_path):
    twice = state_pickle(("w", tensor("0", 6, (6,))), ("w", tensor("0", 6, (6,))))
    refused(write_archive(tmp_path / "twice.pt", twice, {"0": SIX_FLOATS}), r"the key str 'w' appears twice")
    # The same key again in a second SETITEMS.
    again = b"\x80\x02" + ordered_dict(("w", tensor("0", 6, (6,)))) + b"(" + text("w") + tensor("0", 6, (6,)) + b"u."
    refused(write_archive(tmp_path / "again.pt", again, {"0": SIX_FLOATS}), r"the key str 'w' appears twice")


def test_what_is_not_a_state_dict_of_tensors_is_named(tmp_path):
    refused(write_archive(tmp_path / "list.pt", b"\x80\x02]."), r"holds list \[\], not a state dict")
    nested = (b"\x80\x02}(" + text("model") + ordered_dict(("w", tensor("0", 6, (6,))))
              + text("epoch") + integer(3) + b"u.")
    refused(write_archive(tmp_path / "training.pt", nested, {"0": SIX_FLOATS}),
            r"entry 'model' is a dict, not a tensor: this looks like a training checkpoint")
    refused(write_archive(tmp_path / "number.pt", state_pickle(("w", integer(3)))), r"entry 'w' is int 3")
    refused(write_archive(tmp_path / "key.pt", b"\x80\x02}(" + integer(1) + tensor("0", 6, (6,)) + b"u.",
                          {"0": SIX_FLOATS}), r"a key is int 1")


# ----- the archive --------------------------------------------------------------------------------
def test_a_truncated_archive_and_a_legacy_file_are_named(tmp_path):
    whole = write_torch_state_dict({"w": np.ones(100, np.float32)}, tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    refused(tmp_path / "cut.pt", r"a zip archive cut short")
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")
    refused(tmp_path / "legacy.pt", r"the legacy format \(before PyTorch 1\.6\)")
    (tmp_path / "text.pt").write_text("hello")
    refused(tmp_path / "text.pt", r"not a zip archive")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    refused(tmp_path / "other.zip", r"expected one <archive>/data.pkl entry, found 0")


def test_an_entry_twice_in_the_archive_is_refused(tmp_path):
    path = write_archive(tmp_path / "twice.pt", state_pickle(("w", tensor("0", 6, (6,)))), {"0": SIX_FLOATS})
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("archive/data/0", bytes(24))
    refused(path, r"archive/data/0: appears 2 times in the archive")


def test_a_corrupted_storage_fails_its_checksum(tmp_path):
    content = bytearray(write_torch_state_dict({"w": np.ones(100, np.float32)}, tmp_path / "w.pt").read_bytes())
    position = content.index(np.ones(100, np.float32).tobytes())
    content[position + 10] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(content))
    refused(tmp_path / "flipped.pt", r"Bad CRC-32 for file 'archive/data/0'")


@pytest.mark.parametrize("storages, message", [
    ({}, r"archive/data/0: missing; data.pkl names storage '0' \(6 items of FloatStorage\)"),
    ({"0": SIX_FLOATS[:20]},
     r"archive/data/0: holds 20 bytes, but data.pkl declares 6 items of FloatStorage, 24 bytes"),
    ({"0": SIX_FLOATS + b"\0" * 4}, r"archive/data/0: holds 28 bytes"),
], ids=["missing", "short", "long"])
def test_a_missing_or_wrongly_sized_storage_is_named(tmp_path, storages, message):
    refused(write_archive(tmp_path / "sizes.pt", state_pickle(("w", tensor("0", 6, (2, 3)))), storages), message)


@pytest.mark.parametrize("view, message", [
    (tensor("0", 6, (2, 3), strides=(3, 2)), r"tensor 'w' \(shape \(2, 3\), strides \(3, 2\), offset 0\) reaches "
                                             r"outside its storage '0' of 6 items"),
    (tensor("0", 6, (6,), offset=1), r"offset 1\) reaches outside"),
    (tensor("0", 6, (0, 3), offset=7), r"offset 7\) reaches outside"),
    (tensor("0", 6, (2, 3), strides=(-3, 1)), r"expected non-negative ints"),
    (tensor("0", 6, (2, 3), strides=(3,)), r"shape and strides of equal length"),
], ids=["strides", "offset", "empty with offset", "negative stride", "strides too short"])
def test_views_outside_their_storage_are_refused(tmp_path, view, message):
    refused(write_archive(tmp_path / "view.pt", state_pickle(("w", view)), {"0": SIX_FLOATS}), message)


def test_one_storage_declared_as_two_types_is_refused(tmp_path):
    data_pkl = state_pickle(("a", tensor("0", 6, (6,))), ("b", tensor("0", 6, (6,), storage_type="IntStorage")))
    refused(write_archive(tmp_path / "types.pt", data_pkl, {"0": SIX_FLOATS}),
            r"storage '0' is declared twice differently: 6 items of FloatStorage, then 6 of IntStorage")


@pytest.fixture
def small_peak():
    """Asserts the test allocates less than 4 MiB at its peak (what NumPy and Python allocate)."""
    tracemalloc.start()
    yield
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"allocated {peak} bytes"


def test_huge_declared_sizes_in_a_tiny_file_allocate_nothing(tmp_path, small_peak):
    huge_storage = state_pickle(("w", tensor("0", 2**40, (2**40,))))
    refused(write_archive(tmp_path / "huge.pt", huge_storage, {"0": SIX_FLOATS}),
            r"archive/data/0: holds 24 bytes, but data.pkl declares 1099511627776 items")
    # Strides of 0 make a terabyte of views out of one float.
    broadcast = state_pickle(("w", tensor("0", 1, (2**20, 2**20), strides=(0, 0))))
    refused(write_archive(tmp_path / "broadcast.pt", broadcast, {"0": SIX_FLOATS[:4]}),
            r"its tensors take 4398046511104 bytes, more than 1048592 for storages of 4 bytes")


def test_compressed_entries_cannot_expand_beyond_the_files_size(tmp_path):
    zeros = bytes(4 << 20)  # 4 MiB of zeros deflate to about 4 KiB
    bomb = write_archive(tmp_path / "bomb.pt", state_pickle(("w", tensor("0", 1 << 20, (1 << 20,)))),
                         {"0": zeros}, compression=zipfile.ZIP_DEFLATED)
    pickle_bomb = write_archive(tmp_path / "pickle-bomb.pt", b"\x80\x02N" + b"0" * (4 << 20) + b".",
                                compression=zipfile.ZIP_DEFLATED)
    del zeros
    tracemalloc.start()
    try:
        refused(bomb, r"its storages declare 4194304 bytes, more than \d+ for a file of \d+ bytes")
        refused(pickle_bomb, r"archive/data.pkl: declares 4194308 bytes, more than the \d+ it may hold")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"allocated {peak} bytes"


def test_a_deflated_honest_file_and_a_big_endian_file_read(tmp_path):
    honest = write_archive(tmp_path / "deflated.pt", state_pickle(("w", tensor("0", 6, (2, 3)))),
                           {"0": SIX_FLOATS}, compression=zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(read_torch_state_dict(honest)["w"], np.arange(6).reshape(2, 3))
    big = write_archive(tmp_path / "big.pt", state_pickle(("w", tensor("0", 6, (6,)))),
                        {"0": np.arange(6, dtype=">f4").tobytes()}, byteorder=b"big")
    assert read_torch_state_dict(big)["w"].dtype == np.float32
    np.testing.assert_array_equal(read_torch_state_dict(big)["w"], np.arange(6))
    no_record = write_archive(tmp_path / "old.pt", state_pickle(("w", tensor("0", 6, (6,)))), {"0": SIX_FLOATS},
                              byteorder=None)
    np.testing.assert_array_equal(read_torch_state_dict(no_record)["w"], np.arange(6))
    refused(write_archive(tmp_path / "middle.pt", state_pickle(), byteorder=b"middle"),
            re.escape("archive/byteorder says b'middle', expected b'little' or b'big'"))


def test_fuzzed_data_pkl_reads_or_raises_checkpoint_error(tmp_path):
    # Random edits of a real data.pkl, repacked so that the zip's checksums hold: the reader either
    # reads the result or refuses it with a CheckpointError, never another exception.
    shared = np.arange(10, dtype=np.float32)
    data_pkl = state_pickle(("a", tensor("0", 10, (2, 3), strides=(1, 2), offset=1)), ("b", tensor("0", 10, (10,))),
                            ("c", tensor("1", 1, (), storage_type="LongStorage")))
    storages = {"0": shared.tobytes(), "1": np.array([7]).tobytes()}
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "refused": 0}
    for case in range(150):
        edited = bytearray(data_pkl)
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(len(edited)))
            if rng.random() < 0.6:
                edited[position] = int(rng.integers(256))
            else:
                del edited[position:position + int(rng.integers(1, 6))]
        path = write_archive(tmp_path / f"fuzz{case}.pt", bytes(edited), storages)
        try:
            read_torch_state_dict(path)
            outcomes["read"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes


# bzip2 of 64 MiB of zeros: 79 bytes (bz2.compress(bytes(64 << 20), 9)).
BZIP2_OF_64_MIB = bytes.fromhex(
    "425a68393141592653590e09e2df015f8e4000c0000008200030804d4642a025a90a8097314159265359bc04b5c300a275c000c000"
    "0008200020a40836328a884d2a2a2138bb9229c2848500bb83e8")


def zip_with_raw_entries(path, entries):
    """A zip archive written byte by byte: entries (name, method, raw bytes, crc, declared size, flag bits)."""
    out, directory = bytearray(), bytearray()
    for name, method, raw, crc, size, flags in entries:
        encoded, offset = name.encode(), len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 46, flags, method, 0, 0x21, crc, len(raw), size,
                           len(encoded), 0) + encoded + raw
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 46, 46, flags, method, 0, 0x21, crc, len(raw),
                                 size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    start = len(out)
    out += directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), start, 0)
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_entries_compressed_other_than_by_deflate_are_refused(tmp_path, compression):
    path = write_archive(tmp_path / "other.pt", state_pickle(("w", tensor("0", 6, (6,)))), {"0": SIX_FLOATS},
                         compression=compression)
    refused(path, rf"archive/data.pkl: compressed with method {compression}; .* only stored or deflated")


def test_a_bzip2_bomb_in_a_tiny_entry_is_refused_before_it_expands(tmp_path, small_peak):
    # zipfile decompresses a bzip2 chunk whole: 79 bytes declaring a 6-byte byteorder become 64 MiB in memory.
    data_pkl = state_pickle()
    path = zip_with_raw_entries(tmp_path / "bomb.pt", [
        ("archive/data.pkl", zipfile.ZIP_STORED, data_pkl, zlib.crc32(data_pkl), len(data_pkl), 0),
        ("archive/byteorder", zipfile.ZIP_BZIP2, BZIP2_OF_64_MIB, zlib.crc32(bytes(6)), 6, 0)])
    refused(path, r"archive/byteorder: compressed with method 12")


def test_an_encrypted_entry_is_refused(tmp_path):
    data_pkl = state_pickle()
    path = zip_with_raw_entries(tmp_path / "encrypted.pt", [
        ("archive/data.pkl", zipfile.ZIP_STORED, data_pkl, zlib.crc32(data_pkl), len(data_pkl), 0x1)])
    refused(path, r"archive/data.pkl: encrypted")


ABOVE_MAX_INDEX = r"has an offset, stride or size above 281474976710656 items"


@pytest.mark.parametrize("view, message", [
    (tensor("0", 6, (2, 3), offset=10**5000), r"holds an integer of 16610 bits; a PyTorch state dict holds none "
                                               r"above 1024 \(opcode LONG4 at byte"),
    (tensor("0", 6, (0, 1 << 70)), ABOVE_MAX_INDEX),
    (tensor("0", 6, (0, 1 << 40, 1 << 40)), ABOVE_MAX_INDEX),
    (tensor("0", 6, (1, 6), strides=(1 << 70, 1)), ABOVE_MAX_INDEX),
    (tensor("0", 6, (1, 6), strides=(1 << 62, 1)), ABOVE_MAX_INDEX),
], ids=["offset of 5000 digits", "empty, a side of 2**70", "empty, sides of 2**80 in all", "stride 2**70",
        "stride 2**62"])
def test_huge_offsets_sizes_and_strides_are_refused_with_a_checkpoint_error(tmp_path, view, message):
    # Python integers have no limit: these escaped as ValueError or OverflowError from NumPy or str().
    refused(write_archive(tmp_path / "huge.pt", state_pickle(("w", view)), {"0": SIX_FLOATS}), message)


@pytest.mark.parametrize("count, message", [
    (1 << 70, r"a storage declares more than 281474976710656 items"),
    (10**5000, r"holds an integer of 16610 bits"),
], ids=["2**70", "5000 digits"])
def test_a_storage_of_a_huge_count_is_refused_with_a_checkpoint_error(tmp_path, count, message):
    view = tensor("0", count, (6,))
    refused(write_archive(tmp_path / "count.pt", state_pickle(("w", view)), {"0": SIX_FLOATS}), message)


def test_dict_keys_must_be_text_and_memo_keys_small(tmp_path):
    # Numbers k * (2**61 - 1) all hash to 0: as dict keys or memo keys each insertion would scan all
    # the earlier ones. They are refused as they arrive, before any dict is built.
    colliding = b"".join(integer(((1 << 61) - 1) * (index + 1)) + b"N" for index in range(200))
    message = refused(write_archive(tmp_path / "keys.pt", b"\x80\x02}(" + colliding + b"u."),
                      r"a key is int 2305843009213693951, expected a name \(text\)")
    assert "opcode SETITEMS" in message
    put = b"\x80\x02N" + b"p%d\n" % ((1 << 61) - 1) + b"0" + state_pickle()[2:]
    refused(write_archive(tmp_path / "memo.pt", put), r"a memo key must be a whole number below 4294967296")
    late = b"".join(text(f"k{index}") + b"N" for index in range(2000)) + text("k0") + b"N"
    refused(write_archive(tmp_path / "late.pt", b"\x80\x02}(" + late + b"u."), r"the key str 'k0' appears twice")


# ----- regular files only ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_state_dict_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    # A FIFO blocked read_torch_state_dict in open(); /dev/zero was read until memory ran out.
    path = special_path(kind, tmp_path, "weights.pth")
    error = raised_within(lambda: read_torch_state_dict(path), path)
    assert isinstance(error, CheckpointError), repr(error)
    message = str(error)
    assert str(path) in message and SAYS[kind] in message and "not a regular file" in message
    assert "\n" not in message


# ----- memory in proportion to the file; one escaped line for every value -------------------------------
@pytest.mark.parametrize("flood", [b"]", b"}", b"N\x94"], ids=["EMPTY_LIST", "EMPTY_DICT", "MEMOIZE"])
def test_a_flood_of_objects_in_a_small_file_is_refused_early(tmp_path, flood):
    # 1 MiB of EMPTY_LIST deflates to about a KiB; each opcode made a list and its bookkeeping,
    # ~240 bytes: 288 MB from a 1.2 KB file. Objects are now counted against the file's size.
    data_pkl = b"\x80\x04" + flood * ((1 << 20) // len(flood)) + b"."
    path = write_archive(tmp_path / "flood.pt", data_pkl, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 8192
    tracemalloc.start()
    try:
        message = refused(path, r"archive/data\.pkl: creates more than \d+ objects, more than a PyTorch state "
                                r"dict of \d+ bytes can hold \(opcode (EMPTY_LIST|EMPTY_DICT|MEMOIZE) at byte")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in message
    assert peak < 16 << 20, f"allocated {peak} bytes"  # the pickle itself is 1 MiB, read twice


def test_real_state_dicts_stay_within_the_object_budget(tmp_path):
    # The densest real pickles: many tiny tensors (a scalar each) and views of one storage, stored as torch.save does.
    views = [(f"layer{index}.weight", tensor("0", 3000, (1, 1, 1, 1, 1, 1), offset=index)) for index in range(3000)]
    path = write_archive(tmp_path / "views.pt", state_pickle(*views), {"0": bytes(4 * 3000)})
    state = read_torch_state_dict(path)
    assert len(state) == 3000 and state["layer2999.weight"].shape == (1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("number", [b"\x8b" + struct.pack("<I", 2000) + b"\x01" * 2000,  # LONG4, 4,800 digits
                                    b"L" + b"7" * 4800 + b"L\n"],  # LONG, as text
                         ids=["LONG4", "LONG"])
def test_an_integer_of_thousands_of_digits_is_one_line_naming_the_file(tmp_path, number):
    # Python refuses to print an integer of more than 4300 digits: this was a ValueError traceback.
    path = write_archive(tmp_path / "digits.pt", state_pickle(("w", number)))
    message = refused(path, r"archive/data\.pkl: (holds an integer of \d+ bits|not a readable pickle)")
    assert "\n" not in message and len(message) < 600


HOSTILE_KEY = "w\n\x1b[2J\x1b[31mforged: all weights loaded" + "x" * 5000


def test_keys_from_the_file_are_shown_escaped_and_cut(tmp_path):
    # A newline or a terminal escape in a key cannot forge lines on the user's terminal.
    path = write_archive(tmp_path / "key.pt", state_pickle((HOSTILE_KEY, integer(1))))
    message = refused(path, r"entry 'w\\n\\x1b\[2J.*'\.\.\. \(5037 characters\) is int 1, expected a tensor")
    assert "\n" not in message and "\x1b" not in message and len(message) < 600
    # A storage key, shown when its entry is missing.
    data_pkl = state_pickle(("w", tensor("k\x1b[2J\n" + "k" * 150, 6, (6,))))
    message = refused(write_archive(tmp_path / "storage.pt", data_pkl), r"data\.pkl names storage 'k\\x1b\[2J\\n")
    assert "\n" not in message and "\x1b" not in message and len(message) < 800
