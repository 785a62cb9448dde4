"""minicnn.interop: PyTorch state dicts read without torch, written for torch, mapped onto models.

torch writes the reference files where it is installed; the writer-reader round trips run without it.
"""

import numpy as np
import pytest

from minicnn import functional as F
from minicnn import backend, interop, nn
from minicnn.errors import CheckpointError
from minicnn.tensor import Tensor, no_grad

from benchmarks import torch_resnet


@pytest.fixture
def torch():
    """PyTorch on one thread: these models are tiny, and several threads on a busy machine only wait."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


# ----- reading what torch.save writes -----------------------------------------------------------
def test_reads_a_conv_batchnorm_linear_state_dict_exactly(tmp_path, torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5))
    model(torch.randn(2, 3, 5, 5))  # training mode: running statistics and the counter move
    torch.save(model.state_dict(), tmp_path / "model.pt")

    ours = interop.read_torch_state_dict(tmp_path / "model.pt")

    assert list(ours) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert ours[name].dtype == tensor.numpy().dtype and ours[name].shape == tuple(tensor.shape), name
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
    assert ours["1.num_batches_tracked"].shape == () and ours["1.num_batches_tracked"] == 1


def test_reads_every_dtype_views_of_shared_storages_empty_and_0d_tensors(tmp_path, torch):
    torch.manual_seed(0)
    shared = torch.arange(30, dtype=torch.float32)
    matrix = torch.randn(3, 4, dtype=torch.float64)
    state = {
        "float32": torch.randn(2, 3), "float64": matrix, "float16": torch.randn(5).half(),
        "bfloat16": torch.randn(4).bfloat16(), "int64": torch.arange(-3, 3),
        "int32": torch.arange(4, dtype=torch.int32),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8), "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]), "complex64": torch.randn(2, dtype=torch.complex64),
        "transposed": matrix.t(),  # non-contiguous: strides (1, 4) into matrix's storage
        "slice": shared[5:11],  # storage offset 5
        "strided": shared[12:].view(3, 6)[:, ::2],  # offset 12, strides (6, 2)
        "whole": shared, "empty": torch.empty(0, 3), "scalar": torch.tensor(2.5), "long_scalar": torch.tensor(7),
    }
    torch.save(state, tmp_path / "views.pt")

    ours = interop.read_torch_state_dict(tmp_path / "views.pt")

    assert list(ours) == list(state)
    for name, tensor in state.items():
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
        assert ours[name].flags.c_contiguous and ours[name].flags.writeable
    ours["slice"][0] = -1  # a copy: the views do not share memory once read
    assert ours["whole"][5] == 5


def small_torch_resnet(torch, classes=5):
    """ResNet-18's module tree and names (two stages here, narrow), in plain torch."""

    class SmallResNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3, 1, 1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(4)
            block = torch_resnet.basic_block
            self.layer1 = torch.nn.Sequential(block(torch, 4, 4, 1), block(torch, 4, 4, 1))
            self.layer2 = torch.nn.Sequential(block(torch, 4, 8, 2), block(torch, 8, 8, 1))
            self.fc = torch.nn.Linear(8, classes)

        def forward(self, x):
            x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
            return self.fc(x.mean(dim=(2, 3)))

    return SmallResNet()


class SmallResNet(nn.Module):
    def __init__(self, classes=5, head=nn.Dense):
        super().__init__()
        self.conv1 = nn.Conv2D(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2D(4)
        self.layer1 = nn.Sequential(nn.BasicBlock(4, 4, 1), nn.BasicBlock(4, 4, 1))
        self.layer2 = nn.Sequential(nn.BasicBlock(4, 8, 2), nn.BasicBlock(8, 8, 1))
        self.fc = head(8, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.mean(x, axis=(2, 3)))


def trained_torch_resnet(torch):
    torch.manual_seed(1)
    reference = small_torch_resnet(torch)
    reference(torch.randn(4, 3, 8, 8))  # running statistics away from their initial values
    return reference.eval()


@pytest.mark.parametrize("head", [nn.Dense, nn.Linear])
def test_a_torch_resnet_file_loads_into_the_minicnn_model_with_the_same_names(tmp_path, head, torch):
    reference = trained_torch_resnet(torch)
    torch.save(reference.state_dict(), tmp_path / "resnet.pth")
    assert "layer2.0.downsample.0.weight" in reference.state_dict()
    model = SmallResNet(head=head)

    report = interop.load_torch_state_dict(model, tmp_path / "resnet.pth")

    assert report == interop.LoadReport([], [])
    expected_fc = reference.fc.weight.detach().numpy()
    np.testing.assert_array_equal(model.fc.weight.data, expected_fc.T if head is nn.Dense else expected_fc)
    np.testing.assert_array_equal(model.layer2[0].downsample[1].running_var,
                                  reference.layer2[0].downsample[1].running_var.numpy())
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with no_grad():
        ours = model.eval()(Tensor(x)).data
    np.testing.assert_allclose(ours, reference(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_to_torch_state_dict_is_what_torch_loads_strictly(tmp_path, torch):
    model = SmallResNet()
    interop.load_torch_state_dict(model, {name: tensor.numpy() for name, tensor
                                          in trained_torch_resnet(torch).state_dict().items()})

    state = interop.to_torch_state_dict(model, tmp_path / "from_minicnn.pt")

    reference = small_torch_resnet(torch).eval()
    assert list(state) == list(reference.state_dict())  # torch's names and order, counters included
    assert state["fc.weight"].shape == (5, 8) and state["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    reference.load_state_dict(torch.load(tmp_path / "from_minicnn.pt", weights_only=True), strict=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with no_grad():
        ours = model.eval()(Tensor(x)).data
    np.testing.assert_allclose(reference(torch.from_numpy(x)).detach().numpy(), ours, rtol=1e-4, atol=1e-5)


def test_the_writer_round_trips_through_torch_and_through_the_reader(tmp_path, torch):
    rng = np.random.default_rng(0)
    state = {"float32": rng.standard_normal((2, 3)).astype(np.float32), "float64": rng.standard_normal(4),
             "float16": rng.standard_normal(3).astype(np.float16), "int64": np.arange(5) - 2,
             "big_int": np.array([2**40, -2**40]), "uint8": np.arange(3, dtype=np.uint8),
             "bool": np.array([True, False]), "scalar": np.array(3.5, dtype=np.float32),
             "empty": np.zeros((0, 4), dtype=np.float32), "transposed": rng.standard_normal((3, 4)).T,
             "big_endian": np.arange(3, dtype=">f4"), "layer1.0.downsample.0.weight": np.ones((2, 1, 1, 1), np.float32)}
    interop.write_torch_state_dict(state, tmp_path / "ours.pt")

    for loaded in (torch.load(tmp_path / "ours.pt", weights_only=True),
                   interop.read_torch_state_dict(tmp_path / "ours.pt")):
        assert list(loaded) == list(state)
        for name, array in state.items():
            value = loaded[name].numpy() if isinstance(loaded[name], torch.Tensor) else loaded[name]
            assert value.dtype == array.dtype.newbyteorder("=") and value.shape == array.shape, name
            np.testing.assert_array_equal(value, array, err_msg=name)


def test_the_writer_round_trips_through_the_reader_without_torch(tmp_path):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.count": np.array(0, dtype=np.int64)}
    interop.write_torch_state_dict(state, tmp_path / "ours.pt")
    loaded = interop.read_torch_state_dict(tmp_path / "ours.pt")
    assert list(loaded) == list(state)
    for name in state:
        assert loaded[name].shape == state[name].shape and loaded[name].dtype == state[name].dtype
        np.testing.assert_array_equal(loaded[name], state[name])


# ----- mapping onto models: names, layouts, bad input ---------------------------------------------
def small_model():
    return nn.Sequential(nn.Conv2D(1, 2, 3), nn.BatchNorm2D(2), nn.Flatten(), nn.Dense(2, 3))


def torch_names_state(model):
    return interop.to_torch_state_dict(model)


def test_num_batches_tracked_is_ignored_and_dense_weights_are_transposed():
    source = small_model()
    state = interop.to_torch_state_dict(source)
    assert state["3.weight"].shape == (3, 2) and state["1.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(state["3.weight"], source.layers[3].weight.data.T)
    target = small_model()
    assert interop.load_torch_state_dict(target, state) == interop.LoadReport([], [])
    for (name, ours), (_, theirs) in zip(target.state_dict().items(), source.state_dict().items()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


def test_missing_and_unexpected_keys_are_listed_and_nothing_changes():
    state = interop.to_torch_state_dict(small_model())
    del state["0.bias"]
    state["4.weight"] = np.zeros(3, np.float32)
    state["9.num_batches_tracked"] = np.array(0)  # not a BatchNorm's counter: unexpected
    model = small_model()
    before = model.state_dict()
    with pytest.raises(CheckpointError, match=r"missing keys: \['0.bias'\]; unexpected keys: "
                                              r"\['4.weight', '9.num_batches_tracked'\]"):
        interop.load_torch_state_dict(model, state)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])


def test_keys_from_a_pth_are_shown_escaped_and_cut_in_the_mismatch_message(tmp_path):
    # A newline or a terminal escape in a key cannot forge lines on the user's terminal; a long key
    # or thousands of keys do not flood it.
    hostile = "w\n\x1b[2J\x1b[31mforged: all weights loaded" + "x" * 5000
    state = interop.to_torch_state_dict(small_model())
    state[hostile] = np.zeros(1, np.float32)
    state.update({f"extra{index}": np.zeros(1, np.float32) for index in range(1000)})
    path = tmp_path / "hostile.pth"
    interop.write_torch_state_dict(state, path)
    with pytest.raises(CheckpointError) as caught:
        interop.load_torch_state_dict(small_model(), path)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 1000, message[:300]
    assert "unexpected keys: ['w\\n\\x1b[2J" in message and "and 993 more" in message
    # A mapping given in Python may hold keys of any type: they are unexpected, not a crash.
    with pytest.raises(CheckpointError, match=r"unexpected keys: \[7\]"):
        interop.load_torch_state_dict(small_model(), {**interop.to_torch_state_dict(small_model()), 7: 1})


def test_strict_false_loads_the_rest_and_reports_what_it_skipped():
    source, model = small_model(), small_model()
    state = interop.to_torch_state_dict(source)
    del state["0.bias"]
    state["extra"] = np.zeros(1, np.float32)
    old_bias = model.layers[0].bias.data.copy()

    report = interop.load_torch_state_dict(model, state, strict=False)

    assert report.missing_keys == ["0.bias"] and report.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(model.layers[0].weight.data, source.layers[0].weight.data)
    np.testing.assert_array_equal(model.layers[0].bias.data, old_bias)


def test_a_wrong_shape_names_the_key_and_both_shapes_even_when_not_strict():
    model = nn.Sequential(nn.Dense(512, 10))
    before = model.layers[0].weight.data.copy()
    state = {"0.weight": np.zeros((1000, 512), np.float32), "0.bias": np.zeros(1000, np.float32)}
    with pytest.raises(CheckpointError, match=r"'0.weight' has shape \(1000, 512\) in the state dict but the "
                                              r"model's Dense expects \(10, 512\) \(torch's \(out, in\) layout; "
                                              r"Dense keeps it transposed as \(512, 10\)\)"):
        interop.load_torch_state_dict(model, state, strict=False)
    np.testing.assert_array_equal(model.layers[0].weight.data, before)


def test_loading_and_exporting_keep_to_the_models_device(device):
    source = small_model()
    model = small_model().to(device)
    interop.load_torch_state_dict(model, interop.to_torch_state_dict(source))
    assert model.layers[3].weight.device == device and backend.device_of(model.layers[1].running_var) == device
    exported = interop.to_torch_state_dict(model)
    assert all(isinstance(array, np.ndarray) for array in exported.values())
    np.testing.assert_array_equal(exported["3.weight"], source.layers[3].weight.data.T)


def test_values_take_the_targets_dtype_and_a_bad_argument_is_named(tmp_path):
    model = small_model().to(dtype=np.float64)
    state = {name: array.astype(np.float32) if array.dtype.kind == "f" else array
             for name, array in interop.to_torch_state_dict(small_model()).items()}
    interop.load_torch_state_dict(model, state)
    assert model.layers[0].weight.dtype == np.float64 and model.layers[1].running_mean.dtype == np.float64
    with pytest.raises(TypeError, match="expected a file path or a mapping"):
        interop.load_torch_state_dict(model, [1, 2])
    with pytest.raises(CheckpointError, match="does-not-exist.pt"):
        interop.load_torch_state_dict(model, tmp_path / "does-not-exist.pt")


# ----- end to end: torchvision's ResNet-18 names, a torch.save'd file, minicnn.models.resnet18 --------
def torch_resnet18(torch, num_classes):
    """torchvision's resnet18 module tree and names, in plain torch, with trained-looking batch norms."""
    model = torch_resnet.resnet18(torch, num_classes)
    with torch.no_grad():  # running statistics and affine parameters away from 0 and 1, as trained ones are
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.slow  # 11.7 million parameters written, read and initialised: about 3 s
def test_resnet18_loads_a_torch_saved_resnet18_and_gives_its_logits(tmp_path, torch):
    from minicnn import models

    torch.manual_seed(0)
    reference = torch_resnet18(torch, num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")

    model = models.resnet18(num_classes=10, weights=tmp_path / "resnet18.pth").eval()

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with no_grad():
        ours = model(Tensor(x)).data
    expected = reference(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # And back: written by minicnn without torch, loaded strictly by torch, the same logits.
    interop.to_torch_state_dict(model, tmp_path / "from_minicnn.pth")
    carried = torch_resnet18(torch, num_classes=10)
    carried.load_state_dict(torch.load(tmp_path / "from_minicnn.pth", weights_only=True), strict=True)
    np.testing.assert_allclose(carried(torch.from_numpy(x)).detach().numpy(), ours, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    with pytest.raises(CheckpointError, match=r"'fc.weight' has shape \(10, 512\) in the state dict but the "
                                              r"model's Linear expects \(7, 512\)"):
        models.resnet18(num_classes=7, weights=tmp_path / "resnet18.pth")
