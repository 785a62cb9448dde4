"""python -m benchmarks --device cpu|gpu|all: time every row of benchmarks/suite.py, print, save JSON.

    python -m benchmarks --device cpu              # kernels at batch 64 and 256, training steps, throughput sweeps
                                                   # over batch size and (cnn) image size 28-224
    python -m benchmarks --device all --plot       # CPU and GPU, then the plots (needs matplotlib)
    python -m benchmarks --quick                   # a smoke run: tiny batch, two repeats, no sweep,
                                                   # written to benchmarks/results/scratch/ (not committed)

An entry point, so it makes the process-wide setting the engine leaves alone:
minicnn.backend.keep_freed_memory() at start (--no-keep-freed-memory to measure without it).
"""

import argparse
import datetime
import itertools
import pathlib

import numpy as np

from minicnn import backend, kernels

from .common import (
    RESULTS, SCRATCH, UNSTEADY_MARK, describe_load, is_unsteady, load_average, machine_description, spread, synchronizer,
    time_alternating_rounds, unsteady_footnote, write_json,
)
from .suite import conv_rows, other_rows, resnet_rows, training_step

SWEEP_BATCHES = (32, 64, 128, 256, 512, 1024)
# The image-size sweep: `cnn` at larger images (its layers keep their shapes, the maps grow), batch by batch,
# so the plot shows where each library's time per image stops falling. Capped at IMAGE_SWEEP_PIXELS
# pixels per batch: a 224x224 batch of 128 would take minutes per row on a small CPU.
IMAGE_SWEEP_SIZES = (28, 56, 112, 224)
IMAGE_SWEEP_BATCHES = (8, 32, 128)
IMAGE_SWEEP_PIXELS = 128 * 112 * 112
KERNEL_GROUPS = ("conv2d forward", "conv2d fwd+bwd", "im2col", "col2im", "max_pool2d forward", "max_pool2d fwd+bwd")


def parse_args(argv=None):
    """The command line's options; --out defaults to the scratch folder for --quick runs."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu", "all"], default="cpu")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per row (after 3 warm-up calls)")
    parser.add_argument("--batches", default="64,256", help="batch sizes of the kernel and training-step rows")
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, 2 repeats, no sweep: checks that it runs; results go to "
                             "benchmarks/results/scratch/ unless --out says otherwise")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the throughput sweeps over batch sizes and image sizes")
    parser.add_argument("--no-image-sweep", action="store_true", help="skip only the sweep over image sizes")
    parser.add_argument("--plot", action="store_true", help="write PNG plots next to the JSON (matplotlib)")
    parser.add_argument("--out", default=None,
                        help="results folder (default benchmarks/results, or benchmarks/results/scratch with --quick)")
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="leave glibc's malloc settings alone (minicnn.backend.keep_freed_memory)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of minicnn's memory-bound passes (minicnn.set_num_threads; default: "
                             "MINICNN_NUM_THREADS, else 1)")
    parser.add_argument("--share-cores", action="store_true",
                        help="minicnn.kernels.share_cores_with_blas(): NumPy's BLAS on one thread, the convolutions' "
                             "products cut over minicnn's pool (needs threadpoolctl)")
    parser.add_argument("--only", default=None,
                        help="comma-separated operation groups to run, e.g. 'training step' (default: all)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = SCRATCH if args.quick else RESULTS  # a smoke run never replaces the committed results
    return args


def _import_torch(skip):
    if skip:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def _measure(row, synchronize, torch_synchronize, repeat, warmup, rounds, settle):
    """Time a row; PyTorch's twin and the bare matrix products, when the row has them, alternate with it."""
    runs = {"minicnn": (row.run, synchronize)}
    if row.torch_run is not None:
        runs["torch"] = (row.torch_run, torch_synchronize)
    if row.matmul_run is not None:
        runs["matmuls"] = (row.matmul_run, synchronize)
    summaries, ratios, block_medians = time_alternating_rounds(list(runs.values()), repeat, warmup, rounds, settle)
    summaries, ratios, block_medians = dict(zip(runs, summaries)), dict(zip(runs, ratios)), dict(zip(runs, block_medians))
    median, fastest, slowest = summaries["minicnn"]
    result = {"group": row.group, "name": row.name, "shape": row.shape, "median_ms": median * 1e3,
              "min_ms": fastest * 1e3, "max_ms": slowest * 1e3,
              "round_medians_ms": [value * 1e3 for value in block_medians["minicnn"]]}
    if row.flops:
        result["flops"] = row.flops
        result["gflops_per_s"] = row.flops / median / 1e9
    if row.bytes_moved:
        result["bytes"] = row.bytes_moved
        result["gb_per_s"] = row.bytes_moved / median / 1e9
    if "torch" in runs:
        result["torch_median_ms"] = summaries["torch"][0] * 1e3
        result["torch_min_ms"], result["torch_max_ms"] = summaries["torch"][1] * 1e3, summaries["torch"][2] * 1e3
        result["torch_round_medians_ms"] = [value * 1e3 for value in block_medians["torch"]]
        result["torch_over_minicnn"] = ratios["torch"]
    result["spread"] = spread(result)  # flagged above SPREAD_LIMIT (is_unsteady)
    if "matmuls" in runs:
        # The same FLOPs as bare BLAS calls: their time over ours is the share of the BLAS rate we reach.
        result["matmul_median_ms"] = summaries["matmuls"][0] * 1e3
        result["matmul_gflops_per_s"] = row.flops / summaries["matmuls"][0] / 1e9
        result["share_of_matmul_rate"] = ratios["matmuls"]
    return result


def _print_row(result):
    rate = (f"{result['gflops_per_s']:8.1f} GFLOP/s" if "gflops_per_s" in result
            else f"{result['gb_per_s']:8.2f} GB/s   " if "gb_per_s" in result
            else f"{result.get('images_per_s', 0):8.0f} img/s  ")
    versus = (f"{result['torch_median_ms']:9.2f} {result['torch_over_minicnn']:6.2f}" if "torch_median_ms" in result
              else f"{'-':>9} {'-':>6}")
    spread = result["max_ms"] - result["min_ms"]
    blas = f"  {result['share_of_matmul_rate']:.2f} of BLAS rate" if "share_of_matmul_rate" in result else ""
    mark = f" {UNSTEADY_MARK}" if is_unsteady(result) else ""
    print(f"{result['group']:<22} {result['name']:<13} {result['shape']:<30} {result['median_ms']:9.2f} "
          f"{spread:7.2f} {rate} {versus}{mark}{blas}", flush=True)


def _warm_up(xp, torch, torch_device, batch, synchronize, torch_synchronize, calls):
    """Call the rows of the first layer `calls` times each, minicnn's and PyTorch's, untimed, before timing.

    A row's own warm-up calls keep its first-call costs out of its numbers, but the first
    rows of a run also pay for the process starting up: BLAS and PyTorch thread pools,
    page faults of a fresh heap, CuPy's kernel cache. Without this the first row's ratio
    came out at 92 in a --quick run, from a cold start.
    """
    rows = conv_rows(xp, torch, torch_device, batch)
    first = next(rows)
    for row in itertools.chain([first], itertools.takewhile(lambda row: row.name == first.name, rows)):
        for _ in range(calls):
            row.run()
            synchronize()
            if row.torch_run is not None:
                row.torch_run()
                torch_synchronize()


def run_device(device, args, torch):
    xp = backend.array_module_for(device)
    backend.set_default_device(device)
    synchronize = synchronizer(xp)
    torch_device = "cuda" if device == "gpu" else "cpu"
    torch_synchronize = torch.cuda.synchronize if (torch is not None and device == "gpu") else (lambda: None)
    batches = [8] if args.quick else [int(text) for text in args.batches.split(",")]
    repeat, warmup = (2, 2) if args.quick else (args.repeat, 3)
    rounds = min(3, repeat)
    # Let the other library's CPU threads stop spinning before each block (see time_alternating).
    settle = 0.3 if (device == "cpu" and torch is not None and not args.quick) else 0.0

    load_at_start = load_average()
    print(f"\n{device.upper()}: median of {repeat} calls in {rounds} rounds, each after {warmup} warm-up calls "
          "and alternating with PyTorch;\nratio = torch / minicnn time, the median over the rounds: > 1 means minicnn "
          f"is faster; {describe_load(load_at_start) or 'load average unknown'}")
    print(f"{'operation':<22} {'layer':<13} {'shape':<30} {'ms':>9} {'spread':>7} {'rate':>16} {'torch ms':>9} {'ratio':>6}")
    results = []

    wanted = None if args.only is None else {group.strip() for group in args.only.split(",")}
    _warm_up(xp, torch, torch_device, batches[0], synchronize, torch_synchronize, calls=warmup)

    def measure(row, images=None, extra=None):
        if wanted is not None and row.group.removesuffix(" [twin]") not in wanted:
            return
        result = _measure(row, synchronize, torch_synchronize, repeat, warmup, rounds, settle)
        result.update(extra or {})
        if images:
            result["images_per_s"] = images / (result["median_ms"] / 1e3)
            if "torch_median_ms" in result:
                result["torch_images_per_s"] = images / (result["torch_median_ms"] / 1e3)
        _print_row(result)
        results.append(result)

    for batch in batches:
        for row in conv_rows(xp, torch, torch_device, batch):
            if row.name == "cifar.wide" and device == "cpu" and batch > 64:
                continue  # 230 GFLOP per fwd+bwd at batch 256: minutes on a small CPU
            measure(row)
        for row in other_rows(xp, torch, torch_device, batch):
            measure(row)
        for model in ("cnn", "lenet"):
            measure(training_step(xp, torch, torch_device, model, batch), images=batch)
        if device == "gpu":
            # The CuPy kernels' reference twins, the array-module code NumPy runs too: the kernels must beat them.
            with kernels.reference_only():
                for row in [*conv_rows(xp, None, torch_device, batch), *other_rows(xp, None, torch_device, batch)]:
                    if row.group in KERNEL_GROUPS and row.name != "cifar.wide":
                        row.group += " [twin]"
                        measure(row)
    # Whole ResNet steps: seconds each on a CPU, so in a smoke run only when --only names them (then at batch 8).
    if not args.quick or wanted is not None:
        for row in resnet_rows(xp, torch, torch_device, quick=args.quick, groups=wanted):
            measure(row, images=row.images)
    if not (args.quick or args.no_sweep):
        for batch in SWEEP_BATCHES:
            for model in ("cnn", "lenet"):
                row = training_step(xp, torch, torch_device, model, batch)
                row.group = "throughput sweep"
                measure(row, images=batch)
        if not args.no_image_sweep:
            for image_size in IMAGE_SWEEP_SIZES:
                for batch in IMAGE_SWEEP_BATCHES:
                    if batch * image_size * image_size > IMAGE_SWEEP_PIXELS:
                        continue
                    row = training_step(xp, torch, torch_device, "cnn", batch, image_size)
                    row.group, row.shape = "image-size sweep", f"batch {batch}, {image_size}x{image_size}"
                    measure(row, images=batch, extra={"image_size": image_size, "batch": batch})

    load_at_end = load_average()
    footnote = unsteady_footnote(sum(map(is_unsteady, results)))
    if footnote:
        print(footnote)
    print(f"at the end: {describe_load(load_at_end) or 'load average unknown'}")
    machine = machine_description(xp)
    machine["keep_freed_memory"] = args.keeping_freed_memory
    machine["minicnn_threads"] = kernels.num_threads()  # the memory-bound passes' pool (--threads)
    machine["blas_threads"] = kernels.threads.blas_threads()  # {} without threadpoolctl
    machine["share_cores_with_blas"] = kernels.threads.sharing_cores_with_blas()
    if torch is not None:
        machine["torch"] = torch.__version__
        machine["torch_threads"] = torch.get_num_threads()
    payload = {"device": device, "date": datetime.date.today().isoformat(), "machine": machine,
               "repeat": repeat, "warmup": warmup, "rounds": rounds, "settle_s": settle,
               "load_average": {"start": load_at_start, "end": load_at_end}, "rows": results}
    if device == "gpu":
        payload["gpu_pool_mib"] = backend.gpu_pool_mib()  # CuPy's pool after every row: its high-water mark
    path = write_json(args.out, f"{device}-{payload['date']}.json", payload)
    print(f"wrote {path}")
    return path


def main():
    args = parse_args()
    # Process-wide, so made here at the entry point and not on import; recorded with the results.
    args.keeping_freed_memory = bool(args.keep_freed_memory and backend.keep_freed_memory())
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    if args.share_cores:
        kernels.share_cores_with_blas()
    torch = _import_torch(args.no_torch)
    devices = ["cpu", "gpu"] if args.device == "all" else [args.device]
    if "gpu" in devices and not backend.gpu_available():
        if args.device == "gpu":
            backend.array_module_for("gpu")  # raises BackendUnavailableError, which says how to fix it
        print("no GPU here: measuring the CPU only")
        devices = ["cpu"]
    paths = [run_device(device, args, torch) for device in devices]
    if args.plot:
        from .plots import plot_results

        for path in plot_results(paths):
            print(f"wrote {path}")
    if pathlib.Path(args.out).resolve() == SCRATCH.resolve():
        print(f"(a --quick run: results in {SCRATCH}, not in {RESULTS}; --out chooses another folder)")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")  # random benchmark inputs may overflow exp(); only time matters here
    raise SystemExit(main())
