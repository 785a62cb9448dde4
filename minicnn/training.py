"""The training loop behind `minicnn train` (and the Keras-style API): epochs, validation, metrics,
progress, early stopping, learning-rate schedules, checkpoints and resuming.

A Trainer owns a model, an optimizer and a loss. The heart of it is five lines per batch,
in `Trainer._train_epoch`:

    logits = model(x)
    loss = loss_fn(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

Everything else is a named helper called around those lines:
- `_EpochMeter` (after each step) sums the loss and the correct predictions, checks that
  the loss is finite (after each step on the CPU; every 50 steps on the GPU, where reading
  it is a sync) and moves the progress bar;
- `_StopRequests` turns Ctrl-C and SIGTERM into a flag that is looked at after each step:
  the current step finishes, `last.npz` is saved (with the epoch, step and running sums,
  so a resumed run continues bit for bit) and training stops;
- `Trainer._end_epoch` evaluates, records the history, steps the schedule, asks the
  callbacks whether to stop and writes `last.npz` (and `best.npz`) when given a folder.

On several processes (`Trainer(model, comm=comm)`) the loop is the same: a
`distributed.DataParallel` object, called at fixed points, averages the gradients, adds up
the sums, agrees on stopping and lets one process print and write (minicnn.distributed).
"""

import contextlib
import functools
import signal
import sys
import threading
import time
import warnings
import weakref
from pathlib import Path

import numpy as np

from . import backend, checkpoint, distributed, metrics, optim
from . import functional as F
from .data import DataLoader
from .errors import TrainingDivergedError
from .files import cannot_write
from .tensor import no_grad

LOSSES = {"cross_entropy": F.cross_entropy}
# Keras's names, as scripts written for it say: F.cross_entropy takes class indices and class probabilities alike.
LOSS_SPELLINGS = {"sparse_categorical_crossentropy": "cross_entropy", "categorical_crossentropy": "cross_entropy"}
SUPPORTED_METRICS = ("accuracy",)
_warned_nonfinite = weakref.WeakSet()  # the DataLoaders evaluate has warned about NaN or infinite images


class History(dict):
    """Per-epoch values, e.g. history["loss"][0], history["val_accuracy"][-1]: {name: [value per epoch]}."""

    def append(self, logs):
        for key, value in logs.items():
            self.setdefault(key, []).append(value)


class EarlyStopping:
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    mode 'max' for accuracies, 'min' for losses ('auto' picks from the name). With
    restore_best_weights the model gets back the weights of its best epoch when stopping.
    """

    def __init__(self, monitor="val_accuracy", patience=3, min_delta=0.0, mode="auto", restore_best_weights=True):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.restore_best_weights = restore_best_weights
        self.best, self.best_epoch, self.best_weights, self.wait = None, None, None, 0

    def improved(self, value):
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def should_stop(self, epoch, logs, model):
        """Record this epoch's value; True when training should stop."""
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: no '{self.monitor}' in this epoch's logs {sorted(logs)}; "
                           "monitor a val_ metric only when fit has validation_data")
        value = logs[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = model.state_dict()
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        if self.restore_best_weights and self.best_weights is not None:
            model.load_state_dict(self.best_weights)
        return True


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped on a stop request (`signal`: 'SIGINT' or 'SIGTERM') after a whole step.

    checkpoint: the last.npz it saved (None without a checkpoint folder), at `epoch` (counted from 0)
    and `step` (the steps of that epoch done); resume() from it continues the run bit for bit.
    """

    def __init__(self, signal_name, checkpoint=None, epoch=None, step=None):
        self.signal, self.checkpoint, self.epoch, self.step = signal_name, checkpoint, epoch, step
        if checkpoint is None:
            super().__init__(signal_name)
        else:
            super().__init__(f"{signal_name}: saved {checkpoint} (epoch {epoch + 1}, {step} steps done)")


class _StopRequests:
    """While active, Ctrl-C (SIGINT) and SIGTERM set a flag instead of interrupting.

    The loop checks the flag between steps, so a checkpoint is never taken halfway
    through an optimizer update. A second Ctrl-C interrupts at once.
    """

    def __init__(self):
        self.requested = None

    def _handler(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    @contextlib.contextmanager
    def active(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _EpochMeter:
    """One epoch's running loss and accuracy over its training batches, checked for NaN, shown on a bar.

    `add` runs after every optimizer step. The batch's loss array waits in `pending`
    until it is read: at once on the CPU, every `check_every` steps on the GPU (reading
    a GPU value waits for the device), and always on the epoch's last step and before
    a checkpoint (`flush`). Reading raises TrainingDivergedError on NaN or inf.
    A run resumed mid-epoch starts from the saved `sums` (loss sum, correct, seen);
    `seconds` then covers only the steps this process ran (`steps` says how many).
    """

    def __init__(self, trainer, epoch, epochs, total_steps, start_step, sums, progress):
        from tqdm.auto import tqdm

        self.trainer, self.epoch, self.total_steps, self.start_step = trainer, epoch, total_steps, start_step
        self.loss_sum, self.correct, self.seen = sums or (0.0, 0, 0)
        self.check_every = 1 if trainer.model.device == "cpu" else 50
        self.pending = []  # (step, batch-mean loss array, batch size) not yet read
        self.images, self.steps, self.started = 0, 0, time.perf_counter()
        # disable=None lets tqdm stay quiet when stderr is not a terminal
        self.bar = tqdm(total=total_steps, initial=start_step, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                        leave=True, disable=None if progress else True, dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.bar.close()

    def add(self, step, logits, y, loss):
        self.pending.append((step, loss.data, y.shape[0]))
        self.correct += (logits.data.argmax(axis=1) == class_indices(y.data)).sum()  # stays on the device until read
        self.seen += y.shape[0]
        self.images += y.shape[0]
        self.steps += 1
        if len(self.pending) >= self.check_every or step == self.total_steps - 1:
            self.flush()

    def flush(self):
        """Read the pending losses (raising on NaN or inf), add them to the sum, move the bar."""
        if not self.pending:
            return
        self.loss_sum += self._checked_loss_sum()
        last_step = self.pending[-1][0]
        self.pending = []
        self.bar.update(last_step + 1 - self.bar.n)
        self.bar.set_postfix(loss=f"{self.loss_sum / self.seen:.4f}", acc=f"{int(self.correct) / self.seen:.4f}",
                             img_s=f"{self.images / (time.perf_counter() - self.started):.0f}", refresh=False)

    def _checked_loss_sum(self):
        """Sum over `pending` (step, batch-mean loss, batch size) of loss * size; raises on NaN or inf."""
        xp = backend.get_array_module(self.pending[0][1])
        losses = backend.to_numpy(xp.stack([loss for _, loss, _ in self.pending]))
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            step = self.pending[bad[0]][0]
            on_gpu = self.trainer.model.device != "cpu"
            raise TrainingDivergedError(
                f"training stopped: the loss became {losses[bad[0]]} (NaN or infinite) at epoch {self.epoch + 1}, "
                f"step {step + 1}; lower the learning rate (now {self.trainer.optimizer.lr:g}) or check the inputs"
                + (" (on the GPU a label outside [0, classes) also gives NaN)" if on_gpu else "")
            )
        return float(sum(float(loss) * count for loss, (_, _, count) in zip(losses, self.pending)))

    def sums(self):
        """(loss sum, correct, seen) so far, as a checkpoint stores them; call after flush."""
        return self.loss_sum, int(self.correct), self.seen

    def logs(self, sums):
        """The epoch's logs from its (loss sum, correct, seen): this process's `sums()`, or all processes'."""
        loss_sum, correct, seen = sums
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                "seconds": time.perf_counter() - self.started, "steps": self.steps}


def class_indices(labels):
    """Class indices (N,) from labels: themselves, or the likeliest class of class probabilities (N, C),
    as Keras's categorical accuracy takes them."""
    return labels.argmax(axis=1) if labels.ndim == 2 else labels


def _make_optimizer(optimizer, parameters, lr):
    if isinstance(optimizer, optim.Optimizer):
        if lr is not None:
            optimizer.lr = lr
        return optimizer
    return optim.create(optimizer, parameters, lr)


def _ends_every_rank_on_error(method):
    """On several ranks, an exception on one of them ends the whole job with its message instead of
    leaving the other ranks waiting forever in their next collective (see DataParallel)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.parallel.failing_together():
            return method(self, *args, **kwargs)
    return wrapper


class Trainer:
    """Trains `model` with an optimizer ('adam', 'sgd' (momentum 0.9) or an optim.Optimizer) and a loss.

    loss: 'cross_entropy' (integer labels (N,) or class probabilities (N, C)) or a function
    (logits, labels) -> loss; Keras's names for it (LOSS_SPELLINGS) are accepted for scripts written
    against earlier versions. comm: a minicnn.distributed communicator to train data-parallel on its
    ranks (through distributed.DataParallel); None trains in this process alone.
    """

    def __init__(self, model, optimizer="adam", loss="cross_entropy", metrics=("accuracy",),
                 lr=None, schedule=None, comm=None):
        loss = LOSS_SPELLINGS.get(loss, loss) if isinstance(loss, str) else loss
        if callable(loss):
            self.loss_fn = loss
        elif loss in LOSSES:
            self.loss_fn = LOSSES[loss]
        else:
            raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a function (logits, labels) -> loss")
        unknown = [name for name in metrics or () if name not in SUPPORTED_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; supported: {list(SUPPORTED_METRICS)}")
        self.model = model
        self.metrics = tuple(metrics or ())
        self.optimizer = _make_optimizer(optimizer, model.parameters(), lr)
        self.schedule = schedule
        # One process (SingleProcess), or data-parallel over comm's ranks (DataParallel): see minicnn.distributed.
        self.parallel = distributed.data_parallel(comm)
        self.history = History()
        self.stop_requests = _StopRequests()
        self._resume_from = None  # (epoch, step, running sums) after resume()
        self.run_info = None  # JSON-able settings saved with each checkpoint (the command line's)
        self.best_value = None  # the best validation accuracy so far, which decides when best.npz is written
        self.best_epoch = None  # the epoch (counted from 1) whose weights best.npz holds
        # For callbacks: batches per epoch of the running fit, and the last step's loss, logits and labels (arrays).
        self.steps_per_epoch = self.last_loss = self.last_logits = self.last_labels = None

    # ----- data -----------------------------------------------------------------------------------
    def _loader(self, x, y, batch_size, shuffle=False, seed=0, shift=0, sharded=True):
        if isinstance(x, DataLoader):
            return x
        return DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, shift=shift,
                          device=self.model.device, shard=self.parallel.shard if sharded else None)

    # ----- training ---------------------------------------------------------------------------------
    @_ends_every_rank_on_error
    def fit(self, x, y=None, epochs=1, batch_size=64, validation_data=None, shuffle=True, seed=0, shift=0,
            initial_epoch=0, callbacks=(), checkpoint_dir=None, verbose="auto"):
        """Train until `epochs` epochs are done (counting from initial_epoch, or from a resumed checkpoint).

        x, y: NumPy images (N, H, W) or (N, C, H, W) (uint8 scaled to [0, 1]) and int labels (N,) (or
        float class probabilities (N, C), one-hot or soft),
        or x a DataLoader and y None. validation_data: (x, y) or a DataLoader, evaluated
        after each epoch. callbacks: objects with any of on_batch_end(trainer, epoch, step) (after
        each optimizer step, gradients still in place; trainer.last_loss, last_logits, last_labels (class
        indices) and steps_per_epoch describe the step), on_epoch_end(trainer, epoch, logs) and
        should_stop(epoch, logs, model) -> bool, such as EarlyStopping. verbose: 0 silent, 2 one line
        per epoch, 'auto' / 1 a progress bar (on a terminal) and one line per epoch.
        Returns the History (loss, accuracy, val_loss, val_accuracy, lr, seconds per epoch and
        steps: the training batches those seconds cover, fewer than a whole epoch's when resumed mid-epoch).
        """
        loader = self._loader(x, y, batch_size, shuffle, seed, shift)
        self.steps_per_epoch = len(loader)
        self.parallel.start(self.model, loader)
        if not self.parallel.is_main_process:  # the main process alone prints and writes checkpoints
            verbose, checkpoint_dir = 0, None
        validation = None
        if validation_data is not None:
            validation = (validation_data if isinstance(validation_data, DataLoader)
                          else self._loader(*validation_data, batch_size=max(batch_size, 256)))
        checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        start_epoch, start_step, sums = initial_epoch, 0, None
        if self._resume_from is not None:
            start_epoch, start_step, sums = self._resume_from
            self._resume_from = None
        self.stop_requests.requested = None
        with self.stop_requests.active():
            for epoch in range(start_epoch, epochs):
                logs = self._train_epoch(loader, epoch, epochs, start_step, sums, checkpoint_dir, verbose, callbacks)
                start_step, sums = 0, None
                if self._end_epoch(epoch, epochs, logs, validation, checkpoint_dir, verbose, callbacks):
                    break
        return self.history

    def _train_epoch(self, loader, epoch, epochs, start_step, sums, checkpoint_dir, verbose, callbacks=()):
        """One epoch from batch start_step; returns {'loss', 'accuracy', 'seconds', 'steps'}."""
        model, loss_fn = self.model, self._step_loss()
        optimizer = self.parallel.stepping(self.optimizer, model)  # on several processes, step() averages first
        sums = self.parallel.resumed_sums(sums)
        model.train()
        with _EpochMeter(self, epoch, epochs, len(loader), start_step, sums, verbose in ("auto", 1, True)) as meter:
            for step, (x, y) in enumerate(loader.batches(epoch, start_step), start=start_step):
                logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                self._after_step(epoch, step, logits, y, loss, meter, checkpoint_dir, callbacks)
        return meter.logs(self.parallel.total(meter.sums()))  # over every process's images

    def _after_step(self, epoch, step, logits, y, loss, meter, checkpoint_dir, callbacks):
        """The callbacks' on_batch_end, the running metrics (and NaN check), then a pending stop request."""
        self.last_loss, self.last_logits, self.last_labels = loss.data, logits.data, class_indices(y.data)
        for callback in callbacks:
            if hasattr(callback, "on_batch_end"):
                callback.on_batch_end(self, epoch, step)
        meter.add(step, logits, y, loss)
        # Every process stops after the same step, or the others would wait for it.
        self.stop_requests.requested = self.parallel.agreed_stop(self.stop_requests.requested)
        # A request during an epoch's last step waits for the epoch's end (see _end_epoch).
        if self.stop_requests.requested and step < meter.total_steps - 1:
            meter.flush()
            self._stop(checkpoint_dir, epoch, step + 1, self.parallel.total(meter.sums()))

    def _end_epoch(self, epoch, epochs, logs, validation, checkpoint_dir, verbose, callbacks):
        """Validate, record, step the schedule, ask the callbacks, save, print; True when training should stop."""
        self.parallel.end_epoch(self.model)  # on several processes, all take the main one's BatchNorm statistics
        if validation is not None:
            result = self.evaluate(validation)
            logs.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
        logs["lr"] = self.optimizer.lr
        if self.model.device == "gpu":
            logs["gpu_pool_mib"] = backend.gpu_pool_mib()  # stays flat across epochs if nothing leaks
        self.history.append(logs)
        if self.schedule is not None:
            self.schedule.step()
        for callback in callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(self, epoch, logs)
        stop = any([callback.should_stop(epoch, logs, self.model)  # ask every one: each keeps count
                    for callback in callbacks if hasattr(callback, "should_stop")])
        monitor = "val_accuracy" if validation is not None else "accuracy"  # decides which epoch is best.npz
        improved = self.best_value is None or logs[monitor] > self.best_value
        if improved:
            self.best_value, self.best_epoch = logs[monitor], epoch + 1
        if checkpoint_dir is not None:
            # best.npz before last.npz: a kill between the two leaves last.npz at the epoch before, so a
            # resumed run trains this epoch again and writes best.npz again. The other order would leave a
            # last.npz whose best_value best.npz does not hold, and best.npz would never be written again.
            if improved:
                self.save(checkpoint_dir / "best.npz", epoch + 1, 0)
            self.save(checkpoint_dir / "last.npz", epoch + 1, 0)
        if verbose:
            print(self._epoch_line(epoch, epochs, logs), flush=True)
        # A request may have reached one process during validation: all stop, or none.
        self.stop_requests.requested = self.parallel.agreed_stop(self.stop_requests.requested)
        if self.stop_requests.requested:  # the request came during the epoch's last step
            self._stop(checkpoint_dir, epoch + 1, 0, None)
        if stop and verbose:
            print(f"early stopping after epoch {epoch + 1}", flush=True)
        return stop

    def _step_loss(self):
        """The loss function of a training step."""
        if self.loss_fn is F.cross_entropy and self.model.device != "cpu":
            # Checking the label range on the host would sync with the GPU every step; unchecked, a bad
            # label makes the loss NaN, which the NaN check reports.
            return functools.partial(F.cross_entropy, check_labels=False)
        return self.loss_fn

    def _stop(self, checkpoint_dir, epoch, step, sums):
        """Save last.npz at (epoch, step) when given a folder, say so on stderr, raise TrainingInterrupted."""
        reason, path = self.stop_requests.requested, None
        if checkpoint_dir is not None:
            path = self.save(checkpoint_dir / "last.npz", epoch, step, sums)
        stop = TrainingInterrupted(reason, path, epoch, step)
        if path is not None:
            print(f"\n{stop}", file=sys.stderr, flush=True)
        raise stop

    @staticmethod
    def _epoch_line(epoch, epochs, logs):
        parts = [f"epoch {epoch + 1}/{epochs}"]
        parts += [f"{key} {value:.4f}" for key, value in logs.items()
                  if key not in ("seconds", "steps", "lr", "gpu_pool_mib")]
        parts.append(f"lr {logs['lr']:.3g}")
        parts.append(f"{logs['seconds']:.1f} s")
        return "  ".join(parts)

    # ----- evaluation -----------------------------------------------------------------------------
    @_ends_every_rank_on_error
    def evaluate(self, x, y=None, batch_size=256):
        """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix, in eval mode.

        Returns a dict: loss, accuracy (floats), precision, recall, f1 ((classes,) arrays),
        confusion_matrix ((classes, classes) int64, row = true class).
        """
        loader = self._loader(x, y, batch_size)
        nonfinite = loader.nonfinite_images()
        if nonfinite and loader not in _warned_nonfinite:  # once per loader: fit validates on one each epoch
            _warned_nonfinite.add(loader)
            warnings.warn(f"evaluate: {nonfinite} of {loader.num_samples} images hold NaN or infinite values; "
                          "the loss (val_loss in fit) will be NaN", RuntimeWarning, stacklevel=2)
        loss_sum, labels, predictions, classes = 0.0, [], [], None
        with self.model.evaluating(), no_grad():
            for images, targets in loader:
                logits = self.model(images)
                classes = logits.shape[1]
                loss_sum += float(self.loss_fn(logits, targets).item()) * targets.shape[0]
                predictions.append(backend.to_numpy(logits.data.argmax(axis=1)))
                labels.append(backend.to_numpy(class_indices(targets.data)))
        labels, predictions = np.concatenate(labels), np.concatenate(predictions)
        confusion = metrics.confusion_matrix(labels, predictions, classes)
        count, accuracy = len(labels), metrics.accuracy(labels, predictions)
        if loader.shard is not None:  # this process saw its part of the data: add up every process's parts
            loss_sum, confusion, count, accuracy = self.parallel.whole_evaluation(loss_sum, confusion, count, accuracy)
        precision, recall, f1 = metrics.precision_recall_f1(confusion)
        return {"loss": loss_sum / count, "accuracy": accuracy,
                "precision": precision, "recall": recall, "f1": f1, "confusion_matrix": confusion}

    def predict(self, x, batch_size=256):
        """The model's outputs (logits) for x, as a NumPy array (N, classes), in eval mode."""
        loader = self._loader(x, None, batch_size, sharded=False)
        outputs = []
        with self.model.evaluating(), no_grad():
            for batch in loader:
                images = batch[0] if isinstance(batch, tuple) else batch  # a loader with labels
                outputs.append(backend.to_numpy(self.model(images).data))
        return np.concatenate(outputs)

    # ----- checkpoints ------------------------------------------------------------------------------
    def save(self, path, epoch, step=0, sums=None):
        """Write a checkpoint of the model, optimizer, schedule and training position to `path`.

        In a distributed run the main process alone writes (all hold the same weights); sums are all processes'.
        """
        if not self.parallel.is_main_process:
            return Path(path)
        state = {
            "epoch": epoch, "step": step, "sums": list(sums) if sums else None,
            "history": {key: list(values) for key, values in self.history.items()},
            "cpu_rng": backend.cpu_rng().bit_generator.state, "run": self.run_info, "best_value": self.best_value,
            "best_epoch": self.best_epoch,
        }
        try:
            checkpoint.save_checkpoint(path, self.model, self.optimizer, self.schedule, state)
        except OSError as error:  # a full disk or a read-only folder: say which checkpoint could not be written
            raise cannot_write(path, error) from error
        return Path(path)

    def resume(self, path):
        """Load a checkpoint written by fit (a file, or a folder holding last.npz); the next fit continues it."""
        path = Path(path)
        if path.is_dir():
            path = path / "last.npz"
        loaded = checkpoint.load_checkpoint(path, self.model, self.optimizer, self.schedule)
        state = loaded.state
        self.history = History({key: list(values) for key, values in state.get("history", {}).items()})
        if state.get("cpu_rng"):
            backend.cpu_rng().bit_generator.state = state["cpu_rng"]
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        sums = tuple(state["sums"]) if state.get("sums") else None
        self._resume_from = (int(state["epoch"]), int(state.get("step", 0)), sums)
        return loaded
