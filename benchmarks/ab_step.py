"""A training step of cnn and lenet (batch 64, Adam) on an older commit and on this checkout, in one process.

Both packages are imported side by side (the old one from `git archive COMMIT minicnn`, renamed
minicnn_old) and timed step by step in alternating blocks, so both see the same machine load; on a
shared 2-core machine that is steadier than two benchmark runs one after the other.

    python3 -m benchmarks.ab_step 404fa1c        # prints medians, minima and new/old per model
"""

import argparse
import importlib
import io
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def import_commit(commit, folder):
    """The package `minicnn` as it was at `commit`, imported as minicnn_old."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "minicnn"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (pathlib.Path(folder) / "minicnn").rename(pathlib.Path(folder) / "minicnn_old")
    sys.path.insert(0, str(folder))
    return importlib.import_module("minicnn_old")


def training_step(package, name):
    rng = np.random.default_rng(2)
    package.manual_seed(0)
    model = package.models.build(name)
    optimizer = package.optim.Adam(model.parameters())
    x = package.tensor(rng.random((64, 1, 28, 28), dtype=np.float32))
    y = package.tensor(rng.integers(0, 10, 64))

    def step():
        loss = package.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the older commit, e.g. 404fa1c")
    parser.add_argument("--blocks", type=int, default=15, help="alternating blocks of 4 steps per package")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import minicnn

    minicnn.keep_freed_memory()  # the old package did this at import; the same process setting for both
    with tempfile.TemporaryDirectory() as folder:
        packages = {"old": import_commit(args.commit, folder), "new": minicnn}
        for name in ("cnn", "lenet"):
            steps = {key: training_step(package, name) for key, package in packages.items()}
            times = {key: [] for key in steps}
            for step in steps.values():
                for _ in range(3):
                    step()
            for _ in range(args.blocks):
                for key, step in steps.items():
                    for _ in range(4):
                        started = time.perf_counter()
                        step()
                        times[key].append((time.perf_counter() - started) * 1e3)
            for key in steps:
                print(f"{name:<6} {key}: median {statistics.median(times[key]):6.2f} ms  min {min(times[key]):6.2f} ms"
                      f"  ({len(times[key])} steps)")
            print(f"{name:<6} new/old median {statistics.median(times['new']) / statistics.median(times['old']):.3f}")


if __name__ == "__main__":
    main()
