"""Time every operation: how many forward and backward calls each kind made and how long they took.

    with minicnn.profile() as p:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    print(p.table())

While the block is active, `Operation.__call__` and `Tensor.backward` hand each
forward and backward to this profiler (installed with `tensor.set_op_timer`), which
runs it between two clock readings and adds the time to the operation's name, the
lowercase name of its function ("conv2d", "max_pool2d", "cross_entropy", see
`Operation.name`), so that operations never read like the layers ("Conv2D") that
call them. Outside a block the hook is None and costs one test per operation.

GPU: CuPy launches kernels asynchronously, so the clock would only see the launch.
For CuPy arrays the profiler therefore waits for the current stream to finish
before reading the clock at the start and at the end of each timed call; the times
are then the real device times, and the synchronisation itself slows the block
down a little compared with an unprofiled run.

For a training run: ProfileFirstEpoch is a Trainer callback that profiles the first epoch's batches
and prints the table (`minicnn train --profile`); mean_epoch_seconds and peak_memory_mib are the
time and memory figures `minicnn train` writes to metrics.json.
"""

import contextlib
import dataclasses
import resource
import time

import numpy as np

from . import backend
from .tensor import set_op_timer


@dataclasses.dataclass
class OpStats:
    """Calls and seconds of one kind of operation (one Operation.name)."""

    forward_calls: int = 0
    forward_seconds: float = 0.0
    backward_calls: int = 0
    backward_seconds: float = 0.0

    @property
    def total_seconds(self):
        return self.forward_seconds + self.backward_seconds


def _synchronize_if_gpu(arrays):
    # The inputs of one call share a device (Operation checks it), so the first array decides.
    for array in arrays:
        if backend.is_cupy_array(array):
            backend.get_array_module(array).cuda.get_current_stream().synchronize()
            return


class Profile:
    """The recorder that `profile()` returns; use it once, as a context manager.

    stats: {operation name ('conv2d', 'relu', ...): OpStats}; total_seconds: wall-clock seconds of the
    block (so far, while it runs), which also covers everything between operations.
    """

    def __init__(self):
        self.stats = {}
        self._started = None
        self._finished = None

    # ----- the context manager ------------------------------------------------------------------
    def __enter__(self):
        if self._started is not None:
            raise RuntimeError("this profile() block was already used; call minicnn.profile() again for a new one")
        previous = set_op_timer(self)
        if previous is not None:
            set_op_timer(previous)
            raise RuntimeError(
                "profile() blocks cannot be nested: another profile() block is already recording; "
                "read its results instead, or end it before starting a new one"
            )
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info):
        set_op_timer(None)
        self._finished = time.perf_counter()
        return False

    # ----- called by Operation.__call__ and Tensor.backward ----------------------------------------
    def __call__(self, operation, phase, method, arguments):
        """Run method(*arguments) for `operation`'s `phase` ('forward' or 'backward') and record its time."""
        _synchronize_if_gpu(arguments)
        start = time.perf_counter()
        result = method(*arguments)
        _synchronize_if_gpu(arguments)
        elapsed = time.perf_counter() - start
        stats = self.stats.get(operation.name)
        if stats is None:
            stats = self.stats[operation.name] = OpStats()
        if phase == "forward":
            stats.forward_calls += 1
            stats.forward_seconds += elapsed
        else:
            stats.backward_calls += 1
            stats.backward_seconds += elapsed
        return result

    # ----- results ------------------------------------------------------------------------------
    @property
    def total_seconds(self):
        """Wall-clock seconds from entering the block to leaving it (0.0 before it starts)."""
        if self._started is None:
            return 0.0
        end = self._finished if self._finished is not None else time.perf_counter()
        return end - self._started

    @property
    def op_seconds(self):
        """Seconds spent inside operations' forward and backward, summed over all of them."""
        return sum(stats.total_seconds for stats in self.stats.values())

    def table(self):
        """A text table, one row per operation, slowest first; share is of the time inside operations."""
        headers = ("op", "forward calls", "forward total ms", "forward mean ms",
                   "backward calls", "backward total ms", "backward mean ms", "share %")
        op_seconds = self.op_seconds
        rows = []
        for name, stats in sorted(self.stats.items(), key=lambda item: (-item[1].total_seconds, item[0])):
            rows.append((
                name,
                str(stats.forward_calls),
                f"{stats.forward_seconds * 1e3:.3f}",
                f"{_mean(stats.forward_seconds, stats.forward_calls) * 1e3:.3f}",
                str(stats.backward_calls),
                f"{stats.backward_seconds * 1e3:.3f}",
                f"{_mean(stats.backward_seconds, stats.backward_calls) * 1e3:.3f}",
                f"{100 * stats.total_seconds / op_seconds:.1f}" if op_seconds > 0 else "0.0",
            ))
        widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]

        def line(row):
            # The op name is left-aligned, the numbers right-aligned.
            return "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                             for column, (cell, width) in enumerate(zip(row, widths))).rstrip()

        lines = [line(headers), line(tuple("-" * width for width in widths))]
        lines += [line(row) for row in rows]
        lines.append(f"time in operations: {op_seconds * 1e3:.3f} ms of {self.total_seconds * 1e3:.3f} ms "
                     "in the block (the rest is Python between operations)")
        return "\n".join(lines)


def _mean(seconds, calls):
    return seconds / calls if calls else 0.0


def profile():
    """A context manager that records every operation's forward and backward calls and times.

        with minicnn.profile() as p:
            ...
        print(p.table()); p.stats["conv2d"].forward_calls; p.total_seconds

    Blocks cannot be nested (RuntimeError). With CuPy arrays each timed call
    synchronises the GPU first and last, so the times are device times.
    """
    return Profile()


class ProfileFirstEpoch:
    """A Trainer callback that profiles the training batches of the first epoch it sees, then prints the table.

    The profile starts when this object is made (just before fit) and ends after that epoch's last
    optimizer step, so the validation pass is not part of it. close() ends it early (an interrupted fit).
    """

    def __init__(self, batches_per_epoch):
        self.batches_per_epoch = batches_per_epoch
        self.recording = contextlib.ExitStack()
        self.profile = self.recording.enter_context(profile())

    def on_batch_end(self, trainer, epoch, step):
        if step == self.batches_per_epoch - 1:
            self.recording.close()

    def on_epoch_end(self, trainer, epoch, logs):
        self.recording.close()  # already closed after the last batch; a no-op then
        if self.profile is not None:
            print(f"operations during the training batches of epoch {epoch + 1}:")
            print(self.profile.table(), flush=True)
            self.profile = None

    def close(self):
        self.recording.close()


def mean_epoch_seconds(history, steps_per_epoch):
    """(mean seconds over the whole epochs a Trainer's history timed, how many partial epochs were left out).

    An epoch resumed mid-way was timed over its remaining steps only, so it is left out.
    """
    seconds = list(history.get("seconds", []))
    steps = list(history.get("steps", []))
    steps = [steps_per_epoch] * (len(seconds) - len(steps)) + steps  # older checkpoints did not record steps
    whole = [second for second, count in zip(seconds, steps) if count == steps_per_epoch]
    return (float(np.mean(whole)) if whole else None), len(seconds) - len(whole)


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
