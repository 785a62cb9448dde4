"""minicnn/runs.py: which checkpoint a path names, and what counts as a leftover temporary."""

import os
from pathlib import Path

import pytest

from minicnn import runs


def _refuse_symlinks(*args, **kwargs):
    raise OSError("symlinks not allowed here")


@pytest.mark.parametrize("symlinks", [True, False])
def test_a_folder_means_its_best_npz_and_latest_is_followed(tmp_path, monkeypatch, symlinks):
    monkeypatch.chdir(tmp_path)
    if not symlinks:
        monkeypatch.setattr(Path, "symlink_to", _refuse_symlinks)
    root = Path("runs")
    first, second = runs.fresh_run_folder("cnn", root), runs.fresh_run_folder("cnn", root)
    assert first.name.endswith("-1") and second.name.endswith("-2")
    assert (root / "latest").is_symlink() == symlinks
    assert runs.resolve_checkpoint(root / "latest") == second / "best.npz"
    assert runs.resolve_checkpoint(root / "latest" / "last.npz") == second / "last.npz"
    assert runs.resolve_checkpoint(first) == first / "best.npz"
    assert runs.resolve_checkpoint(str(first / "model.onnx")) == first / "model.onnx"


def test_only_what_an_interrupted_write_leaves_is_a_temporary():
    assert runs.TEMPORARY.fullmatch(".best.npz.tmp-123") and runs.TEMPORARY.fullmatch(".metrics.json.tmp-7")
    for name in (".best.npz.tmp-x", "best.npz.tmp-1", ".other.tmp-5", ".last.npz.tmp-1.bak"):
        assert not runs.TEMPORARY.fullmatch(name), name


def test_a_folder_made_for_a_run_that_wrote_nothing_is_removed_again(tmp_path):
    folder = tmp_path / "new" / "run"
    with runs.run_folder(folder, "--out"):
        assert (folder / runs.LOCK_FILE).read_text().strip().isdigit()
    assert not folder.exists() and (tmp_path / "new").is_dir()


def test_latest_points_at_runs_anywhere_and_is_never_made_without_a_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path("runs")
    runs.point_latest(Path("runs/mine"))  # no runs/ yet: nothing is made
    assert not root.exists()
    (root / "mine").mkdir(parents=True)
    runs.point_latest(root / "mine")
    assert os.readlink(root / "latest") == "mine"
    (tmp_path / "away").mkdir()
    runs.point_latest(tmp_path / "away")
    assert Path(os.readlink(root / "latest")) == (tmp_path / "away").resolve()
    assert runs.resolve_checkpoint(root / "latest") == (tmp_path / "away").resolve() / "best.npz"


def test_resume_reads_last_npz_else_best_npz(tmp_path):
    assert runs.resume_checkpoint(tmp_path) is None
    (tmp_path / "best.npz").write_bytes(b"")
    assert runs.resume_checkpoint(tmp_path) == tmp_path / "best.npz"
    (tmp_path / "last.npz").write_bytes(b"")
    assert runs.resume_checkpoint(tmp_path) == tmp_path / "last.npz"




def test_a_file_named_latest_that_names_no_folder_is_a_file_not_a_link(tmp_path):
    # A checkpoint saved as 'latest' was read as text (a UnicodeDecodeError without the file's name).
    latest = tmp_path / "latest"
    latest.write_bytes(b"PK\x03\x04\xe9\xff binary")
    assert runs.follow_latest(latest) == latest and runs.resolve_checkpoint(latest) == latest
    latest.write_text("two\nlines\n")
    assert runs.follow_latest(latest) == latest
    (tmp_path / "cnn-1").mkdir()
    latest.write_text("cnn-1\n")
    assert runs.follow_latest(latest / "best.npz") == tmp_path / "cnn-1" / "best.npz"


@pytest.mark.parametrize("symlinks", [True, False])
def test_a_latest_whose_run_is_gone_is_one_line_naming_both(tmp_path, monkeypatch, capsys, symlinks):
    # It named the missing folder as a checkpoint (or, as text, was read as one): never the real reason.
    monkeypatch.chdir(tmp_path)
    if not symlinks:
        monkeypatch.setattr(Path, "symlink_to", _refuse_symlinks)
    root = Path("runs")
    gone = runs.fresh_run_folder("cnn", root)
    gone.rmdir()
    assert (root / "latest").is_symlink() == symlinks
    for path in (root / "latest", root / "latest" / "last.npz"):
        with pytest.raises(FileNotFoundError, match=rf"^runs/latest points at {gone}, which no longer exists"):
            runs.resolve_checkpoint(path)
    from minicnn.cli import main

    assert main(["evaluate", "runs/latest"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"minicnn evaluate: runs/latest points at {gone}, which") and error.count("\n") == 1


def test_point_latest_replaces_the_link_in_one_step(tmp_path):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    runs.point_latest(root / "a", root=root)
    runs.point_latest(root / "b", root=root)
    assert os.readlink(root / "latest") == "b" and sorted(p.name for p in root.iterdir()) == ["a", "b", "latest"]
