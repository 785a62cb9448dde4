"""Time conv2d forward + backward for the layers of the `cnn` and `lenet` models.

Each row compares minicnn's convolution (im2col, matrix products, col2im) with the
three bare matrix products it contains, on arrays of the same shapes, so the gap
is the cost of the data movement around the BLAS calls.

    python3 benchmarks/conv_layers.py [--device cpu|gpu] [--batch 64] [--repeat 7]

Prints a table and writes benchmarks/results/conv_layers-<device>-<date>.json.
"""

import numpy as np

import minicnn
from minicnn import backend
from minicnn import functional as F

try:
    from common import machine_description, parse_args, synchronizer, time_call, write_results
except ImportError:  # run as `python -m benchmarks.conv_layers`
    from .common import machine_description, parse_args, synchronizer, time_call, write_results

# (name, C, H, W, F, K, padding): the convolutions of the `cnn` (Keras-style) and `lenet` models.
LAYERS = [
    ("cnn.conv1", 1, 28, 28, 32, 3, 0),
    ("cnn.conv2", 32, 13, 13, 64, 3, 0),
    ("cnn.conv3", 64, 5, 5, 64, 3, 0),
    ("lenet.conv1", 1, 28, 28, 6, 5, 2),
    ("lenet.conv2", 6, 14, 14, 16, 5, 0),
    ("cifar.wide", 128, 32, 32, 128, 3, 1),
]


def bench_layer(xp, device, batch, repeat, C, H, W, Fo, K, padding):
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((batch, C, H, W), dtype=np.float32), device=device, requires_grad=True)
    w = minicnn.tensor(rng.standard_normal((Fo, C, K, K), dtype=np.float32), device=device, requires_grad=True)
    b = minicnn.tensor(np.zeros(Fo, np.float32), device=device, requires_grad=True)
    out_h, out_w = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    rows, depth = batch * out_h * out_w, C * K * K
    grad_out = xp.asarray(rng.standard_normal((batch, Fo, out_h, out_w), dtype=np.float32))

    def conv_step():
        out = F.conv2d(x, w, b, padding=padding)
        out.backward(grad_out)

    col = xp.asarray(rng.standard_normal((rows, depth), dtype=np.float32))
    weight_matrix = xp.asarray(rng.standard_normal((Fo, depth), dtype=np.float32))
    grad_matrix = xp.asarray(rng.standard_normal((rows, Fo), dtype=np.float32))

    def matmuls_only():
        col @ weight_matrix.T  # forward
        grad_matrix.T @ col  # weight gradient
        grad_matrix @ weight_matrix  # column gradient

    flops = 3 * 2 * rows * depth * Fo
    synchronize = synchronizer(xp)
    conv_time, conv_fastest, conv_slowest = time_call(conv_step, synchronize, repeat)
    blas_time, _, _ = time_call(matmuls_only, synchronize, repeat)
    return {
        "flops": flops,
        "conv_ms": conv_time * 1e3,
        "conv_spread_ms": (conv_slowest - conv_fastest) * 1e3,
        "conv_gflops": flops / conv_time / 1e9,
        "matmul_ms": blas_time * 1e3,
        "matmul_gflops": flops / blas_time / 1e9,
        "share_of_matmul_rate": blas_time / conv_time,
    }


def main():
    args = parse_args(__doc__.splitlines()[0], repeat=7)
    xp = backend.array_module_for(args.device)

    header = f"{'layer':<12} {'GFLOP':>7} {'conv ms':>9} {'spread':>7} {'GFLOP/s':>8} {'matmul ms':>10} {'GFLOP/s':>8} {'share':>6}"
    print(f"conv2d forward + backward, batch {args.batch}, {args.device}, median of {args.repeat}")
    print(header)
    rows = []
    for name, C, H, W, Fo, K, padding in LAYERS:
        row = {"layer": name, "shape": [args.batch, C, H, W], "filters": Fo, "kernel": K, "padding": padding}
        row.update(bench_layer(xp, args.device, args.batch, args.repeat, C, H, W, Fo, K, padding))
        rows.append(row)
        print(
            f"{name:<12} {row['flops'] / 1e9:>7.3f} {row['conv_ms']:>9.2f} {row['conv_spread_ms']:>7.2f} "
            f"{row['conv_gflops']:>8.1f} {row['matmul_ms']:>10.2f} {row['matmul_gflops']:>8.1f} "
            f"{row['share_of_matmul_rate']:>6.0%}"
        )
    print("share: the matrix products' time over the whole convolution's (1.0 = no overhead)")

    payload = {"machine": machine_description(xp), "batch": args.batch, "repeat": args.repeat, "rows": rows}
    path = write_results("conv_layers", args.device, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
