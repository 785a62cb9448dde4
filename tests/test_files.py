"""minicnn/files.py: the one atomic writer, and reading regular files only."""

import os
from pathlib import Path

import pytest

from minicnn import files
from minicnn.errors import DataError


def test_a_write_error_names_the_file_and_keeps_its_kind():
    named = files.cannot_write(Path("runs/x/last.npz"), PermissionError(13, "Permission denied", ".last.npz.tmp-7"))
    assert isinstance(named, PermissionError) and named.errno == 13
    assert str(named) == "cannot write runs/x/last.npz: Permission denied"
    assert str(files.cannot_write("m.json", OSError(28, "No space left on device"))) == \
        "cannot write m.json: No space left on device"
    assert files.cannot_write("m.json", named) is not named  # another file: named again
    assert files.cannot_write(Path("runs/x/last.npz"), named) is named  # already named: as it is


def test_a_full_disk_names_the_file_and_leaves_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    files.write_bytes_atomically(path, b"old")
    monkeypatch.setattr(os, "fsync", lambda descriptor: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match=rf"^cannot write {path}: No space left on device$") as raised:
        files.write_bytes_atomically(path, b"new")
    assert raised.value.errno == 28
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_open_regular_file_refuses_a_fifo_without_waiting_and_escapes_the_name(tmp_path):
    fifo = tmp_path / "a\nforged line.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError) as raised:
        files.open_regular_file(fifo, "a picture", DataError)  # O_NONBLOCK: returns at once
    message = str(raised.value)
    assert "\n" not in message and "a FIFO (named pipe), not a regular file; a picture is read" in message
    with files.open_regular_file(__file__, "a test") as file:
        assert file.read(3) == b'"""'


def test_a_callbacks_own_error_passes_through_unnamed(tmp_path):
    # A download streamed into the file fails with the download's error (here a timeout), not "cannot write".
    def download(file):
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError, match="^timed out$"):
        files.write_atomically(tmp_path / "archive.tar.gz", download)
    assert list(tmp_path.iterdir()) == []
