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


def synchronizer(xp):
    """A function that waits for the device's queued work (nothing to wait for on the CPU)."""
    if xp is np:
        return lambda: None
    return lambda: xp.cuda.get_current_stream().synchronize()


def time_alternating(runs, repeat, warmup=3):
    """Time several (run, synchronize) pairs in turn, call by call, after `warmup` rounds.

    Returns one (median, fastest, slowest) in seconds per run, and for each run the
    median over the rounds of its time divided by the first run's. On a shared
    machine the speed drifts by tens of per cent within seconds: alternating puts
    every run under the same conditions, and the per-round ratio cancels most of
    the drift. Warm-up keeps first-call allocation and kernel compilation out.
    """
    for _ in range(warmup):
        for run, synchronize in runs:
            run()
            synchronize()
    times = [[] for _ in runs]
    for _ in range(repeat):
        for (run, synchronize), samples in zip(runs, times):
            start = time.perf_counter()
            run()
            synchronize()
            samples.append(time.perf_counter() - start)
    summaries = [(statistics.median(samples), min(samples), max(samples)) for samples in times]
    ratios = [statistics.median(mine / first for first, mine in zip(times[0], samples)) for samples in times]
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
