"""Paths that are not regular files, for the readers' tests: a FIFO, a device, a folder.

Every reader of a file it is given must refuse these at once with one line naming the file;
before that rule, opening a FIFO waited for a writer forever and /dev/zero was read without end.
`raised_within` runs the reader on a daemon thread, so a reader that hangs fails its test
instead of hanging the suite.
"""

import os
import threading
from pathlib import Path

import pytest

KINDS = ["fifo", "device", "folder"]
SAYS = {"fifo": "a FIFO", "device": "a character device", "folder": "a folder"}


def special_path(kind, folder, name):
    """A path of `kind` (one of KINDS) named `name` inside `folder` (/dev/zero for a device)."""
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("os.mkfifo is not available on this system")
        path = Path(folder) / name
        os.mkfifo(path)
        return path
    if kind == "device":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero on this system")
        return Path("/dev/zero")
    path = Path(folder) / name
    path.mkdir()
    return path


def raised_within(call, path, seconds=60):
    """The exception call() raises; the test fails if call() returns or has not ended within `seconds`.

    path: the special file, so that a reader blocked opening a FIFO is released (a writer opens
    and closes it) once the time is up.
    """
    outcome = {}

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if Path(path).is_fifo():
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"the reader still runs on {path} after {seconds} s")
    if "error" not in outcome:
        pytest.fail(f"the reader read {path} without an error")
    return outcome["error"]
