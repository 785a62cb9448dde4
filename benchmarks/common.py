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
# A row whose slowest round took more than this many times its fastest round (block medians, minicnn's or
# PyTorch's) was measured while the machine's load changed; its ratio is flagged. Rounds, not single calls:
# on the shared 2-core VM of results/cpu-2026-11-30.json single calls spread by more than 1.5x in half the
# rows of a run whose ratios three runs reproduced, so a call-level flag would mark nearly everything.
SPREAD_LIMIT = 1.5
UNSTEADY_MARK = "!"


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
    summaries, ratios, _ = time_alternating_rounds(runs, repeat, warmup, rounds, settle)
    return summaries, ratios


def time_alternating_rounds(runs, repeat, warmup=3, rounds=3, settle=0.0):
    """time_alternating, and for each run its block medians, one per round (seconds): how far the rounds
    disagree says whether the machine stayed quiet (see spread)."""
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
    return summaries, ratios, block_medians


def load_average():
    """The machine's load average over 1, 5 and 15 minutes (os.getloadavg), or None where there is none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def describe_load(load):
    """'load average 2.85, 2.72, 4.31 (1, 5, 15 min) on 2 CPUs', or '' when unknown."""
    if not load:
        return ""
    return f"load average {', '.join(f'{value:.2f}' for value in load)} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def spread(row):
    """The slowest round's median over the fastest round's of a result row, the larger of minicnn's and
    PyTorch's; None for rows of results files written before the rounds were recorded."""
    rounds = [row[key] for key in ("round_medians_ms", "torch_round_medians_ms") if row.get(key)]
    ratios = [max(medians) / min(medians) for medians in rounds if min(medians) > 0]
    return max(ratios) if ratios else None


def is_unsteady(row):
    """Whether the row's spread is over SPREAD_LIMIT: timed on a busy machine, its ratio is not to be trusted."""
    value = spread(row)
    return value is not None and value > SPREAD_LIMIT


def unsteady_footnote(count):
    """The line printed under a table with `count` flagged rows ('' when none is)."""
    if not count:
        return ""
    return (f"{UNSTEADY_MARK} {count} row(s) whose slowest round took more than {SPREAD_LIMIT}x their fastest "
            "(minicnn's or PyTorch's): the machine's load changed while they ran, so their ratio says little; "
            "run them again on a quiet machine (see the load average above)")


def _cpu_model_and_flags():
    """The CPU's model name and whether it offers AVX-512 (read from /proc/cpuinfo on Linux)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    return model, "avx512f" in text


def blas_kernels():
    """The kernel family each loaded BLAS runs (threadpoolctl's `architecture`, e.g. 'SkylakeX' or 'Haswell'):
    {library prefix: "openblas SkylakeX x2"}, or {} without threadpoolctl (the `threads` extra).

    OPENBLAS_CORETYPE can make OpenBLAS run older kernels than the CPU has: timings say which ran.
    """
    try:
        import threadpoolctl
    except ImportError:
        return {}
    return {info["prefix"]: f"{info.get('internal_api')} {info.get('architecture')} x{info['num_threads']}"
            for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}


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
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE")
    info["blas_kernels"] = blas_kernels()
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
