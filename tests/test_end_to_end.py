"""End to end without the training loop: a small CNN learns a synthetic image task with minicnn's layers, loss and optimizers."""

import numpy as np

import minicnn
from minicnn import functional as F
from minicnn import nn, optim
from conftest import BARS_CLASSES as CLASSES, BARS_SIZE as SIZE, bars_dataset as _bars_dataset, to_host


def _small_cnn(dropout=0.0):
    layers = [nn.Conv2D(1, 8, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Dense(8 * 5 * 5, len(CLASSES)))
    return nn.Sequential(*layers)


def _train(model, optimizer, x, labels, steps, batch_size=None, seed=0):
    """Minibatch (or full-batch) training; returns the loss of every step."""
    rng = np.random.default_rng(seed)
    losses = []
    count = len(labels)
    for _ in range(steps):
        if batch_size is None:
            batch_x, batch_labels = x, labels
        else:
            index = rng.choice(count, batch_size, replace=False)
            batch_x, batch_labels = x[index], labels[index]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch_x), batch_labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    return losses


def _accuracy(model, x, labels):
    model.eval()
    with minicnn.no_grad():
        predictions = to_host(model(x)).argmax(axis=1)
    model.train()
    return float((predictions == to_host(labels)).mean())


def _data(device, dtype=np.float32):
    images, labels = _bars_dataset()
    x = minicnn.tensor(images.astype(dtype), device=device)
    y = minicnn.tensor(labels, device=device)
    return x, y


def test_dataset_is_balanced_and_untrained_model_is_not_already_perfect(device):
    images, labels = _bars_dataset()
    assert images.shape == (102, 1, SIZE, SIZE)
    np.testing.assert_array_equal(np.bincount(labels), [34, 34, 34])
    model = _small_cnn().to(device)
    x, y = _data(device)
    assert _accuracy(model, x, y) < 0.9


def test_adam_learns_bars_to_full_training_accuracy(device):
    model = _small_cnn().to(device)
    x, y = _data(device)
    losses = _train(model, optim.Adam(model.parameters(), lr=0.02), x, y, steps=80)
    assert losses[-1] < 0.25 * losses[0]
    assert _accuracy(model, x, y) == 1.0
    assert all(p.dtype == np.float32 and p.device == device for p in model.parameters())


def test_sgd_momentum_learns_bars_to_full_training_accuracy(device):
    model = _small_cnn().to(device)
    x, y = _data(device)
    losses = _train(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), x, y, steps=100)
    assert losses[-1] < 0.25 * losses[0]
    assert _accuracy(model, x, y) == 1.0


def test_minibatch_adam_with_dropout_learns_bars(device):
    model = _small_cnn(dropout=0.2).to(device)
    x, y = _data(device)
    _train(model, optim.Adam(model.parameters(), lr=0.02), x, y, steps=100, batch_size=32)
    assert _accuracy(model, x, y) == 1.0


def test_float64_training(device):
    model = _small_cnn().to(device)
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(np.float64)
    x, y = _data(device, dtype=np.float64)
    optimizer = optim.Adam(model.parameters(), lr=0.02)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    assert loss.dtype == np.float64
    loss.backward()
    assert all(p.grad.dtype == np.float64 for p in model.parameters())
    losses = _train(model, optimizer, x, y, steps=80)
    assert losses[-1] < 0.25 * losses[0]
    assert _accuracy(model, x, y) == 1.0
    assert all(p.dtype == np.float64 for p in model.parameters())


def _seeded_run(seed, device):
    minicnn.manual_seed(seed)
    model = _small_cnn(dropout=0.3).to(device)
    x, y = _data(device)
    return _train(model, optim.Adam(model.parameters(), lr=0.02), x, y, steps=15, batch_size=32)


def test_manual_seed_makes_training_reproducible(device):
    first = _seeded_run(123, device)
    second = _seeded_run(123, device)
    assert first == second
    other = _seeded_run(124, device)
    assert other != first
