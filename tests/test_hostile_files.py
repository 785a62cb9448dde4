"""Hostile picture files: each builds its input here, small, and must end in one line naming the file.

PostScript named .png (no Ghostscript may run), FIFOs (nothing may block), link loops in a picture
folder, pictures whose header declares more pixels than minicnn reads, modes that cannot become grey.
"""

import os
import struct
import sys
import threading
import tracemalloc
import zlib

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image", reason="reading pictures needs Pillow (the `images` extra)")

from minicnn import backend  # noqa: E402
from minicnn.data import load_image_folder  # noqa: E402
from minicnn.data.images import MAX_PICTURE_PIXELS, read_picture  # noqa: E402
from minicnn.errors import DataError  # noqa: E402
from minicnn.pictures import read_grey  # noqa: E402

POSTSCRIPT = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
%%EndComments
newpath 0 0 moveto 8 8 lineto stroke
showpage
%%EOF
"""


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text and "\x1b" not in text, text
    return text


def _write_picture(path, size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


def _png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(path, width, height, bit_depth=16, colour_type=0):
    """A PNG whose header declares width x height and whose data holds a few rows: ~100 bytes."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width * 2) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
                     + _png_chunk(b"IEND", b""))


# ----- 1. no external program runs on a picture ----------------------------------------------------------

@pytest.fixture
def stub_ghostscript(tmp_path, monkeypatch):
    """A `gs` first on PATH that writes a file when it runs; returns that file's path."""
    bin_folder, record = tmp_path / "bin", tmp_path / "gs-ran"
    bin_folder.mkdir()
    stub = bin_folder / "gs"
    stub.write_text(f"#!/bin/sh\necho ran >> '{record}'\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)  # Pillow caches where gs is
    monkeypatch.setattr(EpsImagePlugin, "gs_windows_binary", None, raising=False)
    return record


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script stub")
def test_postscript_named_png_is_refused_and_ghostscript_never_runs(tmp_path, stub_ghostscript):
    disguised = tmp_path / "digit.png"
    disguised.write_bytes(POSTSCRIPT)
    with pytest.raises(DataError) as error:
        read_grey(disguised)
    assert "digit.png: not a readable image" in _one_line(error) and "PNG, JPEG" in str(error.value)
    folder = tmp_path / "folder"
    _write_picture(folder / "cat" / "good.png")
    (folder / "cat" / "page.png").write_bytes(POSTSCRIPT)
    with pytest.raises(DataError, match=r"cannot read picture .*page\.png: not a readable image") as error:
        load_image_folder(folder, 4)
    _one_line(error)
    assert not stub_ghostscript.exists(), "Ghostscript ran on a picture"


# ----- 2. nothing hangs: FIFOs and link loops -------------------------------------------------------------

def _returns_soon(function, *args):
    """function(*args) in a thread; fails the test (after unblocking it) if it does not return in 20 s."""
    outcome = {}

    def call():
        try:
            outcome["value"] = function(*args)
        except Exception as error:  # noqa: BLE001 (handed back to the test)
            outcome["error"] = error

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(20)
    return thread.is_alive(), outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("reader", ["read_grey", "load_image_folder"])
def test_a_fifo_as_a_picture_is_refused_without_blocking(tmp_path, reader):
    fifo = tmp_path / "folder" / "cat" / "pipe.png"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    call = (read_grey, fifo) if reader == "read_grey" else (load_image_folder, tmp_path / "folder", 4)
    blocked, outcome = _returns_soon(*call)
    if blocked:  # open the writing end so that the reader's thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{reader} blocked on a FIFO")
    assert isinstance(outcome.get("error"), DataError), outcome
    assert "pipe.png' is a FIFO (named pipe), not a regular file" in str(outcome["error"]) and "\n" not in str(outcome["error"])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_folder_links_are_not_followed_so_loops_end_and_nothing_loads_twice(tmp_path):
    root = tmp_path / "folder"
    _write_picture(root / "cat" / "1.png")
    _write_picture(root / "cat" / "deep" / "2.png")
    _write_picture(root / "dog" / "3.png")
    os.symlink(root / "cat", root / "cat" / "again")  # a self-link
    os.symlink(root / "dog", root / "dog" / "here")  # two links that point at each other's folders
    os.symlink(root / "cat", root / "dog" / "there")
    os.symlink("/", root / "dog" / "everything")  # a link to the whole file system
    os.symlink("/", root / "root-class")  # a class folder that is a link
    blocked, outcome = _returns_soon(load_image_folder, root, 4)
    assert not blocked, "load_image_folder hangs on a link loop"
    images, labels, names = outcome["value"]
    assert names == ("cat", "dog")
    assert len(images) == 3 and labels.tolist() == [0, 0, 1]  # each picture once


# ----- 3. memory bounded before decoding ----------------------------------------------------------------

def test_a_picture_over_the_pixel_cap_is_refused_from_its_header(tmp_path):
    # 9000 x 9000 16-bit grey: 162 MB decoded, 1.3 GB as float64; the file is ~150 bytes.
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 9000, 9000)
    assert huge.stat().st_size < 1000 and 9000 * 9000 > MAX_PICTURE_PIXELS
    for reader in (read_grey, read_picture):
        with pytest.raises(DataError, match=r"huge\.png: a 9000x9000 I;16 picture .* over the limit") as error:
            reader(huge)
        _one_line(error)
    folder = tmp_path / "folder" / "cat"
    folder.mkdir(parents=True)
    os.replace(huge, folder / "huge.png")
    with pytest.raises(DataError, match=r"cannot read picture .*huge\.png: a 9000x9000"):
        load_image_folder(tmp_path / "folder", 4)


def test_the_memory_limit_lowers_the_picture_cap(tmp_path):
    picture = tmp_path / "wide.png"
    _png_header_only(picture, 2000, 1000, bit_depth=8, colour_type=2)  # RGB: 8 MB decoded in Pillow
    backend.set_memory_limit(1 << 20)
    try:
        with pytest.raises(DataError, match=r"wide\.png: a 2000x1000 RGB picture .*backend\.set_memory_limit"):
            read_picture(picture)
    finally:
        backend.set_memory_limit(None)


def test_sixteen_bit_pictures_are_read_as_float32_never_float64(tmp_path):
    ramp = (np.arange(512 * 512, dtype=np.uint32).reshape(512, 512) % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    tracemalloc.start()
    try:
        grey = read_grey(tmp_path / "ramp.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # float32 and one temporary: ~9 bytes a pixel; widening to float64 first took ~20.
    assert peak < 12 * ramp.size, f"{peak / ramp.size:.1f} bytes a pixel"
    assert grey.dtype == np.float32 and grey.shape == (512, 512)
    np.testing.assert_allclose(grey, ramp / 65535, atol=1e-6)


# ----- 4. a mode that cannot convert is one line naming the file --------------------------------------------

def _lab_tiff(path):
    Image.new("LAB", (8, 8), (50, 10, 10)).save(path, format="TIFF")


def test_a_lab_tiff_is_one_line_naming_the_file(tmp_path):
    lab = tmp_path / "colours.tif"
    _lab_tiff(lab)
    with pytest.raises(DataError, match=r"colours\.tif: cannot convert its LAB pixels") as error:
        read_grey(lab)
    _one_line(error)
    folder = tmp_path / "folder" / "cat"
    folder.mkdir(parents=True)
    _lab_tiff(folder / "colours.tif")
    with pytest.raises(DataError, match=r"cannot read picture .*colours\.tif: cannot convert its LAB"):
        load_image_folder(tmp_path / "folder", 4, color_mode="grayscale")  # Pillow turns LAB into RGB, not into L


def test_a_file_name_with_a_newline_or_an_escape_code_is_shown_escaped(tmp_path):
    forged = tmp_path / "a\nminicnn predict: all good\x1b[2J.png"
    forged.write_bytes(b"not a picture")
    with pytest.raises(DataError) as error:
        read_grey(forged)
    assert "\\n" in _one_line(error) and "\\x1b" in str(error.value)


def _tiny_model():
    from minicnn import nn

    return nn.Sequential(nn.Flatten(), nn.Dense(28 * 28, 10), input_shape=(1, 28, 28))


def test_predict_on_several_files_names_the_bad_one_and_predicts_the_others(tmp_path):
    import minicnn

    digit = np.zeros((40, 40), dtype=np.uint8)
    digit[8:32, 18:22] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    _lab_tiff(tmp_path / "colours.tif")
    Image.fromarray(digit).save(tmp_path / "again.png")
    results = minicnn.predict(_tiny_model(), [tmp_path / "one.png", tmp_path / "colours.tif",
                                              tmp_path / "again.png"], dataset="mnist")
    assert [result["file"] for result in results] == [str(tmp_path / name) for name in
                                                      ("one.png", "colours.tif", "again.png")]
    assert len(results[0]["predictions"]) == 3 and results[2]["predictions"] == results[0]["predictions"]
    assert results[1]["predictions"] == [] and "colours.tif: cannot convert its LAB" in results[1]["error"]
    with pytest.raises(DataError, match=r"colours\.tif: cannot convert"):
        minicnn.predict(_tiny_model(), tmp_path / "colours.tif", dataset="mnist")  # one path: raised


def test_a_blank_or_transparent_picture_gets_a_warning(tmp_path):
    import minicnn
    from minicnn.pictures import BLANK_WARNING

    Image.new("L", (30, 30), 255).save(tmp_path / "white.png")
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    digit = np.zeros((40, 40), dtype=np.uint8)
    digit[8:32, 18:22] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    results = minicnn.predict(_tiny_model(), [tmp_path / name for name in ("white.png", "clear.png", "one.png")],
                              dataset="mnist")
    assert [result.get("warning") for result in results] == [BLANK_WARNING, BLANK_WARNING, None]
    assert all(len(result["predictions"]) == 3 for result in results)
