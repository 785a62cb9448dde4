"""Blocks composed in Python: a Module whose forward() calls its sub-modules in any order, here
the residual BasicBlock of ResNet-18 and the CIFAR ResNets.

Sub-modules are plain attributes, so their parameters are named by the attribute path
(`conv1.weight`, `downsample.0.weight`, `downsample.1.running_mean`), which are the names
torchvision's BasicBlock gives them.
"""

from .. import functional as F
from .layers import BatchNorm2d, Conv2d, ReLU
from .module import Module
from .registry import register
from .sequential import Sequential


@register
class BasicBlock(Module):
    """Two 3x3 convolutions with batch norm and a shortcut:  relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    conv1 carries the stride. The shortcut is x itself when the shape is kept; where it
    changes (stride > 1 or other channels) it is `downsample`, a 1x1 convolution with the
    same stride followed by batch norm (He et al.'s projection shortcut, option B, as in
    torchvision). The convolutions have no bias: the batch norm after each adds its own.
    """

    def __init__(self, in_channels, out_channels, stride=1):
        if isinstance(stride, (tuple, list)):
            raise ValueError(f"BasicBlock: stride must be one integer, got {stride!r}")
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, init="he")
        self.bn1 = BatchNorm2d(out_channels)
        self.relu = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False, init="he")
        self.bn2 = BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, init="he"), BatchNorm2d(out_channels))
        # conv1 has checked the arguments (positive integers within bounds).
        self.in_channels, self.out_channels, self.stride = self.conv1.in_channels, self.conv1.out_channels, self.conv1.stride[0]

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "stride": self.stride}

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # The residual connection: the gradient reaches x both through the convolutions and directly.
        return F.relu(out + shortcut)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
