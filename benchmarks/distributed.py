"""What data-parallel training costs: allreduce against message size, one flat buffer against one call per
parameter, and the training throughput of `cnn` (and the CIFAR ResNet-20 where models.resnet exists) with the
share of each step spent communicating. Run it under MPI, once per number of ranks:

    mpiexec -n 1 python3 -m benchmarks.distributed
    mpiexec -n 2 python3 -m benchmarks.distributed
    mpiexec -n 4 python3 -m benchmarks.distributed      # on a 2-core machine this oversubscribes the cores
    python3 -m benchmarks.distributed --scaling benchmarks/results/distributed-1ranks-cpu-*.json

A step is timed in three parts, each ended by waiting for every rank (a barrier), so that a rank's wait
for a slower one counts as communication, as it does in training: forward and backward (compute), the
gradients' allreduce (communication), the optimizer's update. Images per second are the global batch
(ranks x per-rank batch) over the median step. Results go to benchmarks/results/distributed-<N>ranks-cpu-<date>.json
(--quick: benchmarks/results/scratch/).

--scaling reads a 1-rank result and prints the ring-allreduce cost model of benchmarks/NOTES.md: a step on p
ranks takes compute + latency x 2(p-1) + 2(p-1)/p x gradient bytes / bandwidth, and the scaling efficiency is
compute / that (LINKS holds the two links' bandwidth and latency).
"""

import argparse
import datetime
import json
import statistics
import time

import numpy as np

from minicnn import backend, distributed, models, nn, optim
from minicnn import functional as F
from minicnn.tensor import Tensor

from .common import RESULTS, SCRATCH, machine_description, write_json

KIB = 1024
MESSAGE_SIZES = [KIB * 4**power for power in range(9)]  # 1 KiB, 4 KiB, ..., 64 MiB
# Links of the cost model: name, bits per second, seconds per message (TCP over Ethernet; InfiniBand/RoCE verbs).
LINKS = (("10 Gb/s", 10e9, 25e-6), ("100 Gb/s", 100e9, 3e-6))
RESNET18_PARAMETERS = 11_689_512  # torchvision's resnet18 (11.69M), for the cost model when it cannot be built here


def time_collective(comm, run, repeat):
    """Median seconds of run() over `repeat` calls, the ranks lined up by a barrier before each."""
    samples = []
    for _ in range(repeat + 2):
        comm.barrier()
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[2:])


def allreduce_sweep(comm, quick):
    rows = []
    for size in MESSAGE_SIZES[: 6 if quick else None]:
        buffer = np.ones(size // 4, dtype=np.float32)
        repeat = 20 if size <= 4 * KIB * KIB else 5
        seconds = time_collective(comm, lambda: comm.allreduce(buffer), repeat)
        rows.append({"bytes": size, "seconds": seconds, "gb_per_s": size / seconds / 1e9})
    return rows


def build(name):
    if name == "cnn":
        return models.cnn(), (1, 28, 28)
    if name == "resnet20":
        return models.resnet(depth=20), (3, 32, 32)
    if name == "resnet18":
        return models.resnet18(num_classes=1000), (3, 224, 224)
    raise ValueError(name)


def available(name):
    return name == "cnn" or hasattr(models, "resnet" if name == "resnet20" else name)


def gradients_for(model):
    for parameter in model.parameters():
        parameter.grad = np.ones_like(parameter.data)


def allreduce_gradients_per_parameter(comm, model):
    """What comm.allreduce_gradients does with one flat buffer, here with one collective per parameter."""
    for parameter in model.parameters():
        grad = np.ascontiguousarray(parameter.grad).copy()
        comm._allreduce_in_place(grad.reshape(-1), "sum")  # the backend's primitive, as allreduce_gradients uses it
        grad /= comm.size
        parameter.grad = grad


def flat_against_per_parameter(comm, model, repeat):
    gradients_for(model)
    flat = time_collective(comm, lambda: comm.allreduce_gradients(model), repeat)
    gradients_for(model)
    per_parameter = time_collective(comm, lambda: allreduce_gradients_per_parameter(comm, model), repeat)
    return {"parameters": len(model.parameters()), "flat_seconds": flat, "per_parameter_seconds": per_parameter}


def training_steps(comm, name, batch_size, steps):
    """Median seconds of compute, communication and update per step, and the global images per second."""
    backend.manual_seed(0)
    model, shape = build(name)
    comm.broadcast_parameters(model)
    optimizer = optim.Adam(model.parameters())
    rng = np.random.default_rng(comm.rank)
    x = Tensor(rng.standard_normal((batch_size, *shape)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, batch_size))
    parts = {"compute": [], "communication": [], "update": []}
    for step in range(steps + 2):
        comm.barrier()
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        computed = time.perf_counter()
        comm.allreduce_gradients(model)
        comm.barrier()  # the wait for the slowest rank's gradients is part of communicating
        communicated = time.perf_counter()
        optimizer.step()
        comm.barrier()
        if step >= 2:
            parts["compute"].append(computed - start)
            parts["communication"].append(communicated - computed)
            parts["update"].append(time.perf_counter() - communicated)
    medians = {key: statistics.median(values) for key, values in parts.items()}
    step_seconds = sum(medians.values())
    gradient_bytes = sum(parameter.data.nbytes for parameter in model.parameters())
    return {"model": name, "per_rank_batch": batch_size, "global_batch": batch_size * comm.size,
            "parameters": sum(parameter.data.size for parameter in model.parameters()), "gradient_bytes": gradient_bytes,
            **{f"{key}_seconds": value for key, value in medians.items()}, "step_seconds": step_seconds,
            "images_per_second": batch_size * comm.size / step_seconds,
            "communication_share": medians["communication"] / step_seconds}


def measure(args):
    comm = distributed.init(args.backend)
    distributed.abort_on_uncaught_exception(comm)  # a failing rank ends the run instead of hanging the others
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    result = {"ranks": comm.size, "backend": comm.name, "date": datetime.date.today().isoformat(),
              "machine": machine_description(np), "command": f"mpiexec -n {comm.size} python3 -m benchmarks.distributed"
              + (" --quick" if args.quick else "")}
    if comm.size > 1:
        result["allreduce"] = allreduce_sweep(comm, args.quick)
        say(f"allreduce of float32 buffers over {comm.size} ranks ({comm.name}):")
        say("| bytes | ms | GB/s |\n| --- | --- | --- |")
        for row in result["allreduce"]:
            say(f"| {row['bytes']:,} | {row['seconds'] * 1e3:.3f} | {row['gb_per_s']:.2f} |")
        result["flat_against_per_parameter"] = {}
        for name in ("cnn", "resnet20"):
            if available(name):
                row = flat_against_per_parameter(comm, build(name)[0], 10 if args.quick else 50)
                result["flat_against_per_parameter"][name] = row
                say(f"{name}: {row['parameters']} gradients, one flat buffer {row['flat_seconds'] * 1e3:.3f} ms, "
                    f"one call per parameter {row['per_parameter_seconds'] * 1e3:.3f} ms")
    result["training"] = []
    say("| model | ranks | per-rank batch | compute ms | communication ms | update ms | images/s | comm share |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, batch_size in (("cnn", 64), ("resnet20", 32)):
        if not available(name):
            say(f"({name}: models.resnet does not exist in this checkout; skipped)")
            continue
        row = training_steps(comm, name, batch_size, 3 if args.quick else args.steps)
        result["training"].append(row)
        say(f"| {name} | {comm.size} | {batch_size} | {row['compute_seconds'] * 1e3:.1f} | "
            f"{row['communication_seconds'] * 1e3:.2f} | {row['update_seconds'] * 1e3:.1f} | "
            f"{row['images_per_second']:.0f} | {row['communication_share']:.1%} |")
    if comm.rank == 0:
        name = f"distributed-{comm.size}ranks-cpu-{result['date']}.json"
        print(f"wrote {write_json(SCRATCH if args.quick else RESULTS, name, result)}")


# ----- the cost model ----------------------------------------------------------------------------------------------

def ring_allreduce_seconds(gradient_bytes, ranks, bandwidth_bytes_per_s, latency_s):
    """A ring allreduce: 2(p-1) messages, each rank sending and receiving 2(p-1)/p of the buffer."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) * latency_s + 2 * (ranks - 1) / ranks * gradient_bytes / bandwidth_bytes_per_s


def scaling_table(cases):
    """Rows (model, step s, gradient bytes, link, p, allreduce s, efficiency) for 8, 64 and 512 ranks.

    cases: (model, seconds of one step on one rank, gradient bytes). Efficiency is the one-rank step over the
    step plus an allreduce that does not overlap the backward pass.
    """
    rows = []
    for model, compute, gradient_bytes in cases:
        for link, bits_per_s, latency_s in LINKS:
            for ranks in (8, 64, 512):
                communication = ring_allreduce_seconds(gradient_bytes, ranks, bits_per_s / 8, latency_s)
                rows.append((model, compute, gradient_bytes, link, ranks, communication,
                             compute / (compute + communication)))
    return rows


def print_scaling(args):
    """The cost model's table: the 1-rank result's models, their step times replaced or added by --step."""
    measured = json.loads(open(args.scaling).read())
    cases = {row["model"]: [row["compute_seconds"] + row["update_seconds"], row["gradient_bytes"]]
             for row in measured["training"]}
    for text in args.step:
        model, seconds = text.split("=")
        base = model.split("@")[0]  # cnn@gpu=0.005: a row of its own, with cnn's gradient size
        gradient_bytes = cases[base][1] if base in cases else RESNET18_PARAMETERS * 4
        cases[model] = [float(seconds), gradient_bytes]
    links = ", ".join(f"{name} with {latency * 1e6:.0f} us per message" for name, _, latency in LINKS)
    print(f"ring allreduce on {links}; no overlap with backward "
          f"(step times from {args.scaling}" + (f", replaced or added: {', '.join(args.step)}" if args.step else "")
          + ")")
    print("| model | step s (1 rank) | gradient MB | link | ranks | allreduce s | efficiency |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, compute, gradient_bytes, link, ranks, communication, efficiency in scaling_table(
            [(model, *case) for model, case in cases.items()]):
        print(f"| {model} | {compute:.3f} | {gradient_bytes / 1e6:.2f} | {link} | {ranks} | {communication:.4f} | "
              f"{efficiency:.0%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=distributed.BACKENDS, default="auto")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model (default 10)")
    parser.add_argument("--quick", action="store_true", help="small messages and 3 steps; results to scratch/")
    parser.add_argument("--scaling", metavar="JSON", help="print the cost model from a 1-rank result instead")
    parser.add_argument("--step", action="append", default=[], metavar="MODEL=SECONDS",
                        help="for --scaling: one rank's step time of MODEL, replacing the measured one or adding a "
                             "row (MODEL@LABEL keeps MODEL's gradient size; resnet18: its 11.69M float32 "
                             "gradients); repeatable")
    args = parser.parse_args()
    if args.scaling:
        print_scaling(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
