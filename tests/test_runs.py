"""minicnn/runs.py: which checkpoint a path names, and what counts as a leftover temporary."""

from pathlib import Path

import pytest

from minicnn import runs


@pytest.mark.parametrize("symlinks", [True, False])
def test_a_folder_means_its_best_npz_and_latest_is_followed(tmp_path, monkeypatch, symlinks):
    monkeypatch.chdir(tmp_path)
    if not symlinks:
        def refuse(*args, **kwargs):
            raise OSError("symlinks not allowed here")

        monkeypatch.setattr(Path, "symlink_to", refuse)
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
