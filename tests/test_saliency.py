"""Saliency maps and Grad-CAM (minicnn/viz/saliency.py), checked against finite differences and by hand."""

import numpy as np
import pytest

import minicnn
from minicnn import models, nn
from minicnn.errors import ShapeError
from minicnn.viz.saliency import (
    grad_cam, grad_cam_layer, image_batch, named_layers, receptive_field_grid, resize_bilinear, saliency_map,
)


def tiny_model(in_channels=1, dtype=np.float64):
    """8x8 images -> 3 classes; float64 so that finite differences are exact enough."""
    minicnn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2D(in_channels, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(3 * 4 * 4, 3),
    )
    return model.to(dtype=dtype)


def logit(model, image, cls):
    with minicnn.no_grad():
        return float(model(minicnn.tensor(image[None])).numpy()[0, cls])


@pytest.mark.parametrize("in_channels", [1, 2])
def test_saliency_is_the_largest_gradient_magnitude_over_channels(in_channels):
    model = tiny_model(in_channels)
    image = np.random.default_rng(1).standard_normal((in_channels, 8, 8))
    predicted, saliency = saliency_map(model, image)
    assert saliency.shape == (8, 8) and saliency.dtype == np.float64
    assert predicted == int(np.argmax(model(minicnn.tensor(image[None])).numpy()))
    assert np.all(saliency >= 0) and saliency.max() > 0
    eps = 1e-6
    for row, column in [(2, 3), (5, 6), (0, 0)]:
        finite_differences = []
        for channel in range(in_channels):
            plus, minus = image.copy(), image.copy()
            plus[channel, row, column] += eps
            minus[channel, row, column] -= eps
            finite_differences.append((logit(model, plus, predicted) - logit(model, minus, predicted)) / (2 * eps))
        assert saliency[row, column] == pytest.approx(max(abs(d) for d in finite_differences), rel=1e-5, abs=1e-9)


def test_maps_leave_the_model_as_they_found_it():
    model = tiny_model()
    image = np.random.default_rng(2).standard_normal((1, 8, 8))
    before = {name: parameter.data.copy() for name, parameter in model.named_parameters()}
    for function in (saliency_map, grad_cam):
        function(model, image)
        assert model.training and all(module.training for module in model.modules())
        assert all(parameter.grad is None and parameter.requires_grad for parameter in model.parameters())
        assert all(np.array_equal(parameter.data, before[name]) for name, parameter in model.named_parameters())
    model.eval()
    saliency_map(model, image)
    assert not model.training
    assert not any(module._forward_hooks or module._backward_hooks for module in model)  # grad_cam's are gone


def test_grad_cam_equals_the_formula_worked_by_hand():
    model = tiny_model()
    image = np.random.default_rng(3).standard_normal((1, 8, 8))
    # By hand: the first convolution's maps A (same size as the image, thanks to padding 1),
    # the gradient of the predicted logit with respect to them, alpha_k = its mean over each map.
    x = minicnn.tensor(image[None])
    maps = model[0](x).retain_grad()
    logits = model[4](model[3](model[2](model[1](maps))))
    predicted = int(np.argmax(logits.numpy()))
    logits[0, predicted].backward()
    alpha = maps.grad[0].mean(axis=(1, 2))
    expected = np.maximum(np.tensordot(alpha, maps.data[0], axes=1), 0)
    expected = expected / expected.max()
    model.zero_grad()

    cls, cam = grad_cam(model, image, layer=model[0])
    assert cls == predicted
    np.testing.assert_allclose(cam, expected, atol=1e-12)  # same size: the resize changes nothing
    assert np.array_equal(grad_cam(model, image, layer="0 Conv2D")[1], cam)  # by name


def test_grad_cam_defaults_to_the_last_conv_layer_after_its_relu_in_0_1_at_image_size():
    minicnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Conv2D(4, 4, 3), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Flatten(), nn.Dense(4 * 4 * 4, 5))
    image = np.random.default_rng(4).random((12, 12))
    cls, cam, info = grad_cam(model, image, details=True)
    assert 0 <= cls < 5 and cam.shape == (12, 12)
    assert cam.min() >= 0 and cam.max() <= 1
    assert info == {"layer": "3 ReLU", "map_shape": (8, 8), "placed": "receptive fields"}
    for layer in (model[3], "3 ReLU", "3", 3):
        assert np.array_equal(grad_cam(model, image, layer=layer)[1], cam)
    assert grad_cam_layer(nn.Sequential(nn.Conv2D(1, 2, 3), nn.Flatten()))[0] == "0 Conv2D"  # no activation


def test_receptive_field_grid_puts_each_cell_at_the_centre_of_the_pixels_it_sees():
    """Independently of the formula: with positive weights, average pooling and a positive image,
    the gradient of one output cell is non-zero exactly on its receptive field."""
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.AvgPool2D(2), nn.Conv2D(2, 2, 3, padding=1),
                          nn.Conv2D(2, 2, (3, 5), stride=2)).to(dtype=np.float64)
    for parameter in model.parameters():
        parameter.data[...] = np.abs(parameter.data) + 0.1
    image = minicnn.tensor(np.random.default_rng(7).random((1, 1, 30, 30)) + 0.5, requires_grad=True)
    output = model(image)
    (origin_y, spacing_y), (origin_x, spacing_x) = receptive_field_grid(model, model[4], (30, 30), output.shape[2:])
    assert (spacing_y, spacing_x) == (4, 4)
    for i, j in [(1, 1), (2, 2), (3, 1)]:  # cells whose field lies inside the image (padding clips the border)
        image.grad = None
        one_hot = np.zeros(output.shape)
        one_hot[0, 0, i, j] = 1
        model(image).backward(one_hot)
        rows, columns = np.nonzero(image.grad[0, 0])
        assert (rows.min() + rows.max()) / 2 == origin_y + spacing_y * i
        assert (columns.min() + columns.max()) / 2 == origin_x + spacing_x * j
    # the cnn model: its last convolution's 3x3 cells sit on pixels 8.5, 12.5 and 16.5 of 28
    cnn = models.cnn()
    assert receptive_field_grid(cnn, cnn[7], (28, 28), (3, 3)) == ((8.5, 4.0), (8.5, 4.0))
    assert receptive_field_grid(cnn, cnn[4], (28, 28), (11, 11)) == ((3.5, 2.0), (3.5, 2.0))
    assert receptive_field_grid(cnn, cnn[4], (28, 28), (12, 12)) is None  # not what the layers give: stretched


def _torch_cnn_like(model, torch):
    """models.cnn() rebuilt in PyTorch with the same weights (Dense stores (in, out), Linear (out, in))."""
    layers = []
    for module in model:
        if isinstance(module, nn.Conv2D):
            layer = torch.nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size).double()
            layer.weight.data = torch.from_numpy(module.weight.data.copy())
        elif isinstance(module, nn.Dense):
            layer = torch.nn.Linear(module.in_features, module.out_features).double()
            layer.weight.data = torch.from_numpy(module.weight.data.T.copy())
        elif isinstance(module, nn.MaxPool2D):
            layer = torch.nn.MaxPool2d(2)
        else:
            layer = {nn.ReLU: torch.nn.ReLU, nn.Flatten: torch.nn.Flatten}[type(module)]()
        if hasattr(module, "bias"):
            layer.bias.data = torch.from_numpy(module.bias.data.copy())
        layers.append(layer)
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("layer", [None, "6 Conv2D", "5 MaxPool2D", "4 ReLU", "3 Conv2D", "0 Conv2D"])
def test_grad_cam_matches_pytorch_grad_cam_on_the_same_weights(layer):
    """Selvaraju et al. computed with PyTorch's autograd: alpha_k = spatial mean of d score / d A_k,
    cam = relu(sum_k alpha_k A_k) / max, then laid on the image as minicnn does."""
    torch = pytest.importorskip("torch")
    minicnn.manual_seed(3)
    model = models.cnn().to(dtype=np.float64)
    image = np.random.default_rng(8).random((28, 28))
    predicted, cam, info = grad_cam(model, image, layer=layer, details=True)

    twin = _torch_cnn_like(model, torch)
    position = int(info["layer"].split()[0])
    activations = twin[: position + 1](torch.from_numpy(image[None, None]))
    activations.retain_grad()
    logits = twin[position + 1:](activations)
    assert int(logits.argmax()) == predicted
    logits[0, predicted].backward()
    alpha = activations.grad[0].mean(dim=(1, 2))
    reference = torch.relu((alpha[:, None, None] * activations[0]).sum(dim=0)).detach().numpy()
    reference = reference / reference.max() if reference.max() > 0 else reference
    assert reference.shape == info["map_shape"]
    grid = receptive_field_grid(model, model[position], (28, 28), reference.shape)
    np.testing.assert_allclose(cam, resize_bilinear(reference, (28, 28), grid), atol=1e-10)


def test_grad_cam_is_zero_where_every_map_argues_against_the_class():
    # Positive maps (positive weights, bias and image) and a single class whose dense weights are all
    # negative: every alpha_k < 0, so sum_k alpha_k A_k < 0 everywhere and the ReLU leaves nothing.
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 4 * 4, 1)).to(dtype=np.float64)
    model[0].weight.data[...] = 0.1
    model[0].bias.data[...] = 1.0
    model[3].weight.data[...] = -np.linspace(0.1, 1.0, 32)[:, None]
    cls, cam = grad_cam(model, np.random.default_rng(6).random((6, 6)))
    assert cls == 0
    np.testing.assert_array_equal(cam, np.zeros((6, 6)))


def test_grad_cam_needs_a_conv_layer_of_the_model():
    dense_only = nn.Sequential(nn.Flatten(), nn.Dense(16, 2))
    with pytest.raises(ValueError, match="no Conv2D"):
        grad_cam(dense_only, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="not a layer of the model"):
        grad_cam(tiny_model(), np.zeros((8, 8)), layer=nn.Conv2D(1, 1, 1))


def test_resize_bilinear():
    row = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(resize_bilinear(row, (1, 4)), [[0.0, 0.25, 0.75, 1.0]])
    array = np.random.default_rng(5).random((3, 5))
    np.testing.assert_array_equal(resize_bilinear(array, (3, 5)), array)
    np.testing.assert_allclose(resize_bilinear(np.full((2, 2), 0.3), (7, 9)), np.full((7, 9), 0.3))
    big = resize_bilinear(array, (30, 50))
    assert big.min() >= array.min() and big.max() <= array.max()
    # a grid puts cell u on pixel origin + spacing * u; pixels beyond the outer cells take their values
    placed = resize_bilinear(np.array([[0.0, 1.0, 0.0]]), (1, 9), grid=((0.0, 1.0), (2.0, 2.0)))
    np.testing.assert_allclose(placed, [[0, 0, 0, 0.5, 1, 0.5, 0, 0, 0]])


def test_image_batch_accepts_one_image_in_any_layout():
    model = tiny_model(dtype=np.float32)
    pixels = np.full((8, 8), 255, dtype=np.uint8)
    for image in (pixels, pixels[None], pixels[None, None]):
        batch = image_batch(model, image)
        assert batch.shape == (1, 1, 8, 8) and batch.dtype == np.float32 and float(batch.data.max()) == 1.0
    assert image_batch(tiny_model(), minicnn.tensor(np.zeros((1, 8, 8)))).dtype == np.float64
    with pytest.raises(ShapeError, match=r"one image"):
        image_batch(model, np.zeros((2, 1, 8, 8)))


def test_named_layers_follow_the_parameter_names():
    inner = nn.Sequential(nn.ReLU(), nn.Flatten())
    model = nn.Sequential(nn.Conv2D(1, 2, 3), inner)
    assert [name for name, _ in named_layers(model)] == ["0 Conv2D", "1.0 ReLU", "1.1 Flatten"]
    assert [module for _, module in named_layers(model)] == [model[0], inner[0], inner[1]]
    assert named_layers(nn.ReLU())[0][0] == "ReLU"
