"""The benchmark suite: kernels and whole training steps, minicnn against PyTorch, CPU and GPU.

    python -m benchmarks --device cpu|gpu|all [--repeat 10] [--quick] [--plot]

Each row is timed after a warm-up (first calls, CuPy kernel compilation and
allocation are not counted), as the median and spread of `repeat` calls; GPU
rows synchronise the device before reading the clock. Rows report GFLOP/s from
the FLOP count they state (matrix products: 2 * m * n * k) or GB/s for
memory-bound ops (bytes read + written once), and the ratio of PyTorch's time
to minicnn's for the same operation on the same device, measured in the same
run (> 1: minicnn is faster). Results go to benchmarks/results/<device>-<date>.json.
"""

import numpy as np

import minicnn
from minicnn import backend, models, optim
from minicnn import functional as F

# (name, C, H, F, K, padding): the convolutions of the `cnn` and `lenet` models and a wide CIFAR-sized layer.
CONV_LAYERS = [
    ("cnn.conv1", 1, 28, 32, 3, 0),
    ("cnn.conv2", 32, 13, 64, 3, 0),
    ("cnn.conv3", 64, 5, 64, 3, 0),
    ("lenet.conv1", 1, 28, 6, 5, 2),
    ("lenet.conv2", 6, 14, 16, 5, 0),
    ("cifar.wide", 128, 32, 128, 3, 1),
]
POOL_LAYERS = [("cnn.pool1", 32, 26), ("cnn.pool2", 64, 11)]  # (name, C, H), 2x2 windows
DENSE_LAYERS = [("cnn.dense1", 576, 64), ("lenet.dense1", 400, 120)]


class Row:
    """One measured operation: minicnn's callable, its work, and optionally PyTorch's twin."""

    def __init__(self, group, name, shape, run, flops=None, bytes_moved=None, torch_run=None, matmul_run=None):
        self.group, self.name, self.shape, self.run, self.torch_run = group, name, shape, run, torch_run
        self.flops, self.bytes_moved = flops, bytes_moved
        self.matmul_run = matmul_run  # the row's matrix products alone, to compare with the BLAS rate


def inference(function, *args):
    """function(*args) without recording a graph: the forward-only rows."""
    with minicnn.no_grad():
        return function(*args)


def torch_inference(torch, function, *args):
    with torch.no_grad():
        return function(*args)


def _random(xp, shape, rng, requires_grad=False):
    return minicnn.Tensor(xp.asarray(rng.standard_normal(shape, dtype=np.float32)), requires_grad=requires_grad)


def conv_rows(xp, torch, torch_device, batch):
    rng = np.random.default_rng(0)
    for name, C, H, Fo, K, padding in CONV_LAYERS:
        out_size = H + 2 * padding - K + 1
        x = _random(xp, (batch, C, H, H), rng, requires_grad=True)
        w = _random(xp, (Fo, C, K, K), rng, requires_grad=True)
        grad = xp.asarray(rng.standard_normal((batch, Fo, out_size, out_size), dtype=np.float32))
        shape = f"{batch}x{C}x{H}x{H} * {Fo}x{C}x{K}x{K} p{padding}"
        matmul_flops = 2 * batch * out_size * out_size * C * K * K * Fo
        col_bytes = 4 * (batch * C * H * H + batch * out_size * out_size * C * K * K)

        def forward(x=x, w=w, padding=padding):
            inference(F.conv2d, x, w, None, 1, padding)

        def backward(x=x, w=w, padding=padding, grad=grad):
            F.conv2d(x, w, padding=padding).backward(grad)

        # The public im2col and col2im. Their fast path builds columns by channel, (C*K*K, N*OH*OW), as PyTorch's
        # unfold/fold use (N, C*K*K, L), and returns the one-row-per-window matrix as a transposed view of it.
        def unfold(x=x, K=K, padding=padding):
            F.im2col(x.data, K, 1, padding)

        col = F.im2col(x.data, K, 1, padding)

        def fold(col=col, shape=x.shape, K=K, padding=padding):
            F.col2im(col, shape, K, 1, padding)

        twins = {}
        if torch is not None:
            tx = torch.as_tensor(backend.to_numpy(x.data), device=torch_device).requires_grad_()
            tw = torch.as_tensor(backend.to_numpy(w.data), device=torch_device).requires_grad_()
            tgrad = torch.as_tensor(backend.to_numpy(grad), device=torch_device)
            tcol = torch.nn.functional.unfold(tx.detach(), K, padding=padding)
            twins = {
                "forward": lambda tx=tx, tw=tw, p=padding: torch_inference(torch, torch.nn.functional.conv2d, tx, tw, None, 1, p),
                "backward": lambda tx=tx, tw=tw, p=padding, g=tgrad: torch.nn.functional.conv2d(tx, tw, padding=p).backward(g),
                "im2col": lambda tx=tx, K=K, p=padding: torch.nn.functional.unfold(tx.detach(), K, padding=p),
                "col2im": lambda c=tcol, H=H, K=K, p=padding: torch.nn.functional.fold(c, (H, H), K, padding=p),
            }
        weight_matrix = w.data.reshape(Fo, -1)
        grad_matrix = xp.ascontiguousarray(grad.transpose(1, 0, 2, 3).reshape(Fo, -1))
        col_matrix = F.im2col(x.data, K, 1, padding).T

        def bare_matmuls(w=weight_matrix, g=grad_matrix, c=col_matrix):
            w @ c, g @ c.T, w.T @ g  # forward, weight gradient, column gradient: the BLAS work of fwd+bwd

        # backward = the forward again plus two matrix products (weight and input gradients)
        yield Row("conv2d forward", name, shape, forward, flops=matmul_flops, torch_run=twins.get("forward"))
        yield Row("conv2d fwd+bwd", name, shape, backward, flops=3 * matmul_flops, torch_run=twins.get("backward"),
                  matmul_run=bare_matmuls)
        yield Row("im2col", name, shape, unfold, bytes_moved=col_bytes, torch_run=twins.get("im2col"))
        yield Row("col2im", name, shape, fold, bytes_moved=col_bytes, torch_run=twins.get("col2im"))


def other_rows(xp, torch, torch_device, batch):
    rng = np.random.default_rng(1)
    for name, C, H in POOL_LAYERS:
        x = _random(xp, (batch, C, H, H), rng, requires_grad=True)
        grad = xp.asarray(rng.standard_normal((batch, C, H // 2, H // 2), dtype=np.float32))
        moved = 4 * batch * C * H * H * 5 // 4
        tx = torch.as_tensor(backend.to_numpy(x.data), device=torch_device).requires_grad_() if torch else None
        tgrad = torch.as_tensor(backend.to_numpy(grad), device=torch_device) if torch else None
        yield Row("max_pool2d forward", name, f"{batch}x{C}x{H}x{H}, 2x2", lambda x=x: inference(F.max_pool2d, x, 2),
                  bytes_moved=moved,
                  torch_run=torch and (lambda tx=tx: torch_inference(torch, torch.nn.functional.max_pool2d, tx, 2)))
        yield Row("max_pool2d fwd+bwd", name, f"{batch}x{C}x{H}x{H}, 2x2", lambda x=x, g=grad: F.max_pool2d(x, 2).backward(g),
                  bytes_moved=2 * moved,
                  torch_run=torch and (lambda tx=tx, g=tgrad: torch.nn.functional.max_pool2d(tx, 2).backward(g)))
    for name, inputs, outputs in DENSE_LAYERS:
        x = _random(xp, (batch, inputs), rng, requires_grad=True)
        w = _random(xp, (inputs, outputs), rng, requires_grad=True)
        grad = xp.asarray(rng.standard_normal((batch, outputs), dtype=np.float32))
        flops = 2 * batch * inputs * outputs
        tx = torch.as_tensor(backend.to_numpy(x.data), device=torch_device).requires_grad_() if torch else None
        tw = torch.as_tensor(backend.to_numpy(w.data).T.copy(), device=torch_device).requires_grad_() if torch else None
        tgrad = torch.as_tensor(backend.to_numpy(grad), device=torch_device) if torch else None
        yield Row("linear forward", name, f"{batch}x{inputs} -> {outputs}", lambda x=x, w=w: inference(F.linear, x, w),
                  flops=flops, torch_run=torch and (lambda tx=tx, tw=tw: torch_inference(torch, torch.nn.functional.linear, tx, tw)))
        yield Row("linear fwd+bwd", name, f"{batch}x{inputs} -> {outputs}", lambda x=x, w=w, g=grad: F.linear(x, w).backward(g),
                  flops=3 * flops,
                  torch_run=torch and (lambda tx=tx, tw=tw, g=tgrad: torch.nn.functional.linear(tx, tw).backward(g)))
    logits = _random(xp, (batch, 10), rng, requires_grad=True)
    labels = minicnn.Tensor(xp.asarray(rng.integers(0, 10, batch)))
    tlogits = torch.as_tensor(backend.to_numpy(logits.data), device=torch_device).requires_grad_() if torch else None
    tlabels = torch.as_tensor(backend.to_numpy(labels.data), device=torch_device) if torch else None
    yield Row("cross_entropy fwd+bwd", "loss", f"{batch}x10", lambda: F.cross_entropy(logits, labels).backward(),
              bytes_moved=4 * batch * 10 * 3,
              torch_run=torch and (lambda: torch.nn.functional.cross_entropy(tlogits, tlabels).backward()))
    yield _adam_row(xp, torch, torch_device)


def _adam_row(xp, torch, torch_device):
    minicnn.manual_seed(0)
    model = models.cnn().to(backend.device_of(xp.zeros(1)))
    for parameter in model.parameters():
        parameter.grad = xp.ones_like(parameter.data)
    optimizer = optim.Adam(model.parameters())
    count = sum(parameter.numel() for parameter in model.parameters())
    torch_run = None
    if torch is not None:
        params = [torch.zeros(tuple(p.shape), device=torch_device, requires_grad=True) for p in model.parameters()]
        for p in params:
            p.grad = torch.ones_like(p)
        torch_optimizer = torch.optim.Adam(params)
        torch_run = torch_optimizer.step
    # Adam reads parameter, gradient and both moments and writes parameter and moments: 7 arrays.
    return Row("adam step", "cnn params", f"{count:,} parameters", optimizer.step, bytes_moved=7 * 4 * count,
               torch_run=torch_run)


def training_step(xp, torch, torch_device, model_name, batch, image_size=28):
    """A Row for one forward + backward + Adam step of a model on batch x 1 x image_size x image_size images."""
    rng = np.random.default_rng(2)
    minicnn.manual_seed(0)
    device = backend.device_of(xp.zeros(1))
    model = models.build(model_name, image_size=image_size).to(device)
    optimizer = optim.Adam(model.parameters())
    images = rng.random((batch, 1, image_size, image_size), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    x, y = minicnn.tensor(images, device=device), minicnn.tensor(labels, device=device)

    def step():
        # On the GPU, skip the host-side label check (a sync per step), as Trainer does; labels here are valid.
        loss = F.cross_entropy(model(x), y, check_labels=xp is np)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    torch_step = None
    if torch is not None:
        twin = torch_model(torch, model).to(torch_device)
        torch_optimizer = torch.optim.Adam(twin.parameters())
        tx, ty = torch.from_numpy(images).to(torch_device), torch.from_numpy(labels).to(torch_device)

        def torch_step():
            loss = torch.nn.functional.cross_entropy(twin(tx), ty)
            torch_optimizer.zero_grad()
            loss.backward()
            torch_optimizer.step()

    shape = f"batch {batch}" if image_size == 28 else f"batch {batch}, {image_size}x{image_size}"
    return Row("training step", model_name, shape, step, torch_run=torch_step)


def resnet_rows(xp, torch, torch_device, quick=False, groups=None):
    """ResNet-18's rows (forward and training step at 32x32 batch 64 and 224x224 batch 4), then ResNet-20's training
    step (32x32, batch 64 and 128): benchmarks/resnet_rows.py. groups: a set of group names, to build only the
    models those rows need (None: all)."""
    from .resnet_rows import RECIPES, RESNET20_GROUP, resnet18_rows, resnet20_rows  # not above: they use Row

    if groups is None or groups & {recipe[0] for recipe in RECIPES}:
        yield from resnet18_rows(xp, torch, torch_device, quick)
    if groups is None or RESNET20_GROUP in groups:
        yield from resnet20_rows(xp, torch, torch_device, quick)


def torch_model(torch, model):
    """The same architecture in PyTorch (weights need not match: only speed is compared)."""
    tnn, layers = torch.nn, []
    for layer in model:
        kind = type(layer).__name__
        if kind == "Conv2D":
            layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding))
        elif kind == "Dense":
            layers.append(tnn.Linear(layer.in_features, layer.out_features))
        elif kind == "MaxPool2D":
            layers.append(tnn.MaxPool2d(layer.pool_size))
        else:
            layers.append({"ReLU": tnn.ReLU, "Flatten": tnn.Flatten}[kind]())
    return tnn.Sequential(*layers)
