"""Training health: per-layer statistics of activations and gradients, recorded by hooks, per epoch.

    monitor = HealthMonitor(model)
    trainer.fit(x, y, epochs=5, callbacks=[monitor])
    monitor.history["1 ReLU"]["dead_relu_share"]   # one value per epoch
    monitor.remove()                               # detach the hooks

A HealthMonitor is a Trainer callback. Forward hooks on every layer record, for
each training batch, the mean and standard deviation of the layer's output and,
for a ReLU, its share of dead units; backward hooks record the mean and standard
deviation of the gradient reaching the layer's output; after each optimizer step
it records ||grad|| / ||parameter|| of every parameter. At the end of an epoch
each statistic is averaged over the epoch's batches into `history`.

Definitions:
- a unit is one feature of the ReLU's output: one element of (N, features), or one
  whole channel of (N, C, H, W) (the ReLU of one convolution filter, at every pixel).
  A unit is *dead* on a batch when it is zero for every sample of that batch (and,
  for a channel, at every pixel); dead_relu_share is the share of the layer's units
  that are dead, averaged over the epoch's batches. Dead units pass nothing on and
  get no gradient to recover with, so a share that grows means the layer is losing
  capacity. (Counting single pixels instead would call the always-black border of
  a digit image dead, which says nothing about the filters.)
- <parameter>_grad_ratio (weight_grad_ratio, bias_grad_ratio) is ||grad|| / ||parameter||
  (Frobenius norms, the parameter as it is after the step). Times the learning rate
  it is the relative size of a plain SGD step, for which about 1e-3 is the usual
  rule of thumb; a layer far above the others is being thrown around, one far
  below hardly learns. A bias starts at zero, so its ratio starts high.

Only batches seen in training mode are recorded, so evaluation and validation
passes (eval mode, no backward) leave the statistics alone. Each statistic is
reduced to one number on the array's own device when it is recorded and brought
to the host once per epoch, so on the GPU the hooks do not wait for the device.
"""

import math

from .. import backend
from ..nn import ReLU
from .saliency import named_layers

ACTIVATION_STATS = ("activation_mean", "activation_std", "dead_relu_share")
GRADIENT_STATS = ("gradient_mean", "gradient_std")


def mean_and_std(array):
    """The mean and the (population) standard deviation of all elements, as 0-d arrays on array's device.

    From the sum and the sum of squares, the latter one dot product: no temporary array, about a
    third of numpy.std's time on a large activation. E[x^2] - E[x]^2 loses digits only when the
    mean dwarfs the spread, which activations and gradients do not do.
    """
    xp = backend.get_array_module(array)
    flat = array.reshape(-1)
    mean = flat.sum().astype(xp.float64) / flat.size  # NumPy sums pairwise: float32 keeps its digits
    mean_square = xp.dot(flat, flat).astype(xp.float64) / flat.size
    return mean, xp.sqrt(xp.maximum(mean_square - mean * mean, 0))


class HealthMonitor:
    """Records per-layer activation and gradient statistics while `model` trains; a Trainer callback.

    Layers: every leaf module of the model (each layer of a Sequential), named as in
    minicnn.viz.saliency.named_layers ('0 Conv2D', '1 ReLU', ...).
    history: {layer name: {statistic: [one float per epoch]}}; statistics are
    activation_mean, activation_std, dead_relu_share (ReLU layers only), gradient_mean,
    gradient_std, and <parameter>_grad_ratio for layers with parameters.
    """

    def __init__(self, model):
        self.model = model
        self.layers = named_layers(model)
        self.history = {name: {} for name, _ in self.layers}
        self.epochs = 0
        self._batch_values = {name: {} for name, _ in self.layers}  # this epoch's values, still on the device
        self._handles = []
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._activation_hook(name)))
            self._handles.append(module.register_backward_hook(self._gradient_hook(name)))

    def _record(self, layer, stat, value):
        self._batch_values[layer].setdefault(stat, []).append(value)

    def _activation_hook(self, name):
        def hook(module, inputs, output):
            if not module.training:
                return
            data = output.data
            mean, std = mean_and_std(data)
            self._record(name, "activation_mean", mean)
            self._record(name, "activation_std", std)
            if isinstance(module, ReLU):
                # Dead: zero for every sample of the batch (axis 0) and, for a channel, every pixel.
                # A ReLU's output is never negative, so "all zero" is "largest value <= 0".
                unit_axes = (0, 2, 3) if data.ndim == 4 else 0
                self._record(name, "dead_relu_share", (data.max(axis=unit_axes) <= 0).mean())
        return hook

    def _gradient_hook(self, name):
        def hook(module, grad_output):
            if not module.training:
                return
            mean, std = mean_and_std(grad_output)
            self._record(name, "gradient_mean", mean)
            self._record(name, "gradient_std", std)
        return hook

    # ----- Trainer callbacks ---------------------------------------------------------------------------
    def on_batch_end(self, trainer, epoch, step):
        """After each optimizer step: ||grad|| / ||parameter|| of every parameter that has a gradient."""
        for name, module in self.layers:
            for parameter_name, parameter in module.named_parameters():
                if parameter.grad is None:
                    continue
                xp = backend.get_array_module(parameter.data)
                grad_norm = xp.sqrt((parameter.grad * parameter.grad).sum())
                weight_norm = xp.sqrt((parameter.data * parameter.data).sum())
                # The tiny term keeps a still-zero parameter (a fresh bias) from dividing by zero.
                self._record(name, f"{parameter_name}_grad_ratio", grad_norm / (weight_norm + 1e-12))

    def on_epoch_end(self, trainer, epoch, logs):
        """Average this epoch's values of every statistic into `history` (NaN where none was recorded)."""
        for name, _ in self.layers:
            stats, values = self.history[name], self._batch_values[name]
            for stat in list(stats) + [stat for stat in values if stat not in stats]:
                series = stats.setdefault(stat, [math.nan] * self.epochs)
                recorded = values.get(stat)
                if recorded:
                    xp = backend.get_array_module(recorded[0])
                    series.append(float(backend.to_numpy(xp.stack(recorded).astype(xp.float64).mean())))
                else:
                    series.append(math.nan)
            values.clear()
        self.epochs += 1

    def remove(self):
        """Detach every hook from the model; the history stays."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
