"""ResNet-18 rows: forward and training step, minicnn against PyTorch in the same run, and the peak memory
of the tutorial's 224x224 batch-4 training step.

    python -m benchmarks.resnet_rows [--device cpu|gpu] [--repeat 5] [--quick] [--no-torch] [--out FOLDER]

The network is torchvision's ResNet-18 (minicnn.models.resnet18, and the same architecture written in
plain torch with torchvision's names, since torchvision does not import here) with its head replaced
by Linear(512, 10), as in the fine-tuning tutorial. A training step is forward, cross-entropy,
backward and SGD (lr 0.001, momentum 0.9) over every parameter; the 'frozen backbone' step trains
fc alone (requires_grad_(False) on the rest), the tutorial's fixed-feature-extractor variant. The
32x32 rows feed CIFAR-sized images to the same network (ImageNet stem: 8x8 after the stem, 1x1 in
layer4). Rates are GFLOP/s from the FLOPs of the convolutions and fc, counted on the model by forward
hooks (a training step counted as three forwards: forward, and the input and weight gradients).

Peak memory (CPU): the most memory NumPy held at once during one training step, traced by Python's
tracemalloc (NumPy reports its array allocations to it), counting the model, its gradients, SGD's
momentum and the batch, all made after tracing starts. On the GPU: CuPy's pool after the step.
The rows are also part of `python -m benchmarks` (suite.resnet_rows), with the 'resnet20 train step' rows
of resnet20_rows: He et al.'s CIFAR ResNet-20 (minicnn.models.resnet(20), torch_resnet.cifar_resnet) at
batch 64 and 128 of 3x32x32 images, trained by the same step.
"""

import argparse
import datetime
import os
import tracemalloc

import numpy as np

import minicnn
from minicnn import backend, models, nn, optim
from minicnn import functional as F

from . import torch_resnet
from .common import RESULTS, SCRATCH, machine_description, synchronizer, time_alternating, write_json
from .suite import Row

# (row group, batch, image side, frozen backbone)
RECIPES = [
    ("resnet18 forward", 64, 32, False),
    ("resnet18 train step", 64, 32, False),
    ("resnet18 forward", 4, 224, False),
    ("resnet18 train step", 4, 224, False),
    ("resnet18 frozen step", 4, 224, True),
]
RESNET20_GROUP, RESNET20_BATCHES = "resnet20 train step", (64, 128)
MEMORY_LIMIT_MIB = 2048  # the bound for the 224x224 batch-4 step on the CPU


def fine_tuning_model(device, frozen=False):
    """resnet18 with its head replaced by Linear(512, 10), on `device`; the backbone frozen if asked."""
    minicnn.manual_seed(0)
    model = models.resnet18()
    if frozen:
        model.requires_grad_(False)
    model.fc = nn.Linear(512, 10)
    return model.to(device)


def torch_twin(torch, frozen=False):
    """The same network in plain torch with torchvision's module names (weights need not match: speed only)."""
    twin = torch_resnet.resnet18(torch)
    if frozen:
        twin.requires_grad_(False)
    twin.fc = torch.nn.Linear(512, 10)
    return twin


def forward_flops(model, images):
    """FLOPs of one forward pass: 2 * multiply-adds of every convolution and fully connected layer."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Conv2D):
            total += 2 * output.data.size * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, (nn.Dense, nn.Linear)):
            total += 2 * output.data.size * layer.in_features

    handles = [layer.register_forward_hook(count) for layer in model.modules()
               if isinstance(layer, (nn.Conv2D, nn.Dense, nn.Linear))]
    with minicnn.no_grad(), model.evaluating():
        model(images)
    for handle in handles:
        handle.remove()
    return total


def make_step(model, images, labels, check_labels=True):
    """One training step of the recipe: forward, cross-entropy, backward, SGD(lr 0.001, momentum 0.9)."""
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(images), labels, check_labels=check_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def make_torch_step(torch, twin, images, labels):
    """make_step's twin in torch: forward, cross-entropy, backward, SGD(lr 0.001, momentum 0.9)."""
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.001, momentum=0.9)

    def step():
        loss = torch.nn.functional.cross_entropy(twin(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def resnet18_rows(xp, torch, torch_device, quick=False):
    """The Rows of RECIPES; each has .images, its batch size. quick: the 32x32 rows at batch 8, a smoke test."""
    device = backend.device_of(xp.zeros(1))
    rng = np.random.default_rng(4)
    for group, batch, side, frozen in RECIPES:
        if quick:
            if side > 32:
                continue
            batch = 8
        model = fine_tuning_model(device, frozen)
        images_host = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
        labels_host = rng.integers(0, 10, batch)
        images, labels = minicnn.tensor(images_host, device=device), minicnn.tensor(labels_host, device=device)
        flops = forward_flops(model, images)
        if group == "resnet18 forward":
            model.eval()

            def run(model=model, images=images):
                with minicnn.no_grad():
                    model(images)
        else:
            # On the GPU, skip the host-side label check (a sync per step), as Trainer does; labels here are valid.
            run = make_step(model.train(), images, labels, check_labels=xp is np)
            flops *= 1 if frozen else 3  # a frozen backbone computes no gradient through the convolutions
        torch_run = None
        if torch is not None:
            twin = torch_twin(torch, frozen).to(torch_device)
            tx = torch.from_numpy(images_host).to(torch_device)
            ty = torch.from_numpy(labels_host).to(torch_device)
            if group == "resnet18 forward":
                twin.eval()

                def torch_run(twin=twin, tx=tx):
                    with torch.no_grad():
                        twin(tx)
            else:
                torch_run = make_torch_step(torch, twin.train(), tx, ty)
        row = Row(group, "resnet18", f"batch {batch}, 3x{side}x{side}", run, flops=flops, torch_run=torch_run)
        row.images = batch
        yield row


def resnet20_rows(xp, torch, torch_device, quick=False):
    """'resnet20 train step' Rows, each with .images, its batch size: minicnn.models.resnet(20) (10 classes) on
    random 3x32x32 images at RESNET20_BATCHES, a step of make_step (SGD, momentum 0.9, as the ResNet-18
    rows), against torch_resnet.cifar_resnet(torch, 20) stepped the same way. quick: batch 8, a smoke test."""
    device = backend.device_of(xp.zeros(1))
    rng = np.random.default_rng(6)
    for batch in (8,) if quick else RESNET20_BATCHES:
        minicnn.manual_seed(0)
        model = models.resnet(20).to(device).train()
        images_host = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        labels_host = rng.integers(0, 10, batch)
        images, labels = minicnn.tensor(images_host, device=device), minicnn.tensor(labels_host, device=device)
        flops = 3 * forward_flops(model, images)  # forward, and the input and weight gradients
        run = make_step(model, images, labels, check_labels=xp is np)  # no label check on the GPU, as above
        torch_run = None
        if torch is not None:
            twin = torch_resnet.cifar_resnet(torch, 20).to(torch_device).train()
            tx, ty = torch.from_numpy(images_host).to(torch_device), torch.from_numpy(labels_host).to(torch_device)
            torch_run = make_torch_step(torch, twin, tx, ty)
        row = Row(RESNET20_GROUP, "resnet20", f"batch {batch}, 3x32x32", run, flops=flops, torch_run=torch_run)
        row.images = batch
        yield row


def peak_step_memory_mib(device="cpu", batch=4, side=224, frozen=False):
    """{'peak_mib', 'model_mib'}: the most memory held during one training step (model, gradients, momentum,
    batch and every intermediate), and what the model alone holds. CPU: tracemalloc; GPU: CuPy's pool."""
    rng = np.random.default_rng(5)
    images_host = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
    labels_host = rng.integers(0, 10, batch)
    if device == "gpu":
        pool = backend.array_module_for("gpu").get_default_memory_pool()
        pool.free_all_blocks()
        model = fine_tuning_model(device, frozen).train()
        model_mib = pool.used_bytes() / 2**20
        images, labels = minicnn.tensor(images_host, device=device), minicnn.tensor(labels_host, device=device)
        make_step(model, images, labels, check_labels=False)()
        return {"peak_mib": pool.total_bytes() / 2**20, "model_mib": model_mib, "measured_by": "CuPy pool"}
    tracemalloc.start()
    try:
        model = fine_tuning_model(device, frozen).train()
        model_mib = tracemalloc.get_traced_memory()[0] / 2**20
        images, labels = minicnn.tensor(images_host), minicnn.tensor(labels_host)
        make_step(model, images, labels)()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"peak_mib": peak / 2**20, "model_mib": model_mib, "measured_by": "tracemalloc"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resnet_rows", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per row (after 2 warm-up calls)")
    parser.add_argument("--quick", action="store_true", help="32x32 rows at batch 8, 2 repeats, no memory: checks that it runs")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results, scratch with --quick)")
    args = parser.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    xp = backend.array_module_for(args.device)
    backend.set_default_device(args.device)
    synchronize = synchronizer(xp)
    torch_device = "cuda" if args.device == "gpu" else "cpu"
    torch_synchronize = torch.cuda.synchronize if (torch is not None and args.device == "gpu") else (lambda: None)
    repeat, warmup = (2, 1) if args.quick else (args.repeat, 2)
    rounds = min(3, repeat)
    settle = 0.3 if (args.device == "cpu" and torch is not None) else 0.0  # see common.time_alternating

    print(f"{args.device.upper()}: median of {repeat} calls in {rounds} rounds after {warmup} warm-up calls, "
          "alternating with PyTorch; ratio = torch / minicnn time (> 1: minicnn is faster)")
    print(f"{'row':<22} {'shape':<22} {'ms':>9} {'GFLOP/s':>8} {'img/s':>7} {'torch ms':>9} {'ratio':>6}")
    results = []
    for row in resnet18_rows(xp, torch, torch_device, quick=args.quick):
        runs = [(row.run, synchronize)] + ([(row.torch_run, torch_synchronize)] if row.torch_run else [])
        summaries, ratios = time_alternating(runs, repeat, warmup, rounds, settle)
        median, fastest, slowest = summaries[0]
        result = {"group": row.group, "name": row.name, "shape": row.shape, "median_ms": median * 1e3,
                  "min_ms": fastest * 1e3, "max_ms": slowest * 1e3, "flops": row.flops,
                  "gflops_per_s": row.flops / median / 1e9, "images_per_s": row.images / median}
        versus = f"{'-':>9} {'-':>6}"
        if row.torch_run:
            result["torch_median_ms"] = summaries[1][0] * 1e3
            result["torch_over_minicnn"] = ratios[1]
            result["torch_images_per_s"] = row.images / summaries[1][0]
            versus = f"{result['torch_median_ms']:9.1f} {ratios[1]:6.2f}"
        print(f"{row.group:<22} {row.shape:<22} {median * 1e3:9.1f} {result['gflops_per_s']:8.1f} "
              f"{result['images_per_s']:7.1f} {versus}", flush=True)
        results.append(result)

    memory = {}
    if not args.quick:
        for frozen in (False, True):
            key = "train_step_224_batch4" + ("_frozen_backbone" if frozen else "")
            memory[key] = peak_step_memory_mib(args.device, frozen=frozen)
            print(f"peak memory, 224x224 batch-4 step{' (frozen backbone)' if frozen else ''}: "
                  f"{memory[key]['peak_mib']:.0f} MiB (model alone {memory[key]['model_mib']:.0f} MiB; "
                  f"{memory[key]['measured_by']}; limit {MEMORY_LIMIT_MIB} MiB)")

    machine = machine_description(xp)
    machine["load_average_after"] = os.getloadavg()  # other work on a shared machine slows every row
    if torch is not None:
        machine["torch"] = torch.__version__
        machine["torch_threads"] = torch.get_num_threads()
    date = datetime.date.today().isoformat()
    payload = {"device": args.device, "date": date, "machine": machine, "repeat": repeat, "warmup": warmup,
               "rounds": rounds, "settle_s": settle, "rows": results, "peak_memory": memory}
    out = args.out or (SCRATCH if args.quick else RESULTS)
    path = write_json(out, f"resnet18-{args.device}-{date}.json", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
