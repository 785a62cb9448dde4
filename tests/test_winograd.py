"""minicnn.kernels.winograd (F(2x2, 3x3) and F(4x4, 3x3)) against the im2col reference, and the dispatch to it.

The tolerances are the algorithms' error, relative to the largest value of the reference result
(x, w and the gradient drawn from a standard normal; measured over 120 random shapes with 1 to 64
channels, the worst of the output, grad_x, grad_weight and grad_bias): float32 F(2x2, 3x3) 7e-7,
F(4x4, 3x3) 5e-6, float64 both 1e-14. The bounds below are about 10x those (float64: 1e-10).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F
from minicnn import kernels
from minicnn.functional import conv
from minicnn.kernels import convolution, winograd

CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ERROR_BOUND = {(np.float32, 2): 5e-6, (np.float32, 4): 5e-5, (np.float64, 2): 1e-10, (np.float64, 4): 1e-10}
needs_fast_paths = pytest.mark.skipif(os.environ.get("MINICNN_FAST", "1") == "0",
                                      reason="the fast paths are off (MINICNN_FAST=0)")


@st.composite
def layers(draw):
    """(N, C, H, W), filters, padding, dtype, seed: sizes from the smallest the kernel fits to a few tiles."""
    padding = draw(st.integers(0, 1))
    H, W = draw(st.integers(3 - 2 * padding, 13)), draw(st.integers(3 - 2 * padding, 13))
    shape = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 3, 16])), H, W)
    return shape, draw(st.integers(1, 5)), padding, draw(st.sampled_from([np.float32, np.float64])), \
        draw(st.integers(0, 999))


def reference(x, weight, bias, padding, grad, wanted):
    """Conv2dOp's im2col body: (out, (grad_x, grad_weight, grad_bias)), None where not wanted."""
    operation = conv.Conv2dOp(1, padding)
    operation.needs_input_grad = wanted
    with kernels.reference_only():
        out = operation.forward(x, weight, bias)
        return out, operation.backward(grad)


def assert_within_bound(got, expected, dtype, tile):
    assert got.shape == expected.shape and got.dtype == expected.dtype
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(got - expected).max()) / scale
    assert error <= ERROR_BOUND[dtype, tile], f"F({tile}x{tile}, 3x3) {np.dtype(dtype).name}: error {error:.2e}"


def draw_arrays(shape, filters, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((filters, shape[1], 3, 3)).astype(dtype)
    return rng, x, weight, rng.standard_normal(filters).astype(dtype)


@CHECKS
@given(case=layers(), tile=st.sampled_from([2, 4]), with_bias=st.booleans(),
       wanted=st.sampled_from([(True, True), (True, False), (False, True)]), grad_channel_major=st.booleans())
def test_winograd_equals_the_im2col_reference(case, tile, with_bias, wanted, grad_channel_major):
    shape, filters, padding, dtype, seed = case
    rng, x, weight, bias = draw_arrays(shape, filters, dtype, seed)
    bias = bias if with_bias else None
    out_size = (shape[2] + 2 * padding - 2, shape[3] + 2 * padding - 2)
    grad = rng.standard_normal((shape[0], filters, *out_size)).astype(dtype)
    expected, expected_grads = reference(x, weight, bias, padding, grad, wanted + ((True,) if with_bias else ()))
    out, kept = winograd.forward(x, weight, bias, (padding, padding), out_size, tile)
    assert out.transpose(1, 0, 2, 3).flags.c_contiguous  # channel-major, as the im2col path hands it on
    assert_within_bound(out, expected, dtype, tile)
    if grad_channel_major:  # the layout the layers after a convolution pass back
        grad = np.ascontiguousarray(grad.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    grads = winograd.backward(grad, weight, kept if wanted[1] else None, shape, (padding, padding),
                              (*wanted, with_bias), tile)
    for got, reference_grad in zip(grads, expected_grads):
        assert (got is None) == (reference_grad is None)
        if got is not None:
            assert_within_bound(got, reference_grad, dtype, tile)


@pytest.mark.parametrize("tile", [2, 4])
def test_blocks_of_images_give_the_same_result(monkeypatch, tile):
    """A batch cut into blocks (the last one short) equals the batch in one block, in float64."""
    rng, x, weight, bias = draw_arrays((7, 3, 9, 10), 4, np.float64, 5)
    grad = rng.standard_normal((7, 4, 9, 10))
    whole, kept = winograd.forward(x, weight, bias, (1, 1), (9, 10), tile)
    whole_grads = winograd.backward(grad, weight, kept, x.shape, (1, 1), (True, True, True), tile)
    assert len(kept.transformed_input) == 1
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)  # one image a block
    blocked, kept = winograd.forward(x, weight, bias, (1, 1), (9, 10), tile)
    assert kept.block == 1 and len(kept.transformed_input) == 7
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-12)
    for got, expected in zip(winograd.backward(grad, weight, kept, x.shape, (1, 1), (True, True, True), tile),
                             whole_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_the_transforms_compute_a_3x3_correlation_on_one_tile():
    """Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the m x m valid cross-correlation of the a x a tile d with g."""
    rng = np.random.default_rng(0)
    for tile in (2, 4):
        BT, G, AT = winograd.matrices(tile, np.float64)
        d, g = rng.standard_normal((tile + 2, tile + 2)), rng.standard_normal((3, 3))
        direct = np.array([[np.sum(d[r:r + 3, c:c + 3] * g) for c in range(tile)] for r in range(tile)])
        np.testing.assert_allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, direct, rtol=1e-12, atol=1e-12)


# The 3x3 stride-1 layers of the models and what the rule (convolution.algorithm) gives them.
MODEL_LAYERS = [
    ("cnn.conv1", (64, 1, 28, 28), (32, 1, 3, 3), 0, "im2col"),
    ("cnn.conv2", (64, 32, 13, 13), (64, 32, 3, 3), 0, 4),
    ("cnn.conv3", (64, 64, 5, 5), (64, 64, 3, 3), 0, 4),
    ("cnn.conv3 at batch 8 (8 tiles)", (8, 64, 5, 5), (64, 64, 3, 3), 0, "im2col"),
    ("cifar_cnn.conv1", (64, 3, 32, 32), (32, 3, 3, 3), 1, "im2col"),
    ("resnet20.16", (64, 16, 32, 32), (16, 16, 3, 3), 1, 4),
    ("resnet18.512 at batch 8 (32 tiles)", (8, 512, 7, 7), (512, 512, 3, 3), 1, "im2col"),
    ("resnet18.512 at batch 16 (64 tiles)", (16, 512, 7, 7), (512, 512, 3, 3), 1, 4),
    # ResNet-18 on 32x32 pictures: its last stages' maps are 2x2 and 1x1, where a 4x4 tile wastes more than
    # F(4x4, 3x3) saves (a 1x1 output costs 16 outputs' work)
    ("resnet18.256 on 32x32 pictures (2x2 maps)", (64, 256, 2, 2), (256, 256, 3, 3), 1, "im2col"),
    ("resnet18.512 on 32x32 pictures (1x1 maps)", (64, 512, 1, 1), (512, 512, 3, 3), 1, "im2col"),
    ("resnet18.128 on 32x32 pictures (4x4 maps)", (64, 128, 4, 4), (128, 128, 3, 3), 1, 4),
]


@pytest.mark.parametrize("name, x_shape, weight_shape, padding, expected", MODEL_LAYERS)
def test_the_rule_picks_per_layer(monkeypatch, name, x_shape, weight_shape, padding, expected):
    monkeypatch.setattr(convolution, "_winograd", True)
    x = np.zeros((1, 1, 1, 1), dtype=np.float32)  # the rule reads the dtype and the backend from the array
    size = x_shape[2] + 2 * padding - 2
    batch, out_size, pad = x_shape[0], (size, size), (padding, padding)
    assert convolution.algorithm(x, weight_shape, (1, 1), pad, batch, out_size) == expected
    # Never for a stride, a padding or a kernel it does not do, nor for integers or float16.
    assert convolution.algorithm(x, weight_shape, (2, 2), pad, batch, out_size) == "im2col"
    assert convolution.algorithm(x, weight_shape, (1, 1), (2, 2), batch, out_size) == "im2col"
    assert convolution.algorithm(x, weight_shape[:2] + (5, 5), (1, 1), pad, batch, out_size) == "im2col"
    assert convolution.algorithm(x.astype(np.float16), weight_shape, (1, 1), pad, batch, out_size) == "im2col"
    assert convolution.algorithm(x.astype(np.int32), weight_shape, (1, 1), pad, batch, out_size) == "im2col"
    with kernels.im2col_only():
        assert convolution.algorithm(x, weight_shape, (1, 1), pad, batch, out_size) == "im2col"


@needs_fast_paths
@pytest.mark.parametrize("channels, winograd_expected", [(16, True), (8, False)])
def test_the_door_runs_what_the_rule_picks(monkeypatch, channels, winograd_expected):
    monkeypatch.setattr(convolution, "_winograd", True)
    rng, x, weight, bias = draw_arrays((4, channels, 16, 16), 4, np.float32, 1)  # 4 x 4 x 4 = 64 tiles
    out, kept = kernels.conv2d(x, weight, bias, (1, 1), (1, 1), (16, 16))
    assert isinstance(kept, winograd.WinogradTiles) == winograd_expected
    assert (kept.tile == convolution.WINOGRAD_TILE) if winograd_expected else kept.shape == (4 * 256, channels * 9)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    expected, expected_grads = reference(x, weight, bias, 1, grad, (True, True, True))
    assert_within_bound(out, expected, np.float32, 4)
    for col, wanted in ((kept, (True, True, True)), (None, (True, False, False))):  # None: grad_x alone
        grads = kernels.conv2d_backward(grad, weight, col, x.shape, (1, 1), (1, 1), wanted)
        for got, reference_grad, want in zip(grads, expected_grads, wanted):
            assert (got is None) == (not want)
            if want:
                assert_within_bound(got, reference_grad, np.float32, 4)
    with kernels.reference_only():
        assert kernels.conv2d(x, weight, bias, (1, 1), (1, 1), (16, 16)) is None


@needs_fast_paths
def test_minicnn_winograd_0_and_minicnn_fast_0_in_the_environment():
    """MINICNN_WINOGRAD=0 keeps the fast im2col; MINICNN_FAST=0 closes the door: the reference runs."""
    script = (
        "import numpy as np\n"
        "from minicnn import kernels\n"
        "from minicnn.kernels import convolution\n"
        "x, w = np.ones((64, 16, 5, 5), np.float32), np.ones((2, 16, 3, 3), np.float32)\n"
        "answer = kernels.conv2d(x, w, None, (1, 1), (0, 0), (3, 3))\n"
        "kept = None if answer is None else type(answer[1]).__name__\n"
        "print(convolution.algorithm(x, w.shape, (1, 1), (0, 0), 64, (3, 3)), kept)\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    printed = {}
    for setting in ("MINICNN_WINOGRAD", "MINICNN_FAST"):
        environment = {**os.environ, "MINICNN_WINOGRAD": "1", "MINICNN_FAST": "1", "PYTHONPATH": str(root)}
        environment[setting] = "0"
        printed[setting] = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                          check=True, cwd=root, env=environment).stdout.split()
    assert printed["MINICNN_WINOGRAD"] == ["im2col", "ndarray"]
    assert printed["MINICNN_FAST"][1] == "None"


@needs_fast_paths
def test_gradcheck_through_the_winograd_path(monkeypatch):
    monkeypatch.setattr(convolution, "_winograd", True)
    monkeypatch.setattr(convolution, "WINOGRAD_MIN_TILES", 1)  # a small input, so that each difference is cheap
    rng = np.random.default_rng(3)
    x = minicnn.tensor(rng.standard_normal((2, 16, 5, 4)), requires_grad=True)
    weight = minicnn.tensor(rng.standard_normal((2, 16, 3, 3)), requires_grad=True)
    bias = minicnn.tensor(rng.standard_normal(2), requires_grad=True)
    assert convolution.algorithm(x.data, weight.shape, (1, 1), (1, 1), 2, (5, 4)) == convolution.WINOGRAD_TILE
    minicnn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=1), x, weight, bias, atol=1e-6, rtol=1e-5)


@needs_fast_paths
def test_a_winograd_forward_gets_its_backward_inside_reference_only(monkeypatch):
    """The reference cannot read Winograd's kept tiles, so the door answers for them even with the fast paths off."""
    monkeypatch.setattr(convolution, "_winograd", True)
    rng, x, weight, bias = draw_arrays((4, 16, 16, 16), 3, np.float64, 2)
    x, weight, bias = (minicnn.tensor(array, requires_grad=True) for array in (x, weight, bias))
    out = F.conv2d(x, weight, bias, padding=1)
    assert isinstance(out.creator.col, winograd.WinogradTiles)
    grad = rng.standard_normal(out.shape)
    with kernels.reference_only():
        out.backward(minicnn.tensor(grad))
        expected, expected_grads = reference(x.data, weight.data, bias.data, 1, grad, (True, True, True))
    for got, reference_grad in zip((x.grad, weight.grad, bias.grad), expected_grads):
        assert_within_bound(got, reference_grad, np.float64, 4)
