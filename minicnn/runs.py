"""Run folders: where `minicnn train` writes a run, and how a path names a run's checkpoint.

    resolve_checkpoint("runs/latest")         # runs/cnn-20250101-2/best.npz: a folder means its best.npz
    folder = fresh_run_folder("cnn")          # runs/cnn-YYYYmmdd-N, N the first free number; runs/latest -> it
    with run_folder(folder, "--out"):         # made, checked writable, locked, cleared of leftover temporaries
        ...
    point_latest(Path("elsewhere/run"))       # runs/latest -> a run that went elsewhere (--out, --resume)

A run folder holds last.npz, best.npz and metrics.json (RUN_FILES). While a `train` writes there it holds
the folder's lock (.lock, an flock, with the holder's pid), and before writing it removes the temporaries
an interrupted write left (files.write_atomically's `.NAME.tmp-PID`). `latest` in the runs folder is a
symlink to the folder of the last `train` (a fresh folder, --out or --resume; relative inside the runs
folder, absolute outside it), or, where symlinks cannot be made, a text file holding that path.

What a kill or a full disk leaves, and what --resume makes of it (resume_checkpoint): last.npz, the end of
an epoch or a stop, is where a resumed run continues; best.npz alone (a kill between epoch 1's best.npz and
its first last.npz) holds the run's settings, and the resumed run starts again from epoch 1.
"""

import contextlib
import datetime
import fcntl
import os
import re
import sys
from pathlib import Path

from .checkpoint import load_checkpoint
from .errors import shown
from .files import write_bytes_atomically

RUNS = Path("runs")  # where a run without --out gets its own folder
RUN_FILES = ("last.npz", "best.npz", "metrics.json")  # a folder holding any of them holds a run
LOCK_FILE = ".lock"  # in a run folder while a `train` writes there: the holder's process id
# What an interrupted write of a run file leaves: the dot-name with the writer's pid that
# files.write_atomically renames into place when done.
TEMPORARY = re.compile(r"\.(?:" + "|".join(re.escape(name) for name in RUN_FILES) + r")\.tmp-\d+")


def _note(text):
    print(f"note: {text}", file=sys.stderr)


# ----- naming a run ---------------------------------------------------------------------------------

def follow_latest(path):
    """`path` with runs/latest replaced by the run folder it names, so that messages name the real folder.

    runs/latest is a symlink, or a text file holding the folder's name where symlinks are not allowed. One
    that points at nothing (its run's folder was removed or moved since) is a FileNotFoundError naming both.
    """
    path = Path(path)
    for depth in range(1, len(path.parts) + 1):
        prefix = Path(*path.parts[:depth])
        if prefix.name != "latest":
            continue
        target = prefix.parent / os.readlink(prefix) if prefix.is_symlink() else _folder_named_in(prefix)
        if target is None:
            continue
        if not target.exists():
            raise FileNotFoundError(f"{shown(prefix, quoted=False)} points at {shown(target, quoted=False)}, which "
                                    "no longer exists (its run was removed or moved; the next `minicnn train` "
                                    "points it at its own)")
        return target.joinpath(*path.parts[depth:])
    return path


def _folder_named_in(latest):
    """The run folder a text file `latest` names (where symlinks cannot be made; it may be gone since), or None
    when `latest` is anything else: a checkpoint someone named 'latest', a file that is not one short line of
    text, a line that names a file."""
    try:
        if not latest.is_file() or latest.stat().st_size > 4096:
            return None
        name = latest.read_text(encoding="utf-8").strip()
        folder = latest.parent / name
        if not name or not name.isprintable() or (folder.exists() and not folder.is_dir()):
            return None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return folder


def read_checkpoint(path):
    """The checkpoint.Checkpoint in the file at `path` (resolved already): a .npz by load_checkpoint, an .onnx
    file by minicnn.onnx.read (the `onnx` extra, imported only for such a file)."""
    if Path(path).suffix.lower() == ".onnx":
        from .onnx import read

        return read(path)
    return load_checkpoint(path)


def resolve_checkpoint(path):
    """The checkpoint file a path names: a run folder means its best.npz; runs/latest is followed (even where
    it is a text file). A file (.npz, .onnx) is itself."""
    path = follow_latest(path)
    return path / "best.npz" if path.is_dir() else path


# ----- making and checking a run folder ---------------------------------------------------------------

def resume_checkpoint(folder):
    """The checkpoint --resume reads in a run folder: last.npz (it continues from there), else best.npz (written
    before the first last.npz, so the run starts again from epoch 1 with its settings), else None."""
    folder = Path(folder)
    return next((folder / name for name in ("last.npz", "best.npz") if (folder / name).is_file()), None)


def check_out_folder(out, overwrite):
    """Refuse an --out folder that holds a run, unless --overwrite; say whether --resume can continue it."""
    held = [name for name in RUN_FILES if (out / name).exists()]
    if not held or overwrite:
        return
    resumable = resume_checkpoint(out)
    if resumable is None:
        choices = "or add --overwrite to replace it (it holds no checkpoint to continue)"
    elif resumable.name == "best.npz":
        choices = (f"add --overwrite to replace it, or continue it with --resume {out} (no last.npz there yet: "
                   "it starts again from epoch 1)")
    else:
        choices = f"add --overwrite to replace it, or continue it with --resume {out}"
    raise ValueError(f"--out {out} already holds a run ({', '.join(held)}); choose another --out, leave --out "
                     f"out for a fresh folder under {RUNS}/, {choices}")


def made_and_writable(folder, flag):
    """Make `folder` (and its parents) and write and remove a probe file in it, so a folder that cannot hold
    the run is refused before any work, naming `flag`. Returns whether the folder was made here."""
    made = not folder.is_dir()
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"minicnn")
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {folder}: cannot make or write this folder "
                         f"({error.strerror or error}{f': {error.filename}' if error.filename else ''})") from None
    return made


class RunLock:
    """An exclusive lock on a run folder while a `train` writes there: folder/.lock holds the holder's pid.

    The lock itself is an flock on that file, which the system drops when its process dies, however it dies;
    so a .lock whose flock is free was left by a process that is gone, and is taken over (with a note).
    """

    def __init__(self, folder, flag):
        self.folder, self.flag, self.path, self.file = folder, flag, folder / LOCK_FILE, None

    def __enter__(self):
        while True:
            file = open(self.path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process
                holder = self._holder(file)
                file.close()
                raise ValueError(f"{self.flag} {self.folder} is in use by another minicnn train "
                                 f"(process {holder or 'unknown'}, which holds {self.path}); wait for it to end, "
                                 f"or choose another folder") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            file.close()  # the holder removed the file between our open and our flock: lock the new one
        previous = self._holder(file)
        if previous is not None:
            _note(f"{self.path} was left by process {previous}, which has ended; taking the lock over")
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exception):
        try:
            self.path.unlink(missing_ok=True)  # while still holding the flock, so no one locks the old file
        except OSError:
            # A folder made read-only (or a full file system) mid-run: the .lock stays, and as its flock ends
            # with this process the next train takes it over. The error that ended the run is the one to show.
            pass
        finally:
            self.file.close()

    @staticmethod
    def _holder(file):
        file.seek(0)
        text = file.read(64).strip()
        return text or None


def remove_temporaries(folder):
    """Remove the temporary files an interrupted write left in a run folder (run with its lock held)."""
    left = sorted(path for path in folder.iterdir() if TEMPORARY.fullmatch(path.name))
    for path in left:
        path.unlink(missing_ok=True)
    if left:
        _note(f"removed {len(left)} temporary file{'s' if len(left) > 1 else ''} an interrupted run left in "
              f"{folder}: {', '.join(path.name for path in left)}")


@contextlib.contextmanager
def run_folder(folder, flag):
    """`folder` made, checked writable, locked and cleared of temporaries while the block runs.

    A folder made here that is still empty at the end (the run failed before writing) is removed again.
    flag names the folder in errors ('--out', '--resume', 'the run folder').
    """
    made = made_and_writable(folder, flag)
    try:
        with RunLock(folder, flag):
            remove_temporaries(folder)
            yield folder
    finally:
        with contextlib.suppress(OSError):  # a folder that cannot be removed stays; the run's own error is shown
            if made and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def fresh_run_folder(model, root=RUNS):
    """Make and return root/<model>-<YYYYmmdd>-<n>, n the first number not yet taken; point root/latest at it.

    root/latest is a relative symlink; where symlinks cannot be made it is a text file
    holding the folder's name, which the commands follow too. A `latest` that is a real
    folder (an earlier version's default) is left alone.
    """
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{model}-{datetime.date.today():%Y%m%d}"
    number = 1
    while True:
        folder = root / f"{stem}-{number}"
        try:
            folder.mkdir()  # fails if it exists, so two runs started at once never share a folder
            break
        except FileExistsError:
            number += 1
    point_latest(folder, root)
    return folder


def point_latest(folder, root=RUNS):
    """Point root/latest at `folder`, the run a `train` writes: a fresh folder, --out or --resume.

    Inside root the link is relative (root/latest -> cnn-20250101-2), elsewhere absolute. A run outside
    root makes no root folder of its own: latest moves only where root already exists. A `latest` that is a
    real folder (an earlier version's default) is left alone, with a note.
    """
    folder, root = Path(folder), Path(root)
    if not root.is_dir():
        return
    latest = root / "latest"
    if latest.is_dir() and not latest.is_symlink():
        _note(f"{latest} is a folder of an earlier run, left as it is; it does not point at {folder}")
        return
    target = folder.resolve()
    inside = target.parent == root.resolve()
    name = target.name if inside else str(target)
    if target == latest.resolve() and latest.is_symlink():
        return  # already there (a resumed run reached through runs/latest)
    # A new link beside it, renamed over it: `latest` always names a run, even if this is interrupted.
    temporary = root / f".latest.tmp-{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        try:
            temporary.symlink_to(name, target_is_directory=True)
            os.replace(temporary, latest)
        except OSError:
            temporary.unlink(missing_ok=True)
            write_bytes_atomically(latest, (name + "\n").encode())
    except OSError as error:  # a read-only runs folder: the run itself can still be written
        _note(f"{latest} could not be pointed at {folder} ({error.strerror or error}); it is left as it was")
