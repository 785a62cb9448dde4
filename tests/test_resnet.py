"""ResNet-18 against a plain-PyTorch ResNet-18 with torchvision's module names (torchvision itself does not
import beside the CPU build of torch here), weights copied by name; the CIFAR ResNets; replacing the head,
freezing, and checkpoints of a ResNet.

The comparisons with PyTorch run a whole ResNet-18 (a second or more each), so they are marked slow; the
default suite checks the names and shapes without making weights, and the small CIFAR ResNets.
"""

import math
import os

import numpy as np
import pytest

import minicnn
from minicnn import kernels, models, nn, optim
from minicnn import functional as F
from minicnn.checkpoint import load_checkpoint, save_checkpoint
from minicnn.errors import ShapeError

from benchmarks.torch_resnet import cifar_resnet as torch_cifar_resnet
from benchmarks.torch_resnet import resnet18 as torch_resnet18


def copy_into_torch(torch, model, twin):
    """Copy every parameter and buffer of the minicnn model into the torch twin, by name."""
    state = {name: torch.from_numpy(array) for name, array in model.state_dict().items()}
    ours, theirs = set(state), {key for key in twin.state_dict() if not key.endswith("num_batches_tracked")}
    assert ours == theirs, (sorted(ours - theirs), sorted(theirs - ours))
    twin.load_state_dict(state, strict=False)


@pytest.fixture(scope="module")
def resnet_state():
    """The description and weights of a ResNet-18 with random batch-norm statistics and affine parameters,
    so that eval mode is not the identity per channel. Models are rebuilt from these without drawing weights."""
    minicnn.manual_seed(0)
    model = models.resnet18()
    rng = np.random.default_rng(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = rng.uniform(0.5, 1.5, size).astype(np.float32)
            module.bias.data = rng.uniform(-0.2, 0.2, size).astype(np.float32)
            module.running_mean[...] = rng.uniform(-0.2, 0.2, size)
            module.running_var[...] = rng.uniform(0.5, 2.0, size)
    return nn.describe(model), model.state_dict()


def fresh(resnet_state):
    description, weights = resnet_state
    return nn.build(description, weights=weights)


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def check_eval_logits(torch, resnet_state, shape):
    model = fresh(resnet_state).eval()
    twin = torch_resnet18(torch).eval()
    copy_into_torch(torch, model, twin)
    images = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with minicnn.no_grad():
        logits = model(minicnn.Tensor(images)).data
    with torch.no_grad():
        expected = twin(torch.from_numpy(images)).numpy()
    assert logits.shape == (shape[0], 1000)
    assert relative_error(logits, expected) < 1e-4


def check_training_gradients(torch, resnet_state, shape, seed, dtype=np.float32, tolerance=1e-3):
    """Train mode (batch statistics): the loss, the running statistics and three gradients agree.

    In float32 a ReLU whose input lies within rounding of zero may fall on different sides in the two
    libraries, which changes that element's gradient outright: for some random inputs one such element
    among layer4's 50,176 moves the early gradients by 1e-2. The seeds here draw inputs without such a
    tie; in float64 (test_resnet18_training_gradients_equal_pytorch_float64) the gradients agree to 1e-10.
    """
    model = fresh(resnet_state).train().to(dtype=dtype)
    twin = torch_resnet18(torch).train()
    copy_into_torch(torch, model, twin)
    twin.to(torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(seed)
    images = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 1000, shape[0])
    loss = F.cross_entropy(model(minicnn.Tensor(images)), minicnn.Tensor(labels))
    loss.backward()
    expected_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(images)), torch.from_numpy(labels))
    expected_loss.backward()
    assert abs(loss.item() - expected_loss.item()) <= tolerance * abs(expected_loss.item())
    parameters, twin_parameters = dict(model.named_parameters()), dict(twin.named_parameters())
    for name in ("conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"):
        assert relative_error(parameters[name].grad, twin_parameters[name].grad.numpy()) < tolerance, name
    twin_state = twin.state_dict()
    for name in ("bn1.running_var", "layer4.1.bn2.running_mean"):
        assert relative_error(model.state_dict()[name], twin_state[name].numpy()) < tolerance / 10, name


def test_resnet18_names_are_torchvisions():
    """Every parameter and buffer name and shape equals torchvision's (num_batches_tracked aside), found
    without making any weights: minicnn's skeleton and torch's meta device."""
    torch = pytest.importorskip("torch")
    description = {"type": "ResNet", "config": {"blocks_per_stage": [2, 2, 2, 2], "widths": [64, 128, 256, 512],
                                                "num_classes": 1000, "in_channels": 3, "small_input": False}}
    shapes = nn.state_shapes(nn.skeleton(description))
    with torch.device("meta"):
        twin = torch_resnet18(torch)
    assert shapes == {key: tuple(value.shape) for key, value in twin.state_dict().items()
                      if not key.endswith("num_batches_tracked")}
    assert {"conv1.weight", "bn1.running_mean", "bn1.running_var", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias", "fc.weight", "fc.bias"} <= set(shapes)
    assert "layer1.0.downsample.0.weight" not in shapes  # the first stage keeps the shape: identity shortcuts
    assert shapes["fc.weight"] == (1000, 512)  # PyTorch's (out, in) layout
    assert sum(math.prod(shape) for name, shape in shapes.items() if "running" not in name) == 11_689_512


@pytest.mark.slow
def test_resnet18_eval_logits_equal_pytorch_32x32(resnet_state):
    torch = pytest.importorskip("torch")
    check_eval_logits(torch, resnet_state, (2, 3, 32, 32))


@pytest.mark.slow
def test_resnet18_training_gradients_equal_pytorch_32x32(resnet_state):
    torch = pytest.importorskip("torch")
    check_training_gradients(torch, resnet_state, (4, 3, 32, 32), seed=5)


@pytest.mark.slow
def test_resnet18_training_gradients_equal_pytorch_float64(resnet_state):
    torch = pytest.importorskip("torch")
    check_training_gradients(torch, resnet_state, (4, 3, 32, 32), seed=2, dtype=np.float64, tolerance=1e-10)


@pytest.mark.slow
def test_resnet18_eval_logits_equal_pytorch_224x224(resnet_state):
    torch = pytest.importorskip("torch")
    check_eval_logits(torch, resnet_state, (2, 3, 224, 224))


@pytest.mark.slow
def test_resnet18_training_gradients_equal_pytorch_224x224(resnet_state):
    """On im2col: at 224x224 Winograd's float32 rounding (5e-6 of a layer's scale against im2col's 1e-6,
    minicnn/kernels/winograd.py) put a ReLU tie (check_training_gradients) on the other side for every
    seed tried (3 to 8). The float64 test at 224x224 compares the Winograd path with PyTorch."""
    torch = pytest.importorskip("torch")
    with kernels.im2col_only():
        check_training_gradients(torch, resnet_state, (2, 3, 224, 224), seed=3)


@pytest.mark.slow
def test_resnet18_training_gradients_equal_pytorch_float64_224x224(resnet_state, monkeypatch):
    """Through Winograd: at batch 2 of 224x224 the seven 3x3 stride-1 layers of the first two stages have the
    tiles minicnn.kernels.convolution.algorithm asks for (the 32x32 tests have too few and run im2col)."""
    torch = pytest.importorskip("torch")
    from minicnn.kernels import winograd

    ran = []
    forward = winograd.forward
    monkeypatch.setattr(winograd, "forward", lambda *args: ran.append(args[0].shape) or forward(*args))
    check_training_gradients(torch, resnet_state, (2, 3, 224, 224), seed=3, dtype=np.float64, tolerance=1e-10)
    if os.environ.get("MINICNN_FAST", "1") != "0" and os.environ.get("MINICNN_WINOGRAD", "1") != "0":
        assert len(ran) == 7


@pytest.mark.slow
def test_fine_tuning_step_equals_pytorch(resnet_state):
    """The tutorial's recipe: backbone frozen, fc replaced by Linear(512, 10), SGD lr 0.001 momentum 0.9 over
    all parameters (the frozen ones get no gradient and stay), in train mode (batch norm statistics move)."""
    torch = pytest.importorskip("torch")
    model = fresh(resnet_state).train()
    twin = torch_resnet18(torch).train()
    copy_into_torch(torch, model, twin)
    model.requires_grad_(False)
    model.fc = nn.Linear(512, 10)
    for parameter in twin.parameters():
        parameter.requires_grad = False
    twin.fc = torch.nn.Linear(512, 10)
    with torch.no_grad():
        twin.fc.weight.copy_(torch.from_numpy(model.fc.weight.data))
        twin.fc.bias.copy_(torch.from_numpy(model.fc.bias.data))
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.001, momentum=0.9)
    rng = np.random.default_rng(3)
    for _ in range(2):  # the second step uses the momentum buffer
        images = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
        labels = rng.integers(0, 10, 4)
        optimizer.zero_grad()
        F.cross_entropy(model(minicnn.Tensor(images)), minicnn.Tensor(labels)).backward()
        optimizer.step()
        twin_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(images)), torch.from_numpy(labels)).backward()
        twin_optimizer.step()
    assert model.conv1.weight.grad is None and model.fc.weight.grad is not None
    twin_state = twin.state_dict()
    for name, array in model.state_dict().items():
        assert relative_error(array, twin_state[name].numpy()) < 1e-5, name
    _, original = resnet_state
    np.testing.assert_array_equal(model.state_dict()["layer3.1.conv2.weight"], original["layer3.1.conv2.weight"])
    assert not np.array_equal(model.state_dict()["bn1.running_mean"], original["bn1.running_mean"])


def test_replaced_head_is_seen_everywhere_and_survives_a_checkpoint(tmp_path):
    model = models.resnet(8, num_classes=10)
    old_fc = model.fc
    model.fc = nn.Dense(64, 3)
    parameters = model.parameters()
    assert any(p is model.fc.weight for p in parameters) and not any(p is old_fc.weight for p in parameters)
    assert model.state_dict()["fc.weight"].shape == (64, 3)
    assert optim.SGD(model.parameters(), lr=0.1).params[-2] is model.fc.weight
    path = save_checkpoint(tmp_path / "resnet8.npz", model)
    loaded = load_checkpoint(path).model
    assert isinstance(loaded.fc, nn.Dense) and loaded.fc.out_features == 3
    images = minicnn.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with minicnn.no_grad():
        np.testing.assert_array_equal(loaded.eval()(images).data, model.eval()(images).data)
    load_checkpoint(path, model=models.resnet(8, num_classes=10).__class__.from_config(nn.describe(model)["config"]))
    with pytest.raises(minicnn.CheckpointError, match="different architecture"):
        load_checkpoint(path, model=models.resnet(8, num_classes=10))


def test_resnet20_shapes_and_gradients():
    model = models.resnet(20)
    assert sum(parameter.numel() for parameter in model.parameters()) == 272_474
    assert [len(stage) for stage in model.stages()] == [3, 3, 3]
    # 16x16 rather than CIFAR's 32x32 to keep the default suite fast: global pooling takes any size.
    images = minicnn.Tensor(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
    logits = model(images)
    assert logits.shape == (2, 10)
    F.cross_entropy(logits, minicnn.Tensor(np.array([1, 7]))).backward()
    assert all(parameter.grad is not None and parameter.grad.shape == parameter.shape
               for parameter in model.parameters())
    assert np.abs(model.layer1[0].conv1.weight.grad).sum() > 0
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet(18)


@pytest.mark.parametrize("depth", [8, 20])
def test_the_torch_cifar_resnet_is_minicnns_name_for_name_and_shape_for_shape(depth):
    """benchmarks.torch_resnet.cifar_resnet, the twin the 'resnet20 train step' rows time, has every parameter and
    buffer of models.resnet(depth) in the same order with the same shape (torch's num_batches_tracked aside)."""
    torch = pytest.importorskip("torch")
    model = models.resnet(depth)
    with torch.device("meta"):
        twin = torch_cifar_resnet(torch, depth)
    assert [(name, tuple(parameter.shape)) for name, parameter in model.named_parameters()] == \
        [(name, tuple(parameter.shape)) for name, parameter in twin.named_parameters()]
    assert [(name, tuple(array.shape)) for name, array in model.named_buffers()] == \
        [(name, tuple(array.shape)) for name, array in twin.named_buffers() if not name.endswith("num_batches_tracked")]
    if depth == 20:
        assert sum(parameter.numel() for parameter in twin.parameters()) == 272_474


def test_the_torch_cifar_resnet_computes_what_minicnns_does():
    """Weights and random batch-norm statistics copied by name: the same logits in eval mode, so the twin also
    places its strides, ReLUs and shortcuts as minicnn does, which equal shapes alone would not show."""
    torch = pytest.importorskip("torch")
    minicnn.manual_seed(0)
    model = models.resnet(8).eval()
    rng = np.random.default_rng(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean[...] = rng.uniform(-0.2, 0.2, module.num_features)
            module.running_var[...] = rng.uniform(0.5, 2.0, module.num_features)
    twin = torch_cifar_resnet(torch, 8).eval()
    copy_into_torch(torch, model, twin)
    images = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    with minicnn.no_grad():
        logits = model(minicnn.Tensor(images)).data
    with torch.no_grad():
        expected = twin(torch.from_numpy(images)).numpy()
    assert logits.shape == (2, 10) and relative_error(logits, expected) < 1e-4
    with pytest.raises(ValueError, match="6n\\+2"):
        torch_cifar_resnet(torch, 18)


def test_grey_images_into_a_colour_resnet_name_the_layer_and_the_fix():
    model = models.resnet(8)
    with pytest.raises(ShapeError, match="conv1.*\\(N, 3, H, W\\).*grey.*repeat"):
        model(minicnn.Tensor(np.zeros((2, 1, 32, 32), dtype=np.float32)))


def test_frozen_parameters_get_no_gradient_and_stay():
    model = models.resnet(8, num_classes=4)
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    model.layer3[0].bn1.weight.requires_grad = True
    before = model.state_dict()
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    images = minicnn.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    F.cross_entropy(model.eval()(images), minicnn.Tensor(np.array([0, 3]))).backward()
    optimizer.step()
    after = model.state_dict()
    trained = {"fc.weight", "fc.bias", "layer3.0.bn1.weight"}
    assert {name for name, parameter in model.named_parameters() if parameter.grad is not None} == trained
    for name in after:
        assert np.array_equal(after[name], before[name]) == (name not in trained), name


def test_colour_tutorial_models_and_registry_names():
    assert {"cnn", "lenet", "fashion_cnn", "cifar_cnn", "cnn64", "resnet18", "resnet"} <= set(models.MODELS)
    with minicnn.no_grad():
        assert models.build("cifar_cnn")(minicnn.Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)
        assert models.cnn64(num_classes=5)(minicnn.Tensor(np.zeros((2, 3, 64, 64), np.float32))).shape == (2, 5)
    assert models.cifar_cnn()[9].in_features == 1024
    assert models.fashion_cnn()[9].in_features == 64 * 7 * 7
    with minicnn.no_grad():
        assert models.build("fashion_cnn", in_channels=3, image_size=32, num_classes=4)(
            minicnn.Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 4)
    assert models.build("resnet", depth=8).layer3[0].downsample[0].stride == (2, 2)


@pytest.mark.slow
def test_resnet18_small_input_variant():
    small = models.build("resnet18", num_classes=10, small_input=True)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.maxpool is None
    with minicnn.no_grad():
        assert small.eval()(minicnn.Tensor(np.zeros((1, 3, 32, 32), np.float32))).shape == (1, 10)


@pytest.mark.slow
def test_resnet_benchmark_rows_run(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    completed = subprocess.run([sys.executable, "-m", "benchmarks.resnet_rows", "--quick", "--no-torch", "--out",
                                str(tmp_path)], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = tmp_path.glob("resnet18-cpu-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [row["group"] for row in rows] == ["resnet18 forward", "resnet18 train step"]
    assert all(row["flops"] > 0 and row["min_ms"] <= row["median_ms"] <= row["max_ms"] for row in rows)


@pytest.mark.slow
def test_peak_memory_of_the_224_step_is_measured():
    from benchmarks.resnet_rows import peak_step_memory_mib

    memory = peak_step_memory_mib(frozen=True)
    # The model's weights alone (11.2 million float32) are 42.7 MiB; the step holds more.
    assert 42 < memory["model_mib"] < memory["peak_mib"]


# ----- what the ResNets need from nn and functional ------------------------------------------------------------

def test_global_average_pooling_forward_and_gradient(xp):
    rng = np.random.default_rng(0)
    x = minicnn.Tensor(xp.asarray(rng.standard_normal((2, 3, 4, 5))), requires_grad=True)
    pooled = F.global_avg_pool2d(x)
    assert pooled.shape == (2, 3)
    np.testing.assert_allclose(backend_host(pooled), backend_host(x).mean(axis=(2, 3)), rtol=1e-12)
    assert F.adaptive_avg_pool2d(x, 1).shape == (2, 3, 1, 1) and nn.AdaptiveAvgPool2d((1, 1))(x).shape == (2, 3, 1, 1)
    assert nn.GlobalAvgPool2D()(x).shape == (2, 3) and nn.Identity()(x) is x
    minicnn.gradcheck(F.global_avg_pool2d, x)
    with pytest.raises(ValueError, match="only output_size 1"):
        nn.AdaptiveAvgPool2d(2)
    with pytest.raises(ValueError, match="only output_size 1"):
        F.adaptive_avg_pool2d(x, (2, 2))


def backend_host(tensor):
    return minicnn.backend.to_numpy(tensor.data)


def test_basic_block_gradient_flows_through_both_paths():
    """A BasicBlock with a projection shortcut, in float64 and train mode: the input's gradient is the sum of
    the convolution path's and the shortcut's, checked against finite differences."""
    block = nn.BasicBlock(2, 3, stride=2).to(dtype=np.float64)
    x = minicnn.Tensor(np.random.default_rng(1).standard_normal((2, 2, 3, 3)), requires_grad=True)
    assert block(x).shape == (2, 3, 2, 2)
    minicnn.gradcheck(block, x)
    identity_block = nn.BasicBlock(3, 3)
    assert identity_block.downsample is None


def test_stem_max_pool_pads_with_minus_infinity():
    """The 3x3/2 max pool with padding 1 after the stem: a border window of negative values keeps its maximum
    (zero padding would report 0)."""
    x = minicnn.Tensor(-1 - np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    out = nn.MaxPool2d(3, stride=2, padding=1)(x)
    np.testing.assert_array_equal(out.data[0, 0], [[-1, -2], [-5, -6]])
