"""IDX reading and writing: every dtype round-trips, and every kind of damage is named."""

import gzip
import os
import struct
import zlib

import numpy as np
import pytest

from minicnn.data import read_idx, write_idx
from minicnn.data.idx import GzipStream
from minicnn.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_keeps_values_shape_and_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"array-idx3{suffix}"
    write_idx(path, array)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.dtype.isnative
    assert loaded.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_file_layout_is_big_endian_idx(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([1, 2, 300], dtype=np.int16))
    assert path.read_bytes() == bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 3) + struct.pack(">3h", 1, 2, 300)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    renamed = tmp_path / "no-gz-suffix"
    renamed.write_bytes((tmp_path / "a.gz").read_bytes())
    assert renamed.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_write_leaves_no_temporary_file(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 2), dtype=np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "x"
    write_idx(path, np.zeros(3, dtype=np.uint8))
    before = path.read_bytes()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_idx(path, np.ones(5, dtype=np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
    assert path.read_bytes() == before


def test_write_refuses_dtypes_idx_cannot_store(tmp_path):
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


def _valid_bytes():
    return bytes([0, 0, 0x08, 2]) + struct.pack(">II", 3, 4) + bytes(range(12))


def _damaged(kind):
    good = _valid_bytes()
    return {
        "truncated": good[:-5],
        "extra bytes": good + b"\x00\x01",
        "bad magic": b"\x01\x00" + good[2:],
        "unknown type code": bytes([0, 0, 0x07]) + good[3:],
        "short header": good[:9],
        "zero dimensions": bytes([0, 0, 0x08, 0]),
        "too few dims for the data": bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes(range(12)),
        "corrupt gzip": gzip.compress(good)[:-12] + b"garbage!",
        "empty": b"",
    }[kind]


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated file: expected 12 bytes of data for shape (3, 4), found 7"),
    ("extra bytes", "extra bytes after the data: expected 12 bytes of data for shape (3, 4), found 14"),
    ("bad magic", "bad magic number 01 00 08 02"),
    ("unknown type code", "bad magic number"),
    ("short header", "truncated IDX header"),
    ("zero dimensions", "0 dimensions"),
    ("too few dims for the data", "expected 3 bytes of data for shape (3,), found 12"),
    ("corrupt gzip", "corrupt gzip"),
    ("empty", "not an IDX file"),
])
def test_damaged_file_raises_data_error_naming_path_and_problem(tmp_path, kind, message):
    path = tmp_path / "damaged-idx"
    path.write_bytes(_damaged(kind))
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        read_idx(tmp_path / "nowhere")


# ----- sizes the header declares (issue 16) ----------------------------------------------------
def _header(type_code, shape):
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("shape", [
    (2**32 - 1,) * 3,  # 2**96 elements: an int64 product would wrap
    (2**16, 2**16, 2**16, 2**16),  # exactly 2**64: wraps to 0 in int64
    (2**21, 2**21, 2**21),  # 2**63: a negative int64
])
@pytest.mark.parametrize("gzipped", [False, True])
def test_header_declaring_huge_sizes_is_a_data_error_with_both_sizes(tmp_path, shape, gzipped):
    declared = 1
    for size in shape:
        declared *= size
    content = _header(0x0D, shape) + bytes(8)
    path = tmp_path / "huge-idx"
    path.write_bytes(gzip.compress(content) if gzipped else content)
    with pytest.raises(DataError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message and str(4 * declared) in message  # float32: 4 bytes each, in Python ints
    if not gzipped:
        assert "found 8" in message


def _zeros_gzip(size):
    """gzip of `size` zero bytes, compressed a block at a time (never all of them in memory at once)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [compressor.compress(block[:min(len(block), size - start)]) for start in range(0, size, len(block))]
    return b"".join(parts) + compressor.flush()


def test_gzip_bomb_is_refused_after_the_cap_not_decompressed_whole(tmp_path):
    # An honest-looking header (uint8, 64 MiB) over a stream of zeros that goes on past it.
    header = _header(0x08, (64, 1024, 1024))
    bomb = header + bytes(3 << 20)
    packed = gzip.compress(bomb)
    path = tmp_path / "bomb.gz"
    path.write_bytes(packed)
    # The cap (1 MiB) is below what the header declares: refused before decompressing the data.
    with pytest.raises(DataError, match="declares shape .* more than the 1.0 MiB"):
        read_idx(path, max_bytes=1 << 20)
    # The stream underneath decompresses what it is asked for and no more.
    stream = GzipStream(packed, path)
    assert len(stream.read(1 << 20)) == 1 << 20 and not stream.finished


def test_gzip_data_longer_than_the_header_declares_is_refused(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = _header(0x08, (3, 4)) + array.tobytes()
    path = tmp_path / "long.gz"
    path.write_bytes(gzip.compress(raw) + _zeros_gzip(5 << 20))  # a second member of 5 MiB of zeros
    with pytest.raises(DataError, match="extra bytes after the data"):
        read_idx(path)
    path.write_bytes(gzip.compress(raw) + gzip.compress(b""))  # an empty second member is harmless
    np.testing.assert_array_equal(read_idx(path), array)


def test_the_gzip_stream_reads_several_members_and_refuses_a_cut_stream():
    payload = b"minicnn" * 1000
    assert GzipStream(gzip.compress(payload[:3000]) + gzip.compress(payload[3000:]), "two").read(10**6) == payload
    with pytest.raises(DataError, match="corrupt gzip"):
        GzipStream(gzip.compress(payload)[:-20], "cut").read(10**6)


def test_raw_file_is_checked_against_its_length_before_the_data_are_read(tmp_path):
    path = tmp_path / "raw-idx"
    path.write_bytes(_header(0x08, (1000, 1000)) + bytes(10))
    with pytest.raises(DataError, match=r"truncated file: expected 1000000 bytes of data for shape \(1000, 1000\), found 10"):
        read_idx(path)
