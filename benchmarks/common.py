"""What the benchmarks share: timing, the machine's description, results files."""

import json
import os
import pathlib
import platform
import statistics
import time

import numpy as np

import minicnn

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SCRATCH = RESULTS / "scratch"  # quick runs: ignored by git, so they never replace the committed results


def synchronizer(xp):
    """A function that waits for the device's queued work (nothing to wait for on the CPU)."""
    if xp is np:
        return lambda: None
    return lambda: xp.cuda.get_current_stream().synchronize()


def time_alternating(runs, repeat, warmup=3, rounds=3, settle=0.0):
    """Time several (run, synchronize) pairs in alternating blocks.

    Each of `rounds` rounds gives every run in turn a pause of `settle` seconds,
    `warmup` uncounted calls, then its share of the `repeat` timed calls.
    Returns one (median, fastest, slowest) in seconds per run, and for each run
    the median over rounds of its block's median time divided by the first run's.

    Why blocks and a pause: on a shared machine the speed drifts by tens of per
    cent within seconds, so each library is timed several times, close to the
    other. But a CPU thread pool keeps spinning after its last call (OpenBLAS for
    about 100 ms, PyTorch's OpenMP too), and a library called while the other's
    threads still spin runs several times slower on a 2-core machine; the pause
    lets them go to sleep. Warm-up keeps first-call allocation and kernel
    compilation out of the numbers.
    """
    times = [[] for _ in runs]
    block_medians = [[] for _ in runs]
    per_round = -(-repeat // rounds)
    for round_index in range(rounds):
        calls = min(per_round, repeat - round_index * per_round)
        if calls <= 0:
            break
        for (run, synchronize), samples, medians in zip(runs, times, block_medians):
            time.sleep(settle)
            for _ in range(warmup):
                run()
            synchronize()
            block = []
            for _ in range(calls):
                start = time.perf_counter()
                run()
                synchronize()
                block.append(time.perf_counter() - start)
            samples.extend(block)
            medians.append(statistics.median(block))
    summaries = [(statistics.median(samples), min(samples), max(samples)) for samples in times]
    ratios = [statistics.median(mine / first for first, mine in zip(block_medians[0], medians))
              for medians in block_medians]
    return summaries, ratios


def _cpu_model_and_flags():
    """The CPU's model name and whether it offers AVX-512 (read from /proc/cpuinfo on Linux)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    return model, "avx512f" in text


def machine_description(xp):
    cpu_model, avx512 = _cpu_model_and_flags()
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model,
        "avx512": avx512,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minicnn": minicnn.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        info["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older NumPy without mode="dicts"
        info["blas"] = None
    if xp is not np:
        info["cupy"] = xp.__version__
        info["gpu"] = xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def write_json(folder, name, payload):
    """Save payload as <folder or benchmarks/results>/<name> and return the path."""
    folder = pathlib.Path(folder) if folder else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(payload, indent=2))
    return path
