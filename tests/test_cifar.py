"""CIFAR-10 without unpickling: generated archives in every pickle flavour, and refusals.

The writers here use `pickle.dumps` (the test makes its own trusted data);
only the reader under test must never unpickle.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from minicnn.data import ARCHIVES, CIFAR10_CLASSES, fetch, fetch_archive, load_cifar10
from minicnn.data.cifar import read_pickled_batch
from minicnn.errors import ChecksumError, DataError

from local_http import serving, without_proxies

IMAGES_PER_BATCH = 20
TRAIN_FILES = [f"data_batch_{number}" for number in range(1, 6)]


def _batch_contents(number):
    rng = np.random.default_rng(number)
    data = rng.integers(0, 256, size=(IMAGES_PER_BATCH, 3072), dtype=np.uint8)
    labels = [int(label) for label in rng.integers(0, 10, size=IMAGES_PER_BATCH)]
    filenames = [f"image_{number}_{index}.png" for index in range(IMAGES_PER_BATCH)]
    return data, labels, filenames


def _python3_pickle(number, protocol, keys_as_bytes):
    data, labels, filenames = _batch_contents(number)
    if keys_as_bytes:
        batch = {b"batch_label": f"batch {number}".encode(), b"labels": labels, b"data": data,
                 b"filenames": [name.encode() for name in filenames]}
    else:
        batch = {"batch_label": f"batch {number}", "labels": labels, "data": data, "filenames": filenames}
    return pickle.dumps(batch, protocol=protocol)


class _Py2Writer:
    """Writes a batch as Python 2's cPickle did at protocol 2: keys and raw bytes as `str` opcodes."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo_index = 0

    def put(self):
        self.memo_index += 1
        self.out += b"q" + bytes([self.memo_index % 256])

    def string(self, value):
        if len(value) < 256:
            self.out += b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
        else:
            self.out += b"T" + struct.pack("<I", len(value)) + value  # BINSTRING
        self.put()

    def integer(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def array(self, data):
        self.out += b"cnumpy.core.multiarray\n_reconstruct\n"
        self.put()
        self.out += b"cnumpy\nndarray\n"
        self.put()
        self.out += b"K\x00\x85U\x01b\x87R"  # _reconstruct(ndarray, (0,), 'b')
        self.put()
        self.out += b"(K\x01"  # state: (1, shape, dtype, is_fortran, raw)
        for size in data.shape:
            self.integer(size)
        self.out += b"\x86cnumpy\ndtype\n"
        self.put()
        self.out += b"U\x02u1K\x00K\x01\x87R"
        self.put()
        self.out += b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        self.string(data.tobytes())
        self.out += b"tb"

    def list_of(self, items, write_item, chunk=7):
        self.out += b"]"
        self.put()
        for start in range(0, len(items), chunk):  # cPickle batched APPENDS like this (by 1000)
            self.out += b"("
            for item in items[start:start + chunk]:
                write_item(item)
            self.out += b"e"


def _python2_pickle(number):
    data, labels, filenames = _batch_contents(number)
    writer = _Py2Writer()
    writer.out += b"}"
    writer.put()
    writer.out += b"("
    writer.string(b"data")
    writer.array(data)
    writer.string(b"labels")
    writer.list_of(labels, writer.integer)
    writer.string(b"batch_label")
    writer.string(f"training batch {number} of 5".encode())
    writer.string(b"filenames")
    writer.list_of([name.encode() for name in filenames], writer.string)
    writer.out += b"u."
    return bytes(writer.out)


def _write_archive(path, files):
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def _all_files(make_pickle):
    files = {name: make_pickle(number) for number, name in enumerate(TRAIN_FILES, start=1)}
    files["test_batch"] = make_pickle(6)
    files["batches.meta"] = pickle.dumps({b"label_names": [name.encode() for name in CIFAR10_CLASSES]}, protocol=2)
    return files


def _expected(numbers):
    contents = [_batch_contents(number) for number in numbers]
    images = np.concatenate([data for data, _, _ in contents]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([labels for _, labels, _ in contents]).astype(np.int64)
    return images, labels


FLAVOURS = {
    "python2 protocol 2": _python2_pickle,
    "protocol 2, bytes keys": lambda number: _python3_pickle(number, 2, True),
    "protocol 2, str keys": lambda number: _python3_pickle(number, 2, False),
    "protocol 4, bytes keys": lambda number: _python3_pickle(number, 4, True),
    "protocol 4, str keys": lambda number: _python3_pickle(number, 4, False),
    "protocol 5, str keys": lambda number: _python3_pickle(number, 5, False),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_archive_round_trip_in_every_pickle_flavour(tmp_path, flavour):
    archive = _write_archive(tmp_path / "cifar-10-python.tar.gz", _all_files(FLAVOURS[flavour]))
    images, labels = load_cifar10(archive, "train")
    expected_images, expected_labels = _expected(range(1, 6))
    assert images.shape == (5 * IMAGES_PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    test_images, test_labels = load_cifar10(archive, "test")
    np.testing.assert_array_equal(test_images, _expected([6])[0])
    np.testing.assert_array_equal(test_labels, _expected([6])[1])


def test_python2_stream_is_what_pickle_itself_reads():
    """Guards the hand-written Python 2 stream: the standard unpickler agrees with our reader."""
    stream = _python2_pickle(1)
    reference = pickle.loads(stream, encoding="bytes")  # our own bytes, made just above
    ours = read_pickled_batch(io.BytesIO(stream), "python2-batch")
    assert ours.keys() == reference.keys()
    np.testing.assert_array_equal(ours[b"data"], reference[b"data"])
    assert ours[b"labels"] == reference[b"labels"]
    assert ours[b"filenames"] == reference[b"filenames"]
    assert ours[b"batch_label"] == b"training batch 1 of 5"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reader_rebuilds_arrays_sharing_a_dtype_and_fortran_order(protocol):
    original = {
        "images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "more": np.arange(6, dtype=np.uint8)[::-1],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "big_endian": np.arange(3, dtype=">i8"),
        "big_endian_again": np.arange(4, dtype=">i8"),  # its dtype is a memo reference to the one above
        "nested": [(1, 2.5, None, True), {"k": b"v"}],
    }
    loaded = read_pickled_batch(io.BytesIO(pickle.dumps(original, protocol=protocol)), "mixed")
    for key in ("images", "more", "fortran", "big_endian", "big_endian_again"):
        np.testing.assert_array_equal(loaded[key], original[key])
        assert loaded[key].dtype == original[key].dtype.newbyteorder("=")
    assert loaded["nested"] == [(1, 2.5, None, True), {"k": b"v"}]


def test_extracted_folder_works_too(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, content in _all_files(FLAVOURS["python2 protocol 2"]).items():
        (folder / name).write_bytes(content)
    for path in (folder, tmp_path):  # the batches folder, or the folder holding it
        images, labels = load_cifar10(path, "test")
        np.testing.assert_array_equal(images, _expected([6])[0])
        np.testing.assert_array_equal(labels, _expected([6])[1])


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_forbidden_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "was-executed"
    for protocol in (2, 4):
        stream = pickle.dumps({b"data": _RunsACommand(marker)}, protocol=protocol)
        with pytest.raises(DataError, match=r"^evil: refusing to read it: it needs (os|posix)\.system, "
                                            r"which a CIFAR-10 batch never does"):
            read_pickled_batch(io.BytesIO(stream), "evil")
    archive = _write_archive(tmp_path / "evil.tar.gz",
                             {name: pickle.dumps(_RunsACommand(marker), protocol=2) for name in ["test_batch"]})
    with pytest.raises(DataError, match="refusing to read"):
        load_cifar10(archive, "test")
    assert not marker.exists()


@pytest.mark.parametrize("value, message", [
    ({1, 2}, "opcode EMPTY_SET"),
    (np.zeros(3, dtype=np.float64), "dtype 'f8'"),
    (np.zeros(2, dtype=[("a", "u1")]), "refusing to read"),
])
def test_anything_outside_the_subset_is_refused(value, message):
    with pytest.raises(DataError, match=message):
        read_pickled_batch(io.BytesIO(pickle.dumps({"data": value}, protocol=4)), "odd")


def test_truncated_pickle_is_a_data_error():
    stream = _python2_pickle(1)
    with pytest.raises(DataError, match="truncated-batch"):
        read_pickled_batch(io.BytesIO(stream[: len(stream) // 2]), "truncated-batch")


def _batch(data, labels):
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


@pytest.mark.parametrize("content, message", [
    (_batch(np.zeros((4, 3000), dtype=np.uint8), [0] * 4), r"uint8 array \(N, 3072\)"),
    (_batch(np.zeros((4, 3072), dtype=np.uint8), [0] * 3), "4 images but 3 labels"),
    (_batch(np.zeros((4, 3072), dtype=np.uint8), [0, 1, 10, 2]), r"labels must be in 0..9, found 10"),
    (pickle.dumps({b"labels": [0]}, protocol=2), "no 'data' entry"),
    (pickle.dumps([1, 2], protocol=2), "expected a dict"),
], ids=["3000 columns", "too few labels", "label 10", "no data", "a list"])
def test_bad_batches_are_data_errors(tmp_path, content, message):
    archive = _write_archive(tmp_path / "bad.tar.gz", {"test_batch": content})
    with pytest.raises(DataError, match=message):
        load_cifar10(archive, "test")


def test_missing_member_is_named(tmp_path):
    files = _all_files(FLAVOURS["protocol 2, bytes keys"])
    del files["data_batch_3"]
    archive = _write_archive(tmp_path / "partial.tar.gz", files)
    with pytest.raises(DataError, match="no member cifar-10-batches-py/data_batch_3"):
        load_cifar10(archive, "train")
    load_cifar10(archive, "test")  # the test split does not need it


def test_not_an_archive_and_missing_path_are_data_errors(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar archive at all")
    with pytest.raises(DataError, match="not a readable tar archive"):
        load_cifar10(junk)
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "absent.tar.gz")
    with pytest.raises(ValueError, match="split must be"):
        load_cifar10(junk, "valid")


def test_class_names():
    assert CIFAR10_CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck")


# ----- fetching the archive: a local HTTP server serves a small archive in the official format ----------
@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    path = _write_archive(tmp_path_factory.mktemp("served") / "cifar-10-python.tar.gz",
                          _all_files(FLAVOURS["python2 protocol 2"]))
    return path.read_bytes()


@pytest.fixture
def cifar_server(small_archive, monkeypatch):
    """http://127.0.0.1:PORT/: /good serves the archive, /damaged the archive with one byte changed,
    /endless more bytes than the archive has, anything else 404; proxies are switched off."""
    without_proxies(monkeypatch)
    damaged = bytearray(small_archive)
    damaged[len(damaged) // 2] ^= 0xFF
    routes = {"/good": small_archive, "/damaged": bytes(damaged), "/endless": small_archive * 3}
    with serving(routes, unsized={"/endless"}) as server:
        yield server


def _served_spec(small_archive, *urls):
    """The real CIFAR-10 spec pointed at the test's server, with the test archive's checksum injected."""
    return dataclasses.replace(ARCHIVES["cifar10"], urls=urls, md5=hashlib.md5(small_archive).hexdigest(),
                               size=len(small_archive))


def test_the_published_url_and_checksum_are_the_ones_fetched():
    spec = ARCHIVES["cifar10"]
    assert spec.urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
    assert spec.md5 == "c58f30108f718f92721af3b95e74349a" and spec.file == "cifar-10-python.tar.gz"
    assert spec.sha256 is None  # none is published; none is made up


def test_fetch_downloads_verifies_and_caches_the_archive(tmp_path, small_archive, cifar_server, capsys):
    spec = _served_spec(small_archive, f"{cifar_server.url}/missing", f"{cifar_server.url}/good")
    path = fetch_archive(spec, root=tmp_path)
    assert path == tmp_path / "cifar10" / "cifar-10-python.tar.gz" and path.read_bytes() == small_archive
    assert sorted(item.name for item in path.parent.iterdir()) == ["cifar-10-python.tar.gz"]  # no temporary left
    assert "MD5 verified" in capsys.readouterr().err
    images, labels = load_cifar10(path, "test")
    np.testing.assert_array_equal(images, _expected([6])[0])
    # Fetched once: the next call finds it in the cache and asks the server nothing.
    cifar_server.requests.clear()
    assert fetch(spec, root=tmp_path, verbose=False) == path.parent and cifar_server.requests == []


@pytest.mark.parametrize("route, error, message", [
    ("/damaged", ChecksumError, r"sent a file with MD5 [0-9a-f]{32}, expected [0-9a-f]{32}"),
    ("/endless", DataError, r"sent more than cifar-10-python.tar.gz's \d+ bytes"),
])
def test_a_wrong_download_leaves_nothing_in_the_cache(tmp_path, small_archive, cifar_server, route, error, message):
    spec = _served_spec(small_archive, cifar_server.url + route)
    with pytest.raises(error, match=message) as caught:
        fetch_archive(spec, root=tmp_path, verbose=False)
    assert "\n" not in str(caught.value) and spec.page in str(caught.value)
    assert list((tmp_path / "cifar10").iterdir()) == []  # neither the archive nor a temporary


def test_a_damaged_cached_archive_is_reported_and_replaced(tmp_path, small_archive, cifar_server):
    spec = _served_spec(small_archive, f"{cifar_server.url}/good")
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(small_archive[:-10])
    with pytest.raises(ChecksumError, match=r"cifar-10-python.tar.gz has MD5 [0-9a-f]{32}, expected"):
        fetch_archive(spec, root=tmp_path, sources="cache", verbose=False)
    assert fetch_archive(spec, root=tmp_path, verbose=False).read_bytes() == small_archive


def test_without_network_one_line_says_where_to_get_the_file(tmp_path, small_archive, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: as good as no network
    with pytest.raises(DataError) as caught:
        fetch_archive("cifar10", root=tmp_path, verbose=False)
    message = str(caught.value)
    assert "\n" not in message and not isinstance(caught.value, ChecksumError)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz is unreachable" in message
    assert "get it from https://www.cs.toronto.edu/~kriz/cifar.html (MD5 c58f30108f718f92721af3b95e74349a)" in message
    assert str(tmp_path / "cifar10") in message and list((tmp_path / "cifar10").iterdir()) == []


def test_minicnn_fetch_knows_cifar10_and_train_reads_the_cached_archive(tmp_path, monkeypatch):
    from minicnn.cli import build_parser
    from minicnn.cli.arguments import _check_image_flags

    assert build_parser().parse_args(["fetch", "cifar10"]).dataset == "cifar10"
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))
    args = build_parser().parse_args(["train", "--model", "cifar_cnn", "--dataset", "cifar10"])
    with pytest.raises(DataError, match=r"^--dataset cifar10 without --data reads the archive in the cache, which "
                                        r"`minicnn fetch cifar10` downloads; .* is not there"):
        _check_image_flags(args)
    # An archive with the published checksum in the cache is what --data becomes.
    cached = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    cached.parent.mkdir()
    cached.write_bytes(b"stand-in")
    monkeypatch.setitem(ARCHIVES, "cifar10", dataclasses.replace(ARCHIVES["cifar10"],
                                                                  md5=hashlib.md5(b"stand-in").hexdigest()))
    args = build_parser().parse_args(["train", "--model", "cifar_cnn", "--dataset", "cifar10"])
    _check_image_flags(args)
    assert args.data == cached
