"""Writing files so that a kill at any instant leaves either the old file or the new one.

One writer serves checkpoints, the data cache, metrics.json and ONNX export.
"""

import os
from pathlib import Path


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
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path, content):
    """write_atomically for bytes already in memory."""
    write_atomically(path, lambda file: file.write(content))
