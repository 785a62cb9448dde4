"""How a Trainer trains on one process or on several: the loop in minicnn.training calls the same
hooks either way, and never asks how many processes there are.

    Trainer(model)              -> SingleProcess(): every hook leaves things as they are
    Trainer(model, comm=comm)   -> DataParallel(comm) when comm has several ranks

DataParallel plays the part of Chainer's ParallelUpdater and ChainerMN's multi-node optimizer:
it wraps the optimizer so that every step first averages the gradients over the ranks, adds up
the epoch's sums and the evaluation over the ranks, makes a stop request on any rank (Ctrl-C)
stop every rank after the same step, lets rank 0 alone print and write checkpoints, and turns an
error on one rank into the end of every rank. The hooks, in the order fit calls them:

    failing_together()          around fit and evaluate
    shard                       the (rank, size) part of the data the Trainer's DataLoaders serve
    start(model, loader)        before the first epoch
    resumed_sums(sums)          a resumed epoch's running sums
    stepping(optimizer, model)  the optimizer of each training step
    agreed_stop(signal)         after each step and each epoch
    total(sums)                 the epoch's (loss sum, correct, seen), and those saved by a stop
    end_epoch(model)            before validation
    whole_evaluation(...)       after an evaluation on a sharded loader
    is_main_process             who prints and writes checkpoints
"""

import contextlib
import traceback

import numpy as np


class SingleProcess:
    """How Trainer trains in one process (its default): every hook leaves things as they are.

    DataParallel overrides each hook; Trainer calls them at fixed points of its loop and never
    asks how many processes there are.
    """

    shard = None  # the (rank, size) a DataLoader made by the Trainer serves: the whole data set
    is_main_process = True  # prints and writes checkpoints

    @contextlib.contextmanager
    def failing_together(self):
        """Around fit and evaluate: an exception here ends every process (one process: it propagates)."""
        yield

    def start(self, model, loader):
        """Before the first epoch of fit: make the processes agree on the data and the weights."""

    def stepping(self, optimizer, model):
        """The optimizer a training step of `model` calls zero_grad() and step() on."""
        return optimizer

    def resumed_sums(self, sums):
        """This process's share of a checkpoint's running (loss sum, correct, seen), or None."""
        return sums

    def total(self, sums):
        """(loss sum, correct, seen) added up over the processes."""
        return sums

    def agreed_stop(self, requested):
        """The stop request (a signal's name or None) that every process acts on."""
        return requested

    def end_epoch(self, model):
        """After an epoch's last step, before validation and checkpoints."""

    def whole_evaluation(self, loss_sum, confusion, count, accuracy):
        """(loss sum, confusion, count, accuracy) over every process's part of a sharded evaluation."""
        return loss_sum, confusion, count, accuracy


class DataParallel(SingleProcess):
    """Data-parallel training for Trainer on `comm`'s ranks (Trainer(model, comm=comm) makes one).

    Each rank trains a whole copy of the model on its shard of every batch. This object owns all
    that makes the ranks one run: rank 0's weights to start, gradients averaged before every step
    (so the weights stay identical), the epoch's sums and the evaluation added up over the ranks,
    a stop request on any rank (Ctrl-C) stopping every rank after the same step, rank 0's BatchNorm
    statistics for all after each epoch, rank 0 alone printing and writing checkpoints, and an
    error on one rank ending every rank instead of leaving the others waiting in a collective.
    """

    STOP_SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, comm):
        self.comm = comm
        self.shard = (comm.rank, comm.size)  # each rank its part of every batch
        self.is_main_process = comm.rank == 0

    def __repr__(self):
        return f"DataParallel({self.comm!r})"

    @contextlib.contextmanager
    def failing_together(self):
        from . import RanksDisagreeError  # the package's error; this module is imported by the package

        try:
            yield
        except RanksDisagreeError as error:  # every rank met it together: one line, from rank 0
            self.comm.abort_together(f"{type(error).__name__}: {error}")
        except Exception as error:
            traceback.print_exc()
            self.comm.abort(f"{type(error).__name__}: {error}")

    def start(self, model, loader):
        """Check that the ranks agree on the data and the model, then give every rank rank 0's weights."""
        rank, size = self.comm.rank, self.comm.size
        if loader.shard != (rank, size):
            raise ValueError(f"Trainer.fit on rank {rank} of {size}: the DataLoader serves shard {loader.shard}; "
                             f"make it with shard=({rank}, {size})")
        self.comm.check_agreement("the number of training images", loader.num_samples)
        self.comm.check_agreement("the batches per epoch", len(loader))
        # Each rank draws its part of a batch from the epoch's order, which the seed makes: with another seed
        # a rank would train on images another rank also trains on, and miss others (the seed each rank was given).
        self.comm.check_agreement("the data order's seed (the DataLoader's seed)", loader.seed)
        self.comm.broadcast_parameters(model)

    def stepping(self, optimizer, model):
        return _AveragingGradients(optimizer, self.comm, model)

    def resumed_sums(self, sums):
        return sums if self.comm.rank == 0 else None  # a checkpoint's sums are all ranks': rank 0 carries them on

    def total(self, sums):
        loss_sum, correct, seen = self.comm.allreduce(np.array(sums, dtype=np.float64))
        return float(loss_sum), int(correct), int(seen)

    def agreed_stop(self, requested):
        code = self.STOP_SIGNALS.index(requested) + 1 if requested in self.STOP_SIGNALS else 0
        code = int(self.comm.allreduce(code, op="max"))  # any rank's request stops all
        return self.STOP_SIGNALS[code - 1] if code else None

    def end_epoch(self, model):
        if any(True for _ in model.named_buffers()):
            # Each rank's BatchNorm ran on its own batches; from here on all hold rank 0's running statistics,
            # which its checkpoint saves, so the reduced evaluation is that of the saved model.
            self.comm.broadcast_parameters(model)

    def whole_evaluation(self, loss_sum, confusion, count, accuracy):
        loss_sum = float(self.comm.allreduce(loss_sum))
        confusion = self.comm.allreduce(confusion)
        count = int(confusion.sum())
        return loss_sum, confusion, count, float(np.trace(confusion)) / count


def data_parallel(comm=None):
    """What Trainer(comm=comm) trains with: SingleProcess() for None or one rank, else DataParallel(comm)."""
    if comm is None or comm.size == 1:
        return SingleProcess()
    return DataParallel(comm)


class _AveragingGradients:
    """An optimizer seen through data-parallel training: step() first replaces every gradient by its
    mean over the ranks (one collective, Communicator.allreduce_gradients), so every rank takes the same step."""

    def __init__(self, optimizer, comm, model):
        self.optimizer, self.comm, self.model = optimizer, comm, model

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.comm.allreduce_gradients(self.model)
        self.optimizer.step()
