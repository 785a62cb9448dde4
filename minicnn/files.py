"""Files written so that a kill at any instant leaves either the old file or the new one, and files
read only when they are regular files.

One writer serves checkpoints, the data cache, metrics.json and ONNX export; one check serves
every reader of a file it was given: checkpoints, PyTorch state dicts, data archives (regular_file,
before a library opens the path), pictures and ONNX models (open_regular_file, which checks the
opened descriptor, so the file cannot be swapped between the check and the read).
"""

import errno
import os
import stat
from pathlib import Path

# The errors of writing a file (a full disk, a folder made read-only, ...), which write_atomically names
# the file for; a callback's other errors (a download's HTTPError, a timeout) pass through as they are.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                 errno.ENOENT, errno.ENOTDIR, errno.EISDIR}

# What a path may be instead of a regular file, as a message names it.
_OTHER_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


def write_atomically(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it over `path`.

    The temporary is `.NAME.tmp-PID` (a dot-name with the pid: hidden, obviously temporary,
    distinct for concurrent writers); its bytes reach the disk (fsync) before the rename makes
    them the file. A kill leaves at most that temporary, which `minicnn train` removes from its
    folder on the next run; any exception (KeyboardInterrupt too) removes it at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in _WRITE_ERRORS and type(error).__module__ == "builtins":  # not a download's error
            raise cannot_write(path, error) from error
        raise
    except BaseException:  # KeyboardInterrupt too: never leave a half-written temporary behind
        temporary.unlink(missing_ok=True)
        raise


def cannot_write(path, error):
    """`error`, an OSError met writing `path`, as one of the same kind whose message names `path`.

    A full disk says only '[Errno 28] No space left on device', and a read-only folder names the temporary
    file written first (.NAME.tmp-PID), not the file that could not be written. An error that names
    `path` already is returned as it is.
    """
    message = f"cannot write {path}: "
    if str(error).startswith(message):
        return error
    named = type(error)(message + str(error.strerror or error))
    named.errno = error.errno
    return named


def write_bytes_atomically(path, content):
    """write_atomically for bytes already in memory."""
    write_atomically(path, lambda file: file.write(content))


def regular_file(path, what, error=ValueError):
    """os.stat(path), after checking that `path` is a regular file (a link to one counts as one).

    Readers call it before opening a file they were given: opening a FIFO waits for a writer that
    may never come, a device such as /dev/zero never ends, a folder is no file. what: what the file
    should be, for the message ("a minicnn checkpoint"); error: the exception raised for a path of
    another kind (CheckpointError, DataError). OSError (a missing file, no permission) passes through.
    """
    status = os.stat(path)
    _check_regular(path, status.st_mode, what, error)
    return status


def open_regular_file(path, what, error=ValueError):
    """The file at `path` opened for reading in binary, after checking that it is a regular file.

    The check is made on the opened descriptor, and the open never waits (O_NONBLOCK: opening a FIFO
    would otherwise wait for a writer); what and error as in regular_file. The caller closes the file
    (`with open_regular_file(...) as file:`).
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _check_regular(path, os.fstat(descriptor).st_mode, what, error)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _check_regular(path, mode, what, error):
    if not stat.S_ISREG(mode):
        kind = next((name for is_kind, name in _OTHER_KINDS if is_kind(mode)), "a special file")
        shown = repr(str(path))  # escaped: a newline or an escape sequence in a name cannot forge a line
        raise error(f"{shown} is {kind}, not a regular file; {what} is read from a regular file only")
