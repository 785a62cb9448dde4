"""Each 3x3 stride-1 convolution layer, forward + backward, by im2col, F(2x2, 3x3) and F(4x4, 3x3), alternating.

The measurements behind minicnn.kernels.convolution's choice of algorithm per layer: the
three run one after the other in every round, so they see the same machine load, and the
medians are printed (and written as JSON with --json).

    python3 -m benchmarks.conv_algorithms                       # every layer at batch 64
    python3 -m benchmarks.conv_algorithms --batch 256 --layers cnn.conv2,cnn.conv3
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -m benchmarks.conv_algorithms   # OpenBLAS's own kernels

--blas-threads 1 limits OpenBLAS to one thread (threadpoolctl, and PyTorch's to one with --torch); on a
loaded machine its spinning threads otherwise measure the load more than the algorithm. --cpu-time
times this thread's CPU time instead of the wall clock: with one BLAS thread that is all the work,
and it hardly moves with the load of other processes. --block-bytes sets winograd.BLOCK_BYTES.
--torch adds PyTorch's same layer.
"""

import argparse
import json
import statistics
import time

import numpy as np

from minicnn import backend
from minicnn.kernels import convolution, cpu_windows, winograd

from .common import blas_kernels

# name: (C, H = W, F, padding), the input of each 3x3 stride-1 layer of the models in minicnn.models.
LAYERS = {
    "cnn.conv1": (1, 28, 32, 0),
    "cnn.conv2": (32, 13, 64, 0),
    "cnn.conv3": (64, 5, 64, 0),
    "cifar_cnn.conv1": (3, 32, 32, 1),
    "cifar_cnn.conv2": (32, 16, 64, 1),
    "cifar_cnn.conv3": (64, 8, 128, 1),
    "resnet20.16": (16, 32, 16, 1),
    "resnet20.32": (32, 16, 32, 1),
    "resnet20.64": (64, 8, 64, 1),
    "resnet18.64": (64, 56, 64, 1),
    "resnet18.128": (128, 28, 128, 1),
    "resnet18.256": (256, 14, 256, 1),
    "resnet18.512": (512, 7, 512, 1),
}


def algorithms(x, weight, bias, grad, padding, out_size):
    """{name: a function running forward + backward}, for im2col, F(2x2, 3x3) and F(4x4, 3x3)."""
    wanted = (True, True, True)

    def im2col():
        with convolution.im2col_only():  # else the rule would send the larger layers to Winograd
            out, col = convolution.forward(cpu_windows, x, weight, bias, (1, 1), padding, out_size)
            convolution.backward(cpu_windows, grad, weight, col, x.shape, (1, 1), padding, wanted)

    def winograd_with(tile):
        def run():
            out, kept = winograd.forward(x, weight, bias, padding, out_size, tile)
            winograd.backward(grad, weight, kept, x.shape, padding, wanted, tile)
        return run

    return {"im2col": im2col, "F(2,3)": winograd_with(2), "F(4,3)": winograd_with(4)}


def torch_layer(torch, x, weight, bias, grad, padding):
    """PyTorch's forward + backward of the same layer (x needs its gradient too)."""
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    tgrad = torch.tensor(grad)

    def run():
        tx.grad = tw.grad = tb.grad = None  # fresh gradients, as minicnn's backward writes them
        torch.nn.functional.conv2d(tx, tw, tb, padding=padding).backward(tgrad)

    return run


SETTLE_S = 0.3  # the pause before each timed call when PyTorch takes part, as the suite's rows pause


def measure(name, batch, rounds, torch=None, clock=time.perf_counter):
    """{algorithm: median ms} for layer `name` at `batch`, the algorithms alternating round by round."""
    C, size, F, pad = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, size, size), dtype=np.float32)
    weight = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    out_size = (size + 2 * pad - 2,) * 2
    grad = rng.standard_normal((batch, F, *out_size), dtype=np.float32)
    runs = algorithms(x, weight, bias, grad, (pad, pad), out_size)
    if torch is not None:
        runs["torch"] = torch_layer(torch, x, weight, bias, grad, pad)
    for run in runs.values():
        run()
    # With PyTorch in the race each call gets a pause and a warm-up call first: a library's thread pool
    # spins for a while after its last call (OpenBLAS about 100 ms here), and on 2 cores the other
    # library's threads then wait for time slices (benchmarks/NOTES.md, step 5), which made PyTorch's
    # layer read 2-3x slower here than in the suite's rows.
    settle = SETTLE_S if torch is not None else 0
    times = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            if settle:
                time.sleep(settle)
                run()
            started = clock()
            run()
            times[key].append((clock() - started) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def blas_kernel():
    """OpenBLAS's kernel family (threadpoolctl's `architecture`) and threads, or 'unknown'."""
    return ", ".join(blas_kernels().values()) or "unknown (no threadpoolctl)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated, of: {', '.join(LAYERS)}")
    parser.add_argument("--blas-threads", type=int, default=None, help="limit OpenBLAS's threads (threadpoolctl)")
    parser.add_argument("--torch", action="store_true", help="also PyTorch's same layer (torch's own threads)")
    parser.add_argument("--cpu-time", action="store_true", help="this thread's CPU time, not the wall clock")
    parser.add_argument("--block-bytes", type=int, default=None, help="winograd.BLOCK_BYTES (bytes of a block)")
    parser.add_argument("--json", default=None, help="also write the medians to this JSON file")
    args = parser.parse_args(argv)
    backend.keep_freed_memory()  # as the training command does: no page faults for the large arrays of a step
    torch = None
    if args.torch:
        import torch
        if args.blas_threads:
            torch.set_num_threads(args.blas_threads)
    limit = None
    if args.blas_threads:
        import threadpoolctl
        limit = threadpoolctl.threadpool_limits(limits=args.blas_threads, user_api="blas")
    if args.block_bytes:
        winograd.BLOCK_BYTES = args.block_bytes
    clock = time.thread_time if args.cpu_time else time.perf_counter
    blas = blas_kernel()  # within the limit, if any
    print(f"OpenBLAS: {blas}; batch {args.batch}; medians of {args.rounds} rounds, ms forward + backward"
          f" ({'CPU time of this thread' if args.cpu_time else 'wall clock'}; blocks of {winograd.BLOCK_BYTES} bytes)")
    results = {}
    for name in args.layers.split(","):
        medians = measure(name, args.batch, args.rounds, torch, clock)
        results[name] = medians
        fastest = min((key for key in medians if key != "torch"), key=medians.get)
        row = "  ".join(f"{key} {value:8.2f}" for key, value in medians.items())
        print(f"{name:<16} {row}   fastest {fastest}", flush=True)
    if limit is not None:
        limit.restore_original_limits()
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"batch": args.batch, "blas": blas, "cpu_time": args.cpu_time, "medians_ms": results}, file, indent=1)


if __name__ == "__main__":
    main()
