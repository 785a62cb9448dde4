"""Time whole training steps (forward, backward, Adam) of the `cnn` and `lenet` models.

    python3 benchmarks/training_step.py [--device cpu|gpu] [--batch 64] [--repeat 20]

PyTorch runs the same models in the same process when it is installed, so the
ratio compares like with like. Prints a table and writes
benchmarks/results/training_step-<device>-<date>.json.
"""

import argparse
import datetime
import json
import pathlib
import statistics
import time

import numpy as np

import minicnn
from minicnn import backend, nn, optim
from minicnn import functional as F

try:
    from conv_layers import machine_description
except ImportError:  # run as `python -m benchmarks.training_step`
    from .conv_layers import machine_description


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


def median_step_seconds(step, synchronize, repeat):
    for _ in range(3):  # warm-up
        step()
    synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=backend.DEVICES)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    xp = backend.array_module_for(args.device)
    synchronize = (lambda: xp.cuda.get_current_stream().synchronize()) if xp is not np else (lambda: None)
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

        median, fastest, slowest = median_step_seconds(step, synchronize, args.repeat)
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
            torch_median, _, _ = median_step_seconds(torch_step, torch_sync, args.repeat)
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
    out_dir = pathlib.Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"training_step-{args.device}-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps({"machine": machine, "batch": args.batch, "repeat": args.repeat, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
