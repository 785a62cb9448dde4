"""A training step of cnn and lenet (batch 64, Adam) on an older commit and on this checkout, in one process.

Both packages are imported side by side (the old one from `git archive COMMIT minicnn`, renamed
minicnn_old) and timed step by step in alternating blocks, so both see the same machine load; on a
shared 2-core machine that is steadier than two benchmark runs one after the other.

    python3 -m benchmarks.ab_step 404fa1c        # prints medians, minima and new/old per model
    python3 -m benchmarks.ab_step HEAD --threads 2,1 --batch 256   # this checkout on 2 threads, HEAD on 1

--threads NEW[,OLD] sets each package's kernels.set_num_threads (a package without it runs as it is);
--blas-threads NEW[,OLD] limits the BLAS pool during each package's blocks (threadpoolctl, the `threads` extra):

    python3 -m benchmarks.ab_step HEAD --threads 2,2 --blas-threads 1,2   # BLAS on 1 thread against 2
    python3 -m benchmarks.ab_step HEAD --share 1,0    # products cut over minicnn's pool, BLAS on 1 thread
"""

import argparse
import contextlib
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


def training_step(package, name, batch):
    """cnn and lenet on 1x28x28 images with Adam; resnet20 (He et al.'s CIFAR ResNet) on 3x32x32 with SGD."""
    rng = np.random.default_rng(2)
    package.manual_seed(0)
    if name == "resnet20":
        model = package.models.resnet(depth=20)
        optimizer = package.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    else:
        model = package.models.build(name)
        optimizer = package.optim.Adam(model.parameters())
    shape = (batch, 3, 32, 32) if name == "resnet20" else (batch, 1, 28, 28)
    x = package.tensor(rng.random(shape, dtype=np.float32))
    y = package.tensor(rng.integers(0, 10, batch))

    def step():
        loss = package.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


# The `cnn` model's layers at batch B, forward + backward alone: --models cnn.conv2,cnn.pool1,...
LAYERS = {
    "cnn.conv1": (lambda nn: nn.Conv2D(1, 32, 3), (1, 28), False),
    "cnn.conv2": (lambda nn: nn.Conv2D(32, 64, 3), (32, 13), True),
    "cnn.conv3": (lambda nn: nn.Conv2D(64, 64, 3), (64, 5), True),
    "cnn.relu1": (lambda nn: nn.ReLU(), (32, 26), True),
    "cnn.pool1": (lambda nn: nn.MaxPool2D(2), (32, 26), True),
    "cnn.pool2": (lambda nn: nn.MaxPool2D(2), (64, 11), True),
}


def layer_step(package, name, batch):
    make, (channels, size), input_grad = LAYERS[name]
    rng = np.random.default_rng(3)
    package.manual_seed(0)
    layer = make(package.nn)
    x = package.tensor(rng.standard_normal((batch, channels, size, size), dtype=np.float32), requires_grad=input_grad)
    grad = None

    def step():
        nonlocal grad
        out = layer(x)
        if grad is None:
            grad = rng.standard_normal(out.shape, dtype=np.float32)
        out.backward(grad)

    return step


def _configure(kernels, all_kernels, count, share):
    """Set a package's thread count and BLAS sharing for its block (a package without them runs as it is).

    Both packages drive the one BLAS library, so sharing is first turned off in both (each restores
    the BLAS limit it set), then on in this one if asked.
    """
    if count and hasattr(kernels, "set_num_threads"):
        kernels.set_num_threads(count)
    if share is not None:
        for other in all_kernels:
            if hasattr(other, "share_cores_with_blas"):
                other.share_cores_with_blas(False)
        if share and hasattr(kernels, "share_cores_with_blas"):
            kernels.share_cores_with_blas(True)


def _blas_limits(text):
    """{'new'/'old': a function giving a context that limits the BLAS pool} from 'NEW[,OLD]' (or {})."""
    if not text:
        return {}
    try:
        import threadpoolctl
    except ImportError:
        raise SystemExit('--blas-threads needs threadpoolctl: pip install -e ".[threads]"') from None
    controller = threadpoolctl.ThreadpoolController()
    return {key: (lambda count=int(count): controller.limit(limits=count, user_api="blas"))
            for key, count in zip(("new", "old"), text.split(","))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the older commit, e.g. 404fa1c")
    parser.add_argument("--blocks", type=int, default=15, help="alternating blocks of 4 steps per package")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", default="cnn,lenet",
                        help=f"models (whole steps) or layers (forward + backward): cnn, lenet, resnet20, "
                             f"{', '.join(LAYERS)}")
    parser.add_argument("--threads", default=None, help="NEW[,OLD]: threads of each package's memory-bound passes")
    parser.add_argument("--blas-threads", default=None, help="NEW[,OLD]: BLAS threads during each package's blocks")
    parser.add_argument("--share", default=None,
                        help="NEW[,OLD]: 1 or 0, kernels.share_cores_with_blas on or off during each package's blocks")
    args = parser.parse_args()
    blas_limits = _blas_limits(args.blas_threads)
    sys.path.insert(0, str(ROOT))
    import minicnn

    minicnn.keep_freed_memory()  # the old package did this at import; the same process setting for both
    with tempfile.TemporaryDirectory() as folder:
        packages = {"old": import_commit(args.commit, folder), "new": minicnn}
        threads = dict(zip(("new", "old"), [int(text) for text in args.threads.split(",")])) if args.threads else {}
        shares = dict(zip(("new", "old"), [text == "1" for text in args.share.split(",")])) if args.share else {}
        for name in args.models.split(","):
            make_step = layer_step if name in LAYERS else training_step
            steps = {key: make_step(package, name, args.batch) for key, package in packages.items()}
            times = {key: [] for key in steps}
            cpu_times = {key: [] for key in steps}  # this thread's CPU time: BLAS and pool workers not counted
            all_kernels = [getattr(package, "kernels", None) for package in packages.values()]
            setters = {key: (lambda key=key, kernels=getattr(package, "kernels", None): _configure(
                kernels, all_kernels, threads.get(key), shares.get(key))) for key, package in packages.items()}
            for key, step in steps.items():
                setters[key]()
                for _ in range(3):
                    step()
            for _ in range(args.blocks):
                for key, step in steps.items():
                    setters[key]()
                    with blas_limits.get(key, contextlib.nullcontext)():
                        for _ in range(4):
                            started, cpu_started = time.perf_counter(), time.thread_time()
                            step()
                            times[key].append((time.perf_counter() - started) * 1e3)
                            cpu_times[key].append((time.thread_time() - cpu_started) * 1e3)
            for key in steps:
                print(f"{name:<6} {key}: median {statistics.median(times[key]):6.2f} ms  min {min(times[key]):6.2f} ms"
                      f"  main-thread CPU {statistics.median(cpu_times[key]):6.2f} ms  ({len(times[key])} steps)")
            ratio = statistics.median(times["new"]) / statistics.median(times["old"])
            cpu_ratio = statistics.median(cpu_times["new"]) / statistics.median(cpu_times["old"])
            print(f"{name:<6} new/old median {ratio:.3f}  (main-thread CPU {cpu_ratio:.3f})")


if __name__ == "__main__":
    main()
