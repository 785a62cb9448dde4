"""What TensorBoard logging adds to an epoch: one epoch of `cnn` with and without the callback, alternating.

    python3 -m benchmarks.tensorboard_overhead                 # 6,000 MNIST images, 1,000 validated, 3 repeats
    python3 -m benchmarks.tensorboard_overhead --health        # also the health monitor, alone and logged

Each repeat trains the same model for one more epoch (Adam, batch 64) once per setting, the
settings in turn, so that all of them see the same machine load. An epoch's time is the whole
`fit` call: the training steps, the validation pass and every callback. The overhead is the
median over repeats of (epoch with the callback) / (the plain epoch of the same repeat) - 1;
the callback's own time (inside its methods, measured around them) is printed beside it, since
on a shared machine it is the steadier number. tensorboardX's writer thread writes the files.
Results go to benchmarks/results/scratch/tensorboard_overhead.json (not committed).
"""

import argparse
import statistics
import tempfile
import time

from minicnn import backend, models
from minicnn.data import load_mnist
from minicnn.tensorboard import TensorBoard
from minicnn.training import Trainer
from minicnn.viz.health import HealthMonitor

from .common import SCRATCH, machine_description, write_json


class Timed:
    """Wraps a callback, adding the seconds spent in its methods to `seconds`."""

    def __init__(self, callback):
        self.callback, self.seconds = callback, 0.0

    def on_batch_end(self, trainer, epoch, step):
        start = time.perf_counter()
        self.callback.on_batch_end(trainer, epoch, step)
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, trainer, epoch, logs):
        start = time.perf_counter()
        self.callback.on_epoch_end(trainer, epoch, logs)
        self.seconds += time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--health", action="store_true", help="also time the health monitor, alone and logged")
    args = parser.parse_args(argv)
    backend.keep_freed_memory()  # as `minicnn train` does

    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x, y = images[: args.images], labels[: args.images]
    validation = (test_images[: args.validation], test_labels[: args.validation])
    logs = tempfile.TemporaryDirectory()

    def setting(name, board, health):
        backend.manual_seed(0)
        model = models.build("cnn")
        trainer = Trainer(model, "adam")

        def callbacks(repeat):
            monitor = HealthMonitor(model) if health else None
            if not board:
                return [Timed(monitor)] if monitor else []
            return [Timed(TensorBoard(f"{logs.name}/{name}-{repeat}", every=args.every, model=model,
                                      image=test_images[0], health=monitor or False))]
        return name, trainer, callbacks

    settings = [setting("plain", False, False), setting("tensorboard", True, False)]
    if args.health:
        settings += [setting("health monitor", False, True), setting("health + tensorboard", True, True)]
    seconds = {name: [] for name, _, _ in settings}
    inside = {name: [] for name, _, _ in settings}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up (imports, first allocations) and is not counted
        for name, trainer, callbacks in settings:
            timed = callbacks(repeat)
            start = time.perf_counter()
            trainer.fit(x, y, epochs=1, batch_size=64, validation_data=validation, callbacks=timed, verbose=0)
            elapsed = time.perf_counter() - start
            for callback in timed:
                if hasattr(callback.callback, "close"):
                    callback.callback.close()
                if isinstance(getattr(callback.callback, "health", callback.callback), HealthMonitor):
                    getattr(callback.callback, "health", callback.callback).remove()
            if repeat:
                seconds[name].append(elapsed)
                inside[name].append(sum(callback.seconds for callback in timed))
            print(f"repeat {repeat}{' (warm-up)' if not repeat else ''}: {name:22s} {elapsed:6.2f} s", flush=True)

    plain = seconds["plain"]
    print(f"\none epoch of cnn: {args.images} images (batch 64, Adam), {args.validation} validated; "
          f"{args.repeats} repeats, TensorBoard every {args.every} steps")
    print(f"{'setting':22s} {'median s':>9s} {'vs plain':>9s} {'in callback s':>14s}")
    rows = {}
    for name, _, _ in settings:
        ratio = statistics.median(mine / base for mine, base in zip(seconds[name], plain))
        rows[name] = {"seconds": seconds[name], "median_seconds": statistics.median(seconds[name]),
                      "median_ratio_to_plain": ratio, "callback_seconds": inside[name]}
        print(f"{name:22s} {statistics.median(seconds[name]):9.2f} {100 * (ratio - 1):+8.1f}% "
              f"{statistics.median(inside[name]):14.3f}")
    path = write_json(SCRATCH, "tensorboard_overhead.json",
                      {"args": vars(args), "machine": machine_description(__import__("numpy")), "settings": rows})
    print(f"wrote {path}")
    logs.cleanup()


if __name__ == "__main__":
    main()
