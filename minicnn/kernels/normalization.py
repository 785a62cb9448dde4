"""Batch normalisation on the convolution's channel-major layout: each channel's values in one contiguous row.

functional.normalization.BatchNormOp is the reference. On an (N, C, H, W) array
stored channel-major (cpu_layout.channel_major: the layout the convolutions hand
on), each channel's N*H*W values are one row of a (C, N*H*W) view, so every pass
here runs over long contiguous rows with a per-channel (C, 1) operand, where the
reference's (1, C, 1, 1) broadcasts over the 4-d array run in rows of W elements.
The passes are the reference's, a few fused:

    forward   mean; centred = x - mean; var = mean(centred**2); x_hat = centred / std
              (in place); out = x_hat * gamma + beta
    backward  grad_beta = sum(grad); grad_gamma = sum(grad * x_hat);
              grad_x = a*grad + b*x_hat + c per channel, the closed form's three terms

The same formulas in another order of float32 sums: tests/test_kernels.py holds them
to the reference at float32 rounding. Forward answers None for other layouts (the
reference runs); backward answers wherever forward ran, copying a gradient of another
layout into channel-major order first, so its numbers never depend on that layout.
"""

from ..backend import get_array_module
from .cpu_layout import channel_major, channel_rows, empty_like_layout, from_channel_rows


def forward(x, gamma, beta, statistics, eps):
    """x: (N, C, H, W) channel-major, gamma, beta: (C,) -> (out, x_hat, inv_std, mean, var), or None.

    statistics: None to normalise by the batch's mean and biased variance, or (mean, var), the
    running statistics of evaluation. out and x_hat are channel-major; inv_std, mean, var are (C,).
    """
    if x.ndim != 4 or not channel_major(x):
        return None
    xp = get_array_module(x)
    values = channel_rows(x)
    if statistics is None:
        mean = values.mean(axis=1)
        centred = values - mean.astype(x.dtype, copy=False)[:, None]
        var = (centred * centred).mean(axis=1)
    else:
        mean, var = statistics
        centred = values - mean.astype(x.dtype, copy=False)[:, None]
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
    centred *= inv_std[:, None]  # now x_hat
    out = centred * gamma[:, None]
    out += beta[:, None]
    return from_channel_rows(out, x.shape), from_channel_rows(centred, x.shape), inv_std, mean, var


def backward(grad, x_hat, gamma, inv_std, training, wants_x):
    """grad, x_hat: (N, C, H, W); gamma, inv_std: (C,) -> (grad_x or None, grad_gamma, grad_beta), or None.

    Runs where forward ran, on a channel-major x_hat, whatever grad's layout (another is copied into
    channel-major order first), so that the numbers do not depend on how grad came to be laid out;
    None for any other x_hat: the reference runs, as it did in forward.
    """
    if x_hat.ndim != 4 or not channel_major(x_hat):
        return None
    if not channel_major(grad):
        copy = empty_like_layout(x_hat, grad.shape, grad.dtype)
        copy[...] = grad
        grad = copy
    grad_rows, x_hat_rows = channel_rows(grad), channel_rows(x_hat)
    count = grad_rows.shape[1]
    grad_beta = grad_rows.sum(axis=1)
    grad_gamma = (grad_rows * x_hat_rows).sum(axis=1)
    if not wants_x:
        return None, grad_gamma, grad_beta
    scale = gamma * inv_std
    grad_x = grad_rows * scale[:, None]
    if training:  # dx = gamma / std * (grad - mean(grad) - x_hat * mean(grad * x_hat))
        grad_x += x_hat_rows * (-scale * grad_gamma / count)[:, None]
        grad_x += (-scale * grad_beta / count)[:, None]
    return from_channel_rows(grad_x, grad.shape), grad_gamma, grad_beta
