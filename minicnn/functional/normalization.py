"""Batch normalisation: normalise each channel over the batch, then scale and shift it.

Channel axis 1, statistics over every other axis: (N, C) for features after a
dense layer, (N, C, H, W) for images (each channel's statistics then cover the
batch and every pixel). The running statistics a layer keeps for evaluation are
plain arrays that the operation updates in place, as PyTorch does.

This is the reference. On the convolutions' channel-major arrays minicnn.kernels
runs the same formulas over each channel's contiguous row (`kernels.batch_norm`,
`kernels.batch_norm_backward`, asked once at the top of forward and of backward).
"""

from .. import kernels
from ..backend import check_same_device, get_array_module
from ..errors import ShapeError
from ..tensor import Operation, Tensor


class BatchNormOp(Operation):
    """gamma * (x - mean) / sqrt(var + eps) + beta, per channel.

    x: (N, C) or (N, C, H, W), gamma: (C,), beta: (C,) -> x's shape.
    running_mean, running_var: (C,) arrays or None.
    Training: mean and biased variance of the batch; the running statistics, when
    given, move towards the batch's (running_var towards the unbiased variance).
    Evaluation: the running statistics, which are constants for the gradient.
    """

    input_names = ("input", "weight", "bias")

    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        _check_batch_norm_inputs(x, gamma, beta, self.running_mean, self.running_var, self.training)
        xp = get_array_module(x)
        C = x.shape[1]
        self.axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channel axis
        self.count = x.size // C  # values per channel
        channel_shape = (1, C) + (1,) * (x.ndim - 2)  # broadcasts a (C,) array against x
        self.gamma = gamma.reshape(channel_shape)
        statistics = None if self.training else (self.running_mean, self.running_var)
        fast = kernels.batch_norm(x, gamma, beta, statistics, self.eps)  # a fast path, or None
        if fast is not None:
            out, self.x_hat, inv_std, mean, var = fast
            self.inv_std = inv_std.reshape(channel_shape)
        else:
            mean, var = (x.mean(axis=self.axes), x.var(axis=self.axes)) if self.training else statistics
            self.inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype, copy=False).reshape(channel_shape)
            self.x_hat = (x - mean.astype(x.dtype, copy=False).reshape(channel_shape)) * self.inv_std
            out = self.x_hat * self.gamma + beta.reshape(channel_shape)
        if self.training and self.running_mean is not None:
            unbiased_var = var * (self.count / (self.count - 1))
            self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var[...] = (1 - self.momentum) * self.running_var + self.momentum * unbiased_var
        return out

    def backward(self, grad):
        fast = kernels.batch_norm_backward(grad, self.x_hat, self.gamma.reshape(-1), self.inv_std.reshape(-1),
                                           self.training, self.needs_input_grad[0])  # a fast path, or None
        if fast is not None:
            return fast
        grad_beta = grad.sum(axis=self.axes)
        grad_gamma = (grad * self.x_hat).sum(axis=self.axes)
        grad_x = None
        if self.needs_input_grad[0]:
            scale = self.gamma * self.inv_std
            if self.training:
                # mean and var depend on every x of the channel; with m = count, the closed form is
                # dx = gamma / std * (grad - mean(grad) - x_hat * mean(grad * x_hat)).
                channel_shape = self.gamma.shape
                grad_x = scale * (
                    grad
                    - grad_beta.reshape(channel_shape) / self.count
                    - self.x_hat * (grad_gamma.reshape(channel_shape) / self.count)
                )
            else:
                grad_x = grad * scale
        return grad_x, grad_gamma, grad_beta


def _check_batch_norm_inputs(x, gamma, beta, running_mean, running_var, training):
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: input must have shape (N, C) or (N, C, H, W), got {x.shape}")
    C = x.shape[1]
    named = {"weight (gamma)": gamma, "bias (beta)": beta, "running_mean": running_mean, "running_var": running_var}
    for name, array in named.items():
        if array is not None and array.shape != (C,):
            raise ShapeError(
                f"batch_norm: {name} has shape {array.shape}, expected ({C},) for input of shape {x.shape} "
                f"with {C} channels"
            )
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    if running_mean is not None:
        check_same_device("batch_norm", [("input", x), ("running_mean", running_mean), ("running_var", running_var)])
    if training and x.size // max(C, 1) < 2:
        raise ShapeError(
            f"batch_norm: training needs more than one value per channel to compute a variance, "
            f"got input of shape {x.shape}"
        )
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5):
    """Batch normalisation.  x: (N, C) or (N, C, H, W), gamma, beta: (C,) -> x's shape.

    running_mean, running_var: (C,) arrays (or Tensors) updated in place while
    training: running = (1 - momentum) * running + momentum * batch statistic;
    used instead of the batch statistics when training=False.
    """
    running_mean = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    running_var = running_var.data if isinstance(running_var, Tensor) else running_var
    return BatchNormOp(running_mean, running_var, training, momentum, eps)(x, gamma, beta)
