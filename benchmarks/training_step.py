"""Time whole training steps (forward, backward, Adam) of the `cnn` and `lenet` models.

    python3 benchmarks/training_step.py [--device cpu|gpu] [--batch 64] [--repeat 20]

PyTorch runs the same models in the same process when it is installed, so the
ratio compares like with like. Prints a table and writes
benchmarks/results/training_step-<device>-<date>.json.
"""

import numpy as np

import minicnn
from minicnn import backend, nn, optim
from minicnn import functional as F

try:
    from common import machine_description, parse_args, synchronizer, time_call, write_results
except ImportError:  # run as `python -m benchmarks.training_step`
    from .common import machine_description, parse_args, synchronizer, time_call, write_results


def cnn():
    """The Keras-style MNIST model: 3 convolutions, 2 poolings, 2 dense layers."""
    return nn.Sequential(
        nn.Conv2D(1, 32, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(64, 64, 3), nn.ReLU(), nn.Flatten(),
        nn.Dense(576, 64), nn.ReLU(), nn.Dense(64, 10),
    )


def lenet():
    """LeNet-5 for 28x28 inputs: 6@5x5 (padding 2), pool, 16@5x5, pool, 120, 84, 10."""
    return nn.Sequential(
        nn.Conv2D(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
        nn.Dense(400, 120), nn.ReLU(), nn.Dense(120, 84), nn.ReLU(), nn.Dense(84, 10),
    )


def torch_twin(torch, model):
    """The same architecture in PyTorch (weights need not match: only speed is compared)."""
    tnn = torch.nn
    layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2D):
            layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding))
        elif isinstance(layer, nn.Dense):
            layers.append(tnn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, nn.MaxPool2D):
            layers.append(tnn.MaxPool2d(layer.pool_size))
        elif isinstance(layer, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(layer, nn.Flatten):
            layers.append(tnn.Flatten())
    return tnn.Sequential(*layers)


def main():
    args = parse_args(__doc__.splitlines()[0], repeat=20)
    xp = backend.array_module_for(args.device)
    synchronize = synchronizer(xp)
    try:
        import torch
    except ImportError:
        torch = None

    rng = np.random.default_rng(0)
    images = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, args.batch)
    rows = []
    print(f"training step (forward, backward, Adam), batch {args.batch}, {args.device}, median of {args.repeat}")
    print(f"{'model':<8} {'ms/step':>8} {'min':>7} {'max':>7} {'images/s':>9} {'torch img/s':>12} {'ratio':>6}")
    for name, build in [("cnn", cnn), ("lenet", lenet)]:
        minicnn.manual_seed(0)
        model = build().to(args.device)
        optimizer = optim.Adam(model.parameters())
        x, y = minicnn.tensor(images, device=args.device), minicnn.tensor(labels, device=args.device)

        def step():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        median, fastest, slowest = time_call(step, synchronize, args.repeat)
        row = {"model": name, "ms_per_step": median * 1e3, "min_ms": fastest * 1e3, "max_ms": slowest * 1e3,
               "images_per_second": args.batch / median}
        if torch is not None:
            torch_device = "cuda" if args.device == "gpu" else "cpu"
            twin = torch_twin(torch, model).to(torch_device)
            torch_optimizer = torch.optim.Adam(twin.parameters())
            tx = torch.from_numpy(images).to(torch_device)
            ty = torch.from_numpy(labels).to(torch_device)

            def torch_step():
                loss = torch.nn.functional.cross_entropy(twin(tx), ty)
                torch_optimizer.zero_grad()
                loss.backward()
                torch_optimizer.step()

            torch_sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
            torch_median, _, _ = time_call(torch_step, torch_sync, args.repeat)
            row["torch_images_per_second"] = args.batch / torch_median
            row["ratio_to_torch"] = torch_median / median
            row["torch_threads"] = torch.get_num_threads()
        rows.append(row)
        torch_text = (f"{row['torch_images_per_second']:>12.0f} {row['ratio_to_torch']:>6.2f}"
                      if "ratio_to_torch" in row else f"{'-':>12} {'-':>6}")
        print(f"{name:<8} {row['ms_per_step']:>8.2f} {row['min_ms']:>7.2f} {row['max_ms']:>7.2f} "
              f"{row['images_per_second']:>9.0f} {torch_text}")

    machine = machine_description(xp)
    if torch is not None:
        machine["torch"] = torch.__version__
    payload = {"machine": machine, "batch": args.batch, "repeat": args.repeat, "rows": rows}
    path = write_results("training_step", args.device, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
