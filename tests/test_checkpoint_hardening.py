"""Checkpoints crafted to hurt: each builds its own malicious file and expects one CheckpointError line,
quickly and with little memory (issue 16). Nothing here allocates what a file declares."""

import io
import json
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minicnn import CheckpointError, nn, optim
from minicnn.checkpoint import load_checkpoint, save_checkpoint
from special_files import KINDS, SAYS, raised_within, special_path

MEMORY_BUDGET = 64 * 2**20  # bytes Python and NumPy may allocate while refusing a file


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write(path, members, compression=zipfile.ZIP_STORED):
    """A .npz from {member name: bytes}: a minicnn checkpoint's format and version first."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("format.npy", _npy(np.array("minicnn-checkpoint")))
        archive.writestr("version.npy", _npy(np.array(1)))
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def _members_of(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()
                if info.filename not in ("format.npy", "version.npy")}


def _refused(path, match, **kwargs):
    """load_checkpoint(path) raises CheckpointError matching `match`, naming the file, within the memory budget."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match) as caught:
            load_checkpoint(path, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert peak < MEMORY_BUDGET, f"{peak / 2**20:.0f} MiB allocated before refusing"
    return message


def _with_architecture(tmp_path, layers, name="c.npz"):
    """A real small checkpoint (a Dense(2, 2)) whose architecture entry is replaced by `layers`."""
    real = save_checkpoint(tmp_path / "real.npz", nn.Sequential(nn.Dense(2, 2)))
    members = _members_of(real)
    members["architecture.npy"] = _npy(np.array(json.dumps({"type": "Sequential", "config": {"layers": layers}})))
    return _write(tmp_path / name, members)


ARCHITECTURE_BOMBS = {
    "dense_1e9": ([{"type": "Dense", "config": {"in_features": 10**9, "out_features": 10**9}}], "shape"),
    "dense_20000": ([{"type": "Dense", "config": {"in_features": 20000, "out_features": 20000}}], "shape"),
    "dense_1e30": ([{"type": "Dense", "config": {"in_features": 10**30, "out_features": 2}}], "in_features must be"),
    "conv_kernel_100000": ([{"type": "Conv2D", "config": {"in_channels": 1, "out_channels": 2,
                                                          "kernel_size": 100000}}], "kernel_size must be"),
    "conv_kernel_4096": ([{"type": "Conv2D", "config": {"in_channels": 64, "out_channels": 64,
                                                        "kernel_size": 4096}}], "shape"),
    "dense_0": ([{"type": "Dense", "config": {"in_features": 0, "out_features": 0}}], "in_features must be"),
    "conv_in_0": ([{"type": "Conv2D", "config": {"in_channels": 0, "out_channels": 2, "kernel_size": 3}}],
                  "in_channels must be"),
    "conv_padding_negative": ([{"type": "Conv2D", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 3,
                                                             "padding": -1}}], "padding must be"),
    "pool_0": ([{"type": "MaxPool2D", "config": {"pool_size": 0}}], "pool_size must be"),
    "float_size": ([{"type": "Dense", "config": {"in_features": 2.5, "out_features": 2}}], "in_features must be"),
    "batch_norm_huge": ([{"type": "BatchNorm1D", "config": {"num_features": 2**31 - 1}}], "shape|missing"),
    "batch_norm_nan_eps": ([{"type": "BatchNorm1D", "config": {"num_features": 2, "eps": float("nan")}}],
                           "eps must be"),
    "input_shape": ([{"type": "Sequential", "config": {"layers": [], "input_shape": "abc"}}], "input_shape"),
}


@pytest.mark.parametrize("layers, match", ARCHITECTURE_BOMBS.values(), ids=ARCHITECTURE_BOMBS.keys())
def test_absurd_architectures_are_refused_before_allocating(tmp_path, layers, match):
    _refused(_with_architecture(tmp_path, layers), match)


def test_layers_check_their_arguments_naming_the_layer():
    for make, match in [(lambda: nn.Dense(0, 3), "Dense: in_features"), (lambda: nn.Conv2D(1, 0, 3), "Conv2D: out_"),
                        (lambda: nn.Conv2D(1, 2, (3, 0)), "Conv2D: kernel_size"),
                        (lambda: nn.Linear(3, -1), "Linear: out_features"),
                        (lambda: nn.AvgPool2D(2, stride=0), "AvgPool2D: stride"),
                        (lambda: nn.BatchNorm2D(0), "BatchNorm2D: num_features")]:
        with pytest.raises(ValueError, match=match):
            make()


def test_skeleton_takes_no_memory_and_build_fills_it_from_arrays():
    description = {"type": "Sequential", "config": {"layers": [
        {"type": "Dense", "config": {"in_features": 10**6, "out_features": 10**5}},
        {"type": "BatchNorm1D", "config": {"num_features": 10**5}}]}}  # 400 GB of weights if allocated
    tracemalloc.start()
    model = nn.skeleton(description)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20 and nn.state_shapes(model)["0.weight"] == (10**6, 10**5)
    small = nn.Sequential(nn.Dense(3, 2), nn.BatchNorm1D(2))
    weights = {name: np.full(array.shape, 0.5) for name, array in small.state_dict().items()}
    rebuilt = nn.build(nn.describe(small), weights=weights)
    assert all(np.all(array == 0.5) and array.dtype == np.float32 and array.flags.writeable
               for array in rebuilt.state_dict().values())
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        nn.build(nn.describe(small), weights={**weights, "0.weight": np.zeros((2, 3))})


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("entry", ["state", "architecture", "optimizer", "schedule"])
def test_deeply_nested_json_is_refused_without_recursion(tmp_path, entry):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2))
    members = _members_of(real)
    members[f"{entry}.npy"] = _npy(np.array('{"a": ' + _deep(100_000) + ', "b": "[[[["}'))
    _refused(_write(tmp_path / "deep.npz", members), f"entry '{entry}' nests 100001 levels")


@pytest.mark.parametrize("entry, value, match", [
    ("state", "[1, 2]", "entry 'state' must be a JSON object, got list"),
    ("state", '{"epoch": "three"}', "'epoch' must be an int >= 0"),
    ("state", '{"run": [1]}', "'run' must be null or an object"),
    ("state", '{"run": {"dataset": 7}}', "entry 'state.run': 'dataset' must be a string"),
    ("state", '{"history": {"loss": [1, "x"]}}', "'history' must be"),
    ("state", '{"cpu_rng": {"bit_generator": "MT19937"}}', "'cpu_rng' is not a state"),
    ("optimizer", '"SGD"', "entry 'optimizer' must be a JSON object"),
    ("optimizer", '{"lr": 1}', "entry 'optimizer' has no 'type'"),
    ("schedule", "3", "entry 'schedule' must be a JSON object"),
    ("architecture", '{"type": "Sequential", "config": {"layers": 5}}', "cannot rebuild the model"),
    ("architecture", '"os.system"', "cannot rebuild the model"),
])
def test_json_entries_of_the_wrong_shape_are_refused(tmp_path, entry, value, match):
    real = save_checkpoint(tmp_path / "real.npz", nn.Sequential(nn.Dense(2, 2)))
    members = _members_of(real)
    members[f"{entry}.npy"] = _npy(np.array(value))
    _refused(_write(tmp_path / "bad.npz", members), match)


@pytest.mark.parametrize("name, content, match", [
    ("model/weight.npy", b"\x00" * 64, "entry 'model/weight' is not a .npy array"),
    ("model/weight.npy", b"", "entry 'model/weight' is not a .npy array"),
    ("optimizer/velocities.npy", _npy(np.zeros(2)), "member 'optimizer/velocities.npy' is not an entry"),
    ("optimizer/a/b/c.npy", _npy(np.zeros(2)), "is not an entry"),
    ("optimizer/velocities/x.npy", _npy(np.zeros(2)), "is not an entry"),
    ("notes.txt", b"hello", "member 'notes.txt' is not an entry"),
    ("model/weight.npy", _npy(np.zeros((2, 2), dtype="U3")), "not a number type"),
])
def test_members_that_are_not_arrays_or_have_odd_names_are_refused(tmp_path, name, content, match):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2, bias=False), optim.SGD(nn.Dense(2, 2).parameters(), 0.1))
    members = _members_of(real)
    members[name] = content
    _refused(_write(tmp_path / "bad.npz", members), match, model=nn.Dense(2, 2, bias=False))


def _lie_about_size(path, member, size):
    """Rewrite the uncompressed size that the zip declares for `member` (local and central headers)."""
    content = bytearray(path.read_bytes())
    name = member.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = content.index(signature + b"", content.index(signature) if signature == b"PK\x03\x04" else 0)
        while True:
            start = content.index(signature, start)
            header_name = content[start + (30 if signature == b"PK\x03\x04" else 46):][: len(name)]
            if header_name == name:
                struct.pack_into("<I", content, start + offset, size)
                break
            start += 4
    path.write_bytes(bytes(content))


def test_a_member_declaring_2_gib_is_refused_before_decompressing(tmp_path):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2, bias=False))
    members = _members_of(real)
    path = _write(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    _lie_about_size(path, "model/weight.npy", 2**31)
    _refused(path, r"the archive declares 2147483648 bytes but its .npy header declares shape \(2, 2\)")


def test_a_header_declaring_a_huge_shape_is_refused_before_reading(tmp_path):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2, bias=False))
    members = _members_of(real)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (2**29,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    members["model/weight.npy"] = buffer.getvalue() + b"\x00" * 16  # the header says 2 GiB, the member holds 16 B
    path = _write(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    _lie_about_size(path, "model/weight.npy", len(buffer.getvalue()) + 2**31)
    _refused(path, r"'weight' has shape \(536870912,\) in the state but \(2, 2\)", model=nn.Dense(2, 2, bias=False))


def test_a_deflated_member_that_expands_past_its_declared_size_is_cut_and_refused(tmp_path):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2, bias=False))
    members = _members_of(real)
    members["model/weight.npy"] = members["model/weight.npy"] + b"\x00" * (32 * 2**20)  # 32 MiB of zeros, deflated
    path = _write(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    _lie_about_size(path, "model/weight.npy", len(_npy(np.zeros((2, 2), np.float32))))
    _refused(path, "damaged")


def test_a_json_entry_declaring_more_than_its_cap_is_refused(tmp_path):
    real = save_checkpoint(tmp_path / "real.npz", nn.Dense(2, 2))
    members = _members_of(real)
    members["schedule.npy"] = _npy(np.array("{}" + " " * 300_000))
    _refused(_write(tmp_path / "big.npz", members, zipfile.ZIP_DEFLATED), "entry 'schedule' declares")


def test_a_real_compressed_checkpoint_still_loads(tmp_path):
    model = nn.Sequential(nn.Dense(3, 2), nn.BatchNorm1D(2))
    real = save_checkpoint(tmp_path / "real.npz", model, state={"epoch": 1})
    path = _write(tmp_path / "compressed.npz", _members_of(real), zipfile.ZIP_DEFLATED)
    loaded = load_checkpoint(path)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[name], array)


# ----- regular files only ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    # A FIFO blocked load_checkpoint in open(); a folder raised IsADirectoryError.
    path = special_path(kind, tmp_path, "model.npz")
    error = raised_within(lambda: load_checkpoint(path), path)
    assert isinstance(error, CheckpointError), repr(error)
    message = str(error)
    assert str(path) in message and SAYS[kind] in message and "not a regular file" in message
    assert "\n" not in message


def test_minicnn_evaluate_on_a_fifo_ends_in_one_line(tmp_path):
    path = special_path("fifo", tmp_path, "best.npz")
    # The timeout ends a command blocked on the FIFO (subprocess.run kills it), failing the test.
    done = subprocess.run([sys.executable, "-m", "minicnn", "evaluate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "a FIFO" in done.stderr and str(path) in done.stderr


# ----- names from the file shown escaped and cut ------------------------------------------------------
FORGED = "\n\x1b[2J\x1b[32mcheckpoint loaded" + "z" * 200


def test_entry_names_are_shown_escaped_and_cut(tmp_path):
    # A newline or a terminal escape in an entry's name cannot forge lines on the user's terminal.
    members = _members_of(save_checkpoint(tmp_path / "real.npz", nn.Sequential(nn.Dense(2, 2))))
    members[f"model/w{FORGED}.npy"] = b"not an array"
    message = _refused(_write(tmp_path / "c.npz", members), r"entry 'model/w\\n\\x1b\[2J.*\.\.\. is not a \.npy array",
                       model=nn.Sequential(nn.Dense(2, 2)))
    assert "\x1b" not in message and len(message) < 400


def test_a_layer_from_the_file_is_shown_escaped_and_cut(tmp_path):
    path = _with_architecture(tmp_path, [{"type": f"Dense{FORGED}", "config": {"in_features": 2, "x" * 9000: 1}}])
    message = _refused(path, r"different architecture: layer 0: checkpoint has 'Dense\\n\\x1b",
                       model=nn.Sequential(nn.Dense(2, 2)))
    assert "\x1b" not in message and len(message) < 1000
