"""TensorBoard logs of a training run, written with tensorboardX (no TensorFlow, no PyTorch needed).

    board = TensorBoard("runs/tb", model=model, image=test_images[0])
    trainer.fit(x, y, epochs=5, validation_data=(xv, yv), callbacks=[board])
    board.close()
    # then: tensorboard --logdir runs/tb

A TensorBoard object is a Trainer callback. What it writes, and at which step:

- every `every` optimizer steps, the step's own batch (not a running mean):
  batch/loss and batch/accuracy, at step = optimizer steps done since the start
  (epoch * steps per epoch + step + 1), so resumed runs continue the same axis;
- after each epoch, at step = epochs done (1 after the first): every number in
  the epoch's logs, as fit's History holds it: epoch/loss, epoch/accuracy,
  epoch/val_loss, epoch/val_accuracy (with validation data), epoch/lr, epoch/seconds;
- after each epoch's last optimizer step (the gradients are still in place): a histogram
  of every parameter and of its gradient, weights/<layer>/<parameter> and
  gradients/<layer>/<parameter> (layers named as in minicnn.viz: '0 Conv2D' -> '0_Conv2D');
- after each epoch, as images: filters/<layer>, the first Conv2D layer's kernels
  (blue negative, white 0, red positive, one scale for the layer; for several input
  channels their mean), and, when `image` is given, feature_maps/<layer>, the output
  of every Conv2D layer for that image (each map scaled to its own range), as
  minicnn.viz.feature_maps computes them;
- with `health` (True or a minicnn.viz.HealthMonitor), after each epoch the
  monitor's per-layer statistics, health/<layer>/<statistic> (see minicnn.viz.health).

The model graph is not written yet: it would come from the ONNX export (the `onnx`
extra) once minicnn has one.

The events go through tensorboardX's writer thread, so the training loop only
hands them over. Reading a step's loss waits for the GPU, which is why it happens
only every `every` steps. What it costs on the CPU: about 0.03 s per epoch for `cnn`
(0.01 s of histograms, 0.02 s of images), under 1% of an epoch of 6,000 MNIST images
(`python3 -m benchmarks.tensorboard_overhead`). health=True adds the HealthMonitor's
own hooks, which cost more (about 15% there). The model's graph is written once, after the first
epoch, through its ONNX export, where the onnx extra is installed.
Install with `python3 -m pip install -e ".[tensorboard]"`.
"""

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import backend
from .errors import ShapeError
from .nn import Conv2D
from .viz.health import HealthMonitor
from .viz.plots import feature_maps, image_grid
from .viz.saliency import named_layers

GAP = (176, 196, 222)  # light steel blue between tiles: a colour neither picture uses
BINS = 30  # buckets per histogram, as TensorFlow 2 writes them; TensorBoard re-bins for its charts anyway


def _summary_writer(log_dir):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError(
            'minicnn.tensorboard needs tensorboardX (and Pillow for the images); install them from the minicnn '
            'checkout with: python3 -m pip install -e ".[tensorboard]"'
        ) from None
    return SummaryWriter(logdir=str(log_dir))


def tag_name(layer_name):
    """'0 Conv2D' -> '0_Conv2D': TensorBoard tags allow no spaces."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in layer_name)


def histogram(values, bins=BINS):
    """The fields of a TensorBoard histogram of `values` (any shape): min, max, num, sum, sum_squares,
    bucket_limits (the right edge of each bucket; the first starts at min) and bucket_counts.
    None when a value is NaN or infinite (training has diverged; the trainer says so after this step).

    Computed here rather than by tensorboardX's add_histogram, whose ~1,500 fixed buckets and BLAS
    dot product took several times longer (see benchmarks/tensorboard_overhead.py).
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        return None
    counts, edges = np.histogram(flat, bins=bins)
    return {"min": float(flat.min()), "max": float(flat.max()), "num": flat.size, "sum": float(flat.sum()),
            "sum_squares": float(np.square(flat).sum()), "bucket_limits": edges[1:].tolist(),
            "bucket_counts": counts.tolist()}


def _enlarged(tiles, at_least=24):
    """Tiles (n, h, w) with each pixel repeated so that a tile is at least `at_least` pixels high."""
    factor = max(1, -(-at_least // tiles.shape[1]))
    return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def grid_to_rgb(grid, diverging=False):
    """An image_grid (float, NaN in the gaps) as uint8 RGB (H, W, 3).

    grid values in [0, 1] become gray levels; with diverging, values in [-1, 1] become
    blue (negative) through white (0) to red (positive).
    """
    gaps = np.isnan(grid)
    values = np.nan_to_num(grid)
    if diverging:
        values = np.clip(values, -1, 1)
        red, green, blue = 1 - np.maximum(-values, 0), 1 - np.abs(values), 1 - np.maximum(values, 0)
        rgb = np.stack([red, green, blue], axis=-1)
    else:
        rgb = np.repeat(np.clip(values, 0, 1)[..., None], 3, axis=-1)
    rgb = np.round(rgb * 255).astype(np.uint8)
    rgb[gaps] = GAP
    return rgb


def filter_image(conv, columns=8):
    """The kernels of a Conv2D layer as uint8 RGB (H, W, 3): one tile per filter, one colour scale
    symmetric about 0 for the layer (the mean over the input channels when there are several)."""
    weight = backend.to_numpy(conv.weight.data).astype(np.float64)  # (F, C, KH, KW)
    kernels = weight.mean(axis=1)
    limit = float(np.abs(kernels).max()) or 1.0
    grid = image_grid(_enlarged(kernels / limit), columns=min(columns, len(kernels)), normalize=False)
    return grid_to_rgb(grid, diverging=True)


def feature_map_images(model, image, columns=8):
    """[(layer name, uint8 RGB (H, W, 3))]: each Conv2D layer's output for `image`, one tile per channel."""
    return [(name, grid_to_rgb(image_grid(_enlarged(maps), columns=min(columns, len(maps)))))
            for name, maps in feature_maps(model, image)]


class TensorBoard:
    """A Trainer callback writing TensorBoard event files to `log_dir` (see the module's docstring).

    every: write the batch loss and accuracy every this many optimizer steps.
    model: the model being trained (default: the trainer's, found at the first step);
    needed up front only with health=True, whose hooks must be in place before training.
    image: one image (H, W), (C, H, W) or (1, C, H, W) whose feature maps are shown per epoch.
    histograms, images: write the per-epoch histograms, and the filter and feature-map images.
    health: False, True (a HealthMonitor on `model`, driven by this callback) or a HealthMonitor
    to drive and write (give it to this callback instead of to fit, so its epoch is averaged
    before it is written).
    graph: write the model's graph once, through its ONNX export (minicnn.onnx), where the onnx
    extra is installed; without it, or for a model ONNX cannot describe, no graph is written.
    Call close() (or use it as a context manager) when training is over, to flush the files.
    """

    def __init__(self, log_dir, every=50, model=None, image=None, histograms=True, images=True, health=False,
                 graph=True):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"TensorBoard: every must be a whole number >= 1, got {every!r}")
        if health is True:
            if model is None:
                raise ValueError("TensorBoard: health=True needs the model (its hooks are set before training)")
            health = HealthMonitor(model)
        elif health is not False and health is not None and not isinstance(health, HealthMonitor):
            raise TypeError(f"TensorBoard: health must be True, False or a HealthMonitor, got {type(health).__name__}")
        self.log_dir, self.every, self.model, self.image = log_dir, every, model, image
        self.histograms, self.images, self.health = histograms, images, health or None
        self.graph_pending = graph
        self.writer = _summary_writer(log_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def close(self):
        """Write everything still queued and close the event file (the health monitor's hooks stay)."""
        self.writer.close()

    # ----- Trainer callbacks ---------------------------------------------------------------------------
    def on_batch_end(self, trainer, epoch, step):
        if self.model is None:
            self.model = trainer.model
        if self.health is not None:
            self.health.on_batch_end(trainer, epoch, step)
        steps_done = epoch * trainer.steps_per_epoch + step + 1
        if steps_done % self.every == 0:
            loss = float(backend.to_numpy(trainer.last_loss))  # waits for the GPU: only every `every` steps
            correct = backend.to_numpy((trainer.last_logits.argmax(axis=1) == trainer.last_labels).mean())
            self.writer.add_scalar("batch/loss", loss, steps_done)
            self.writer.add_scalar("batch/accuracy", float(correct), steps_done)
        if self.histograms and step == trainer.steps_per_epoch - 1:
            self._write_histograms(epoch + 1)

    def on_epoch_end(self, trainer, epoch, logs):
        if self.model is None:  # an epoch without steps (resumed at its end)
            self.model = trainer.model
        for key, value in logs.items():
            if key != "steps":
                self.writer.add_scalar(f"epoch/{key}", float(value), epoch + 1)
        if self.graph_pending:
            self.graph_pending = False
            self._write_graph()
        if self.images:
            self._write_images(epoch + 1)
        if self.health is not None:
            self.health.on_epoch_end(trainer, epoch, logs)
            for layer, stats in self.health.history.items():
                for stat, values in stats.items():
                    self.writer.add_scalar(f"health/{tag_name(layer)}/{stat}", values[-1], epoch + 1)
        self.writer.flush()

    # ----- what is written once, and per epoch -----------------------------------------------------------------
    def _write_graph(self):
        """The model's graph, as TensorBoard draws an ONNX file; skipped (with a warning) where ONNX cannot say it."""
        from . import onnx as minicnn_onnx

        try:
            minicnn_onnx.require_onnx()
        except ImportError:
            return  # the onnx extra is optional: no graph, and nothing to warn about
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            try:
                minicnn_onnx.export(self.model, path)
            except (minicnn_onnx.OnnxError, ShapeError, ValueError) as error:
                warnings.warn(f"TensorBoard: no graph written, the model cannot be exported as ONNX ({error})",
                              stacklevel=3)
                return
            # tensorboardX's ONNX reader prints every input's and node's name ("input", "model[0]", ...) to
            # stdout; only that call's output is dropped, never the progress or the epoch lines around it.
            with contextlib.redirect_stdout(io.StringIO()):
                self.writer.add_onnx_graph(str(path))

    def _write_histograms(self, epochs_done):
        for name, module in named_layers(self.model):
            for parameter_name, parameter in module.named_parameters():
                for kind, values in (("weights", parameter.data), ("gradients", parameter.grad)):
                    fields = None if values is None else histogram(backend.to_numpy(values))
                    if fields is not None:
                        self.writer.add_histogram_raw(f"{kind}/{tag_name(name)}/{parameter_name}",
                                                      global_step=epochs_done, **fields)

    def _write_images(self, epochs_done):
        convs = [(name, module) for name, module in named_layers(self.model) if isinstance(module, Conv2D)]
        if convs:
            name, first = convs[0]
            self.writer.add_image(f"filters/{tag_name(name)}", filter_image(first), epochs_done, dataformats="HWC")
        if self.image is not None:
            for name, picture in feature_map_images(self.model, self.image):
                self.writer.add_image(f"feature_maps/{tag_name(name)}", picture, epochs_done, dataformats="HWC")
