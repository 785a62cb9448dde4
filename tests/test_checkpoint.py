"""Tests for architecture configs (nn) and minicnn.checkpoint: round trips, devices, errors, atomic writes."""

import inspect
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import minicnn
from minicnn import CheckpointError, models, nn, optim
from minicnn import functional as F
from minicnn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from conftest import to_host

# ----- architecture configs ---------------------------------------------------------------------------

LAYERS = {
    "conv": lambda: nn.Conv2D(3, 8, (5, 3), stride=(2, 1), padding=1, bias=False, init="glorot"),
    "conv_defaults": lambda: nn.Conv2D(1, 32, 3),
    "dense": lambda: nn.Dense(7, 4, bias=False, init="he"),
    "dense_defaults": lambda: nn.Dense(7, 4),
    "max_pool": lambda: nn.MaxPool2D(3, stride=2, padding=1),
    "max_pool_defaults": lambda: nn.MaxPool2D(),
    "avg_pool": lambda: nn.AvgPool2D((2, 3), stride=(1, 2)),
    "flatten": nn.Flatten,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "dropout": lambda: nn.Dropout(0.3),
    "batch_norm_1d": lambda: nn.BatchNorm1D(6, momentum=0.2, eps=1e-3),
    "batch_norm_2d": lambda: nn.BatchNorm2D(4),
    "softmax": lambda: nn.Softmax(axis=1),
    "linear": lambda: nn.Linear(5, 3, bias=False),
    "max_pool_pytorch": lambda: nn.MaxPool2d(3, 2, 1),
    "avg_pool_pytorch": lambda: nn.AvgPool2d(2),
    "global_avg_pool": nn.GlobalAvgPool2D,
    "adaptive_avg_pool": lambda: nn.AdaptiveAvgPool2d(1),
    "identity": nn.Identity,
    "basic_block": lambda: nn.BasicBlock(4, 8, stride=2),
    "resnet": lambda: models.resnet(8, num_classes=3),
}


def test_every_built_in_layer_is_registered_and_tested():
    assert set(nn.ARCHITECTURES) == {
        "Conv2D", "Dense", "MaxPool2D", "AvgPool2D", "Flatten", "ReLU", "Sigmoid", "Tanh", "Dropout",
        "BatchNorm1D", "BatchNorm2D", "Sequential", "Softmax", "Linear", "MaxPool2d", "AvgPool2d",
        "GlobalAvgPool2D", "AdaptiveAvgPool2d", "Identity", "BasicBlock", "ResNet",
    }
    tested = {type(make()).__name__ for make in LAYERS.values()}
    assert tested == set(nn.ARCHITECTURES) - {"Sequential"}


@pytest.mark.parametrize("make_layer", LAYERS.values(), ids=LAYERS.keys())
def test_layer_config_round_trip(make_layer):
    layer = make_layer()
    config = layer.config()
    assert json.loads(json.dumps(config)) == config  # JSON-able, unchanged by the trip
    arguments = list(inspect.signature(type(layer)).parameters)
    assert list(config) == arguments  # every constructor argument, in order
    rebuilt = type(layer)(**config)
    assert rebuilt.config() == config
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in layer.parameters()]


def test_conv2d_config_lists_its_arguments():
    assert nn.Conv2D(1, 32, 3).config() == {
        "in_channels": 1, "out_channels": 32, "kernel_size": [3, 3], "stride": [1, 1], "padding": [0, 0],
        "bias": True, "init": "auto",
    }


def _nested_model():
    """(N, 1, 8, 8) -> (N, 3): every kind of layer, a nested Sequential, batch norm buffers."""
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1),
        nn.BatchNorm2D(4),
        nn.ReLU(),
        nn.Sequential(nn.MaxPool2D(2), nn.AvgPool2D(2, stride=1, padding=1)),
        nn.Flatten(),
        nn.Dense(4 * 5 * 5, 6),
        nn.BatchNorm1D(6),
        nn.Tanh(),
        nn.Dropout(0.25),
        nn.Dense(6, 3),
        nn.Sigmoid(),
    )


def test_sequential_config_round_trip_with_nesting():
    model = _nested_model()
    config = model.config()
    assert nn.describe(model) == {"type": "Sequential", "config": config}
    assert [entry["type"] for entry in config["layers"]][:4] == ["Conv2D", "BatchNorm2D", "ReLU", "Sequential"]
    assert config["layers"][3]["config"]["layers"][1] == {
        "type": "AvgPool2D", "config": {"pool_size": [2, 2], "stride": [1, 1], "padding": [1, 1]},
    }
    text = json.dumps(config)
    rebuilt = nn.Sequential.from_config(json.loads(text))
    assert rebuilt.config() == config
    assert [type(layer) for layer in rebuilt] == [type(layer) for layer in model]
    assert isinstance(rebuilt[3], nn.Sequential)
    assert {name: p.shape for name, p in rebuilt.named_parameters()} == {name: p.shape for name, p in model.named_parameters()}


def test_from_config_rejects_unknown_layer_types():
    config = nn.Sequential(nn.Dense(3, 2), nn.ReLU()).config()
    config["layers"][1]["type"] = "os.system"
    with pytest.raises(ValueError, match=r"layer 1: unknown type 'os.system'; known types: AdaptiveAvgPool2d, AvgPool2D, AvgPool2d, .*Tanh"):
        nn.Sequential.from_config(config)


def test_from_config_rejects_an_unknown_type_inside_a_nested_sequential():
    config = nn.Sequential(nn.Flatten(), nn.Sequential(nn.ReLU(), nn.Dense(2, 2))).config()
    config["layers"][1]["config"]["layers"][0]["type"] = "Swish"
    with pytest.raises(ValueError, match=r"layer 1: Sequential cannot be built.*layer 0: unknown type 'Swish'"):
        nn.Sequential.from_config(config)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"layer": []}, r"expected \{'layers': \[...\]\}"),
        ([], r"expected \{'layers': \[...\]\}"),
        ({"layers": ["ReLU"]}, r"layer 0: expected \{'type': name, 'config'"),
        ({"layers": [{"type": "Dropout", "config": {"p": 2.0}}]}, r"layer 0: Dropout cannot be built.*p must lie in"),
        ({"layers": [{"type": "ReLU", "config": {"size": 3}}]}, r"layer 0: ReLU cannot be built.*size"),
    ],
    ids=["no_layers", "not_a_dict", "bare_name", "bad_value", "unknown_argument"],
)
def test_from_config_rejects_malformed_configs(config, message):
    with pytest.raises(ValueError, match=message):
        nn.Sequential.from_config(config)


class _Custom(nn.Module):
    """A custom Module without config(): (N, 4) -> (N, 2)."""

    def __init__(self, hidden=3):
        super().__init__()
        self.first = nn.Dense(4, hidden)
        self.second = nn.Dense(hidden, 2)

    def forward(self, x):
        return self.second(F.relu(self.first(x)))


def test_module_without_config_explains_that_weights_can_still_be_saved():
    with pytest.raises(NotImplementedError, match="_Custom has no architecture description.*weights can still be saved"):
        _Custom().config()


def test_sequential_with_an_unregistered_layer_has_no_config():
    class MyReLU(nn.ReLU):
        pass

    for layer in (_Custom(), MyReLU()):
        with pytest.raises(NotImplementedError, match="layer 1: .* is not one of the registered architecture types"):
            nn.Sequential(nn.Dense(4, 4), layer).config()


# ----- checkpoint round trips ---------------------------------------------------------------------------

def _batch(device, seed=0):
    rng = np.random.default_rng(seed)
    images = minicnn.tensor(rng.standard_normal((6, 1, 8, 8)), device=device, dtype=np.float32)
    return images, np.array([0, 1, 2, 0, 1, 2])


def _train(model, optimizer, images, labels, steps, schedule=None):
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def _trained(device, make_optimizer=lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)):
    """A nested model, its optimizer and a schedule after 3 steps on `device`."""
    model = _nested_model().to(device)
    optimizer = make_optimizer(model.parameters())
    schedule = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    images, labels = _batch(device)
    _train(model, optimizer, images, labels, 3, schedule)
    return model, optimizer, schedule


TRAINING_STATE = {"epoch": 3, "step": 17, "history": {"loss": [2.5, 1.25, float("nan")], "accuracy": [0.5, 0.75]},
                  "seed": 2 ** 70, "note": "résumé", "best": None, "flags": [True, False]}


def _assert_same_state(loaded, saved):
    assert loaded.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(to_host(loaded[key]), to_host(saved[key]), err_msg=key)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01),
], ids=["sgd", "adam"])
def test_checkpoint_round_trip_continues_training_bitwise(tmp_path, device, make_optimizer):
    model, optimizer, schedule = _trained(device, make_optimizer)
    path = save_checkpoint(tmp_path / "run" / "last.npz", model, optimizer, schedule, TRAINING_STATE)
    assert path == tmp_path / "run" / "last.npz" and path.exists()
    assert sorted(os.listdir(tmp_path / "run")) == ["last.npz"]  # no temporary file left, no second suffix

    twin = _nested_model().to(device)
    twin_optimizer = make_optimizer(twin.parameters())
    twin_schedule = optim.StepLR(twin_optimizer, step_size=2, gamma=0.5)
    loaded = load_checkpoint(path, twin, twin_optimizer, twin_schedule)
    assert isinstance(loaded, Checkpoint) and loaded.model is twin and loaded.path == path
    _assert_same_state(twin.state_dict(), model.state_dict())  # batch norm buffers included
    assert loaded.architecture == nn.describe(model)
    assert math.isnan(loaded.state["history"]["loss"][2])
    assert {k: v for k, v in loaded.state.items() if k != "history"} == {k: v for k, v in TRAINING_STATE.items() if k != "history"}
    assert loaded.optimizer_state["type"] == type(optimizer).__name__
    assert loaded.schedule_state == schedule.state_dict()
    assert twin_schedule.last_epoch == 3 and twin_optimizer.lr == optimizer.lr

    images, labels = _batch(device, seed=1)
    minicnn.manual_seed(5)  # the same dropout masks for both runs
    _train(model, optimizer, images, labels, 3, schedule)
    minicnn.manual_seed(5)
    _train(twin, twin_optimizer, images, labels, 3, twin_schedule)
    _assert_same_state(twin.state_dict(), model.state_dict())


def test_model_rebuilt_from_the_architecture_gives_identical_outputs(tmp_path, device):
    model, _, _ = _trained(device)
    save_checkpoint(tmp_path / "model.npz", model)
    loaded = load_checkpoint(tmp_path / "model.npz")
    assert loaded.optimizer_state is None and loaded.schedule_state is None and loaded.state == {}
    rebuilt = loaded.model.to(device)
    assert rebuilt.config() == model.config()
    images, _ = _batch(device, seed=2)
    model.eval(), rebuilt.eval()
    np.testing.assert_array_equal(to_host(rebuilt(images)), to_host(model(images)))


def test_file_loads_with_plain_numpy_without_pickle(tmp_path):
    model, optimizer, schedule = _trained("cpu")
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, schedule, {"epoch": 3})
    with np.load(path, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    assert str(entries["format"]) == "minicnn-checkpoint" and int(entries["version"]) == 1
    assert json.loads(str(entries["architecture"])) == nn.describe(model)
    assert json.loads(str(entries["state"])) == {"epoch": 3}
    assert json.loads(str(entries["schedule"]))["type"] == "StepLR"
    assert json.loads(str(entries["optimizer"]))["velocities"] == [None] * len(model.parameters())
    np.testing.assert_array_equal(entries["optimizer/velocities/0"], optimizer.velocities[0])
    np.testing.assert_array_equal(entries["model/1.running_var"], model[1].running_var)
    assert {key[len("model/"):] for key in entries if key.startswith("model/")} == set(model.state_dict())
    assert all(array.dtype != object for array in entries.values())


def test_checkpoint_moves_between_devices(tmp_path, device):
    """Saved on `device`, loaded into a CPU model; saved on the CPU, loaded into a `device` model."""
    for source, target in ((device, "cpu"), ("cpu", device)):
        model, optimizer, _ = _trained(source)
        path = save_checkpoint(tmp_path / f"{source}.npz", model, optimizer)
        twin = _nested_model().to(target)
        twin_optimizer = optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        load_checkpoint(path, twin, twin_optimizer)
        assert twin.device == target
        assert all(minicnn.backend.device_of(buffer) == target for buffer in twin.buffers())
        assert all(minicnn.backend.device_of(v) == target for v in twin_optimizer.velocities)
        _assert_same_state(twin.state_dict(), model.state_dict())


def test_custom_module_without_config_saves_weights_only(tmp_path):
    model = _Custom()
    save_checkpoint(tmp_path / "custom.npz", model)
    with np.load(tmp_path / "custom.npz", allow_pickle=False) as archive:
        assert "architecture" not in archive.files
    twin = _Custom()
    assert load_checkpoint(tmp_path / "custom.npz", model=twin).architecture is None
    _assert_same_state(twin.state_dict(), model.state_dict())


def test_state_must_be_json_able(tmp_path):
    model = nn.Dense(2, 2)
    save_checkpoint(tmp_path / "ok.npz", model, state={"accuracy": np.float32(0.5), "epoch": np.int64(2)})
    assert load_checkpoint(tmp_path / "ok.npz", model).state == {"accuracy": 0.5, "epoch": 2}
    with pytest.raises(TypeError, match="training state must be JSON-able.*ndarray"):
        save_checkpoint(tmp_path / "bad.npz", model, state={"weights": np.ones(3)})
    assert not (tmp_path / "bad.npz").exists()


# ----- files that are not checkpoints ------------------------------------------------------------------------

def _real_checkpoint(tmp_path):
    model, optimizer, _ = _trained("cpu")
    return save_checkpoint(tmp_path / "real.npz", model, optimizer, state={"epoch": 3})


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nowhere.npz"):
        load_checkpoint(tmp_path / "nowhere.npz")


@pytest.mark.parametrize(
    "content, message",
    [
        (np.random.default_rng(0).bytes(500), "is not a minicnn checkpoint: it is not a .npz"),
        (b"epoch,loss\n1,0.5\n", "is not a minicnn checkpoint: it is not a .npz"),
        (b"", "is not a minicnn checkpoint: it is not a .npz"),
    ],
    ids=["random_bytes", "text", "empty"],
)
def test_file_that_is_not_an_npz_raises(tmp_path, content, message):
    path = tmp_path / "weights.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"'{path}' {message}"):
        load_checkpoint(path, nn.Dense(2, 2))


def test_truncated_checkpoint_raises(tmp_path):
    path = _real_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is damaged or truncated"):
        load_checkpoint(path)


def test_checkpoint_with_a_corrupted_member_raises(tmp_path):
    path = _real_checkpoint(tmp_path)
    content = bytearray(path.read_bytes())
    offset = content.index(b"model/0.weight.npy") + 200  # inside that member's data: its CRC fails
    content[offset:offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="is damaged or truncated"):
        load_checkpoint(path)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as file:  # NumPy pickles object arrays by default
        np.savez(file, format=np.array("minicnn-checkpoint"), version=np.array(1),
                 state=np.array([{"epoch": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="holds pickled objects, which minicnn never loads"):
        load_checkpoint(path, nn.Dense(2, 2))


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    with open(path, "wb") as file:
        np.save(file, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(path)


def test_npz_without_format_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weight=np.ones((2, 2)))
    with pytest.raises(CheckpointError, match="is not a minicnn checkpoint: no 'format' entry"):
        load_checkpoint(path, nn.Dense(2, 2))


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"format": np.array("keras")}, "its format is .*'keras'"),
        ({"format": np.array("minicnn-checkpoint"), "version": np.array(2)}, "version 2 checkpoint; this minicnn reads version 1"),
        ({"format": np.array("minicnn-checkpoint")}, "no valid 'version' entry"),
        ({"format": np.array("minicnn-checkpoint"), "version": np.array(1), "state": np.array("{epoch: 1")},
         "entry 'state' is not valid JSON"),
    ],
    ids=["other_format", "other_version", "no_version", "bad_json"],
)
def test_wrong_format_version_or_json_is_refused(tmp_path, entries, message):
    path = tmp_path / "other.npz"
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, nn.Dense(2, 2))


# ----- checkpoints that do not fit ---------------------------------------------------------------------------

def test_architecture_mismatch_names_the_layer(tmp_path):
    save_checkpoint(tmp_path / "c.npz", nn.Sequential(nn.Conv2D(1, 32, 3), nn.ReLU(), nn.Flatten()))
    with pytest.raises(
        CheckpointError,
        match=r"different architecture: layer 0: checkpoint has Conv2D\(in_channels=1, out_channels=32, "
              r"kernel_size=\[3, 3\].*\), model has Conv2D\(in_channels=1, out_channels=16, ",
    ):
        load_checkpoint(tmp_path / "c.npz", nn.Sequential(nn.Conv2D(1, 16, 3), nn.ReLU(), nn.Flatten()))


def test_architecture_mismatch_inside_a_nested_sequential_and_in_length(tmp_path):
    save_checkpoint(tmp_path / "c.npz", nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dense(4, 3), nn.Tanh())))
    with pytest.raises(CheckpointError, match=r"layer 1.1: checkpoint has Tanh\(\), model has Sigmoid\(\)"):
        load_checkpoint(tmp_path / "c.npz", nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dense(4, 3), nn.Sigmoid())))
    with pytest.raises(CheckpointError, match=r"layer 2: checkpoint has no layer there, model has ReLU\(\)"):
        load_checkpoint(tmp_path / "c.npz", nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dense(4, 3), nn.Tanh()), nn.ReLU()))


def test_shape_mismatch_without_config_names_the_weight(tmp_path):
    save_checkpoint(tmp_path / "custom.npz", _Custom(hidden=3))
    with pytest.raises(CheckpointError, match=r"does not fit the _Custom: .*'first.weight' has shape \(4, 3\) in the state but \(4, 5\)"):
        load_checkpoint(tmp_path / "custom.npz", _Custom(hidden=5))


def test_missing_weights_are_named(tmp_path):
    save_checkpoint(tmp_path / "dense.npz", nn.Dense(4, 2, bias=False))
    with pytest.raises(CheckpointError, match=r"missing: \['bias'\]"):
        load_checkpoint(tmp_path / "dense.npz", _DenseWithBias())


class _DenseWithBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.zeros((4, 2)))
        self.bias = nn.Parameter(np.zeros(2))


def test_no_architecture_and_no_model_asks_for_a_model(tmp_path):
    save_checkpoint(tmp_path / "custom.npz", _Custom())
    with pytest.raises(CheckpointError, match=r"holds no architecture.*load_checkpoint\(path, model=...\)"):
        load_checkpoint(tmp_path / "custom.npz")


def test_optimizer_of_another_type_is_refused_and_nothing_changes(tmp_path):
    model, optimizer, _ = _trained("cpu")
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer)
    twin = _nested_model()
    before = twin.state_dict()
    adam = optim.Adam(twin.parameters())
    with pytest.raises(CheckpointError, match="does not fit the Adam: .*'SGD' optimizer, not 'Adam'"):
        load_checkpoint(path, twin, adam)
    _assert_same_state(twin.state_dict(), before)  # the weights were put back
    assert adam.steps == [0] * len(twin.parameters())


def test_optimizer_with_another_parameter_count_is_refused(tmp_path):
    model, optimizer, _ = _trained("cpu")
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer)
    twin = _nested_model()
    with pytest.raises(CheckpointError, match=r"holds state for 10 parameters, but this optimizer has 2"):
        load_checkpoint(path, twin, optim.SGD(twin[0].parameters(), lr=0.1, momentum=0.9))


def test_missing_optimizer_or_schedule_state_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "model_only.npz", nn.Dense(2, 2))
    model = nn.Dense(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="holds no optimizer state to load into SGD"):
        load_checkpoint(path, model, optimizer)
    with pytest.raises(CheckpointError, match="holds no schedule state to load into StepLR"):
        load_checkpoint(path, model, schedule=optim.StepLR(optimizer, step_size=2))


# ----- atomic writes -----------------------------------------------------------------------------------------

def _failing_savez(file, **entries):
    file.write(b"PK\x03\x04 half a zip")
    raise OSError("disk full (simulated)")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Dense(3, 2)
    path = save_checkpoint(tmp_path / "last.npz", model, state={"epoch": 1})
    previous = path.read_bytes()
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, nn.Dense(3, 2), state={"epoch": 2})
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["last.npz"]
    monkeypatch.undo()
    assert load_checkpoint(path, nn.Dense(3, 2)).state == {"epoch": 1}


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new" / "first.npz", nn.Dense(3, 2))
    assert os.listdir(tmp_path / "new") == []


def test_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(file, **entries):
        file.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.npz", nn.Dense(3, 2))
    assert os.listdir(tmp_path) == []


def test_save_writes_exactly_the_given_name(tmp_path):
    save_checkpoint(tmp_path / "model.ckpt", nn.Dense(3, 2))
    save_checkpoint(str(tmp_path / "model.npz"), nn.Dense(3, 2))
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt", "model.npz"]
    assert zipfile.is_zipfile(tmp_path / "model.ckpt")


def test_a_resnet_checkpoint_loads_where_only_the_checkpoint_module_was_imported(tmp_path):
    # checkpoint.py imports no model module for its side effect: `import minicnn`, which any
    # `from minicnn.checkpoint import ...` runs first, registers the architectures a file may name.
    path = save_checkpoint(tmp_path / "resnet.npz", models.resnet(8, num_classes=3))
    script = ("from minicnn.checkpoint import load_checkpoint; "
              f"model = load_checkpoint({str(path)!r}).model; print(type(model).__name__, len(model.state_dict()))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ResNet", str(len(models.resnet(8, num_classes=3).state_dict()))]
    source = inspect.getsource(minicnn.checkpoint)
    assert "import models" not in source and "from .models" not in source
