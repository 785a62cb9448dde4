"""The models of the examples and the command line: `cnn` (the Keras tutorial CNN), `lenet`, `fashion_cnn` (the
Fashion-MNIST recipe's), the Keras colour tutorials' `cifar_cnn` and `cnn64`, and the residual networks
`resnet18` (torchvision's ResNet-18, name for name) and `resnet(depth)` (He et al.'s CIFAR ResNets).
"""

from . import functional as F
from . import nn
from .errors import ShapeError
from .nn.registry import shorten
from .nn.sequential import pools_before_relu


def cnn(in_channels=1, image_size=28, num_classes=10):
    """Conv 32@3x3, pool, Conv 64@3x3, pool, Conv 64@3x3, Dense 64, Dense num_classes; ReLU after each.

    (N, in_channels, image_size, image_size) -> (N, num_classes) logits. With 28x28
    MNIST images the feature maps are 26 -> 13 -> 11 -> 5 -> 3, so Flatten gives 64*3*3 = 576;
    with 32x32 CIFAR-10 images 30 -> 15 -> 13 -> 6 -> 4, i.e. 1024.
    """
    side = ((image_size - 2) // 2 - 2) // 2 - 2
    return nn.Sequential(
        nn.Conv2D(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Dense(64 * side * side, 64), nn.ReLU(),
        nn.Dense(64, num_classes),
        input_shape=(in_channels, image_size, image_size),
    )


def lenet(in_channels=1, image_size=28, num_classes=10):
    """LeNet-5 with ReLU and max pooling: Conv 6@5x5 (padding 2), pool, Conv 16@5x5, pool, Dense 120, 84, num_classes.

    (N, in_channels, 28, 28) -> (N, num_classes): 28 -> 14 -> 10 -> 5, so Flatten gives 16*5*5 = 400.
    """
    side = ((image_size + 4 - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2D(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(6, 16, 5), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(16 * side * side, 120), nn.ReLU(),
        nn.Dense(120, 84), nn.ReLU(),
        nn.Dense(84, num_classes),
        input_shape=(in_channels, image_size, image_size),
    )


def fashion_cnn(in_channels=1, image_size=28, num_classes=10):
    """Two padded 3x3 convolutions with max pooling and batch norm, Dense 128 with dropout: for Fashion-MNIST.

    Conv 32@3x3 (padding 1), ReLU, pool, batch norm; Conv 64@3x3 (padding 1), ReLU, pool, batch norm;
    Flatten, Dense 128, ReLU, Dropout(0.3), Dense num_classes. (N, in_channels, 28, 28) -> (N, num_classes):
    28 -> 14 -> 7, so Flatten gives 64*7*7 = 3136. Wider than cnn, which stays near 91% test accuracy
    on Fashion-MNIST; this model passes 92.5% with the README's recipe (docs/cli.md, "Results").
    Batch norm comes after the pool, on a quarter of the values.
    """
    side = image_size // 2 // 2
    return nn.Sequential(
        nn.Conv2D(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.BatchNorm2D(32),
        nn.Conv2D(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.BatchNorm2D(64),
        nn.Flatten(),
        nn.Dense(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Dense(128, num_classes),
        input_shape=(in_channels, image_size, image_size),
    )


def cifar_cnn(num_classes=10):
    """The Keras CIFAR-10 tutorial's CNN on 3x32x32 images: cnn(in_channels=3, image_size=32).

    Conv 32@3x3, pool, Conv 64@3x3, pool, Conv 64@3x3, Flatten (64*4*4 = 1024), Dense 64, Dense num_classes.
    """
    return cnn(in_channels=3, image_size=32, num_classes=num_classes)


def cnn64(num_classes=10):
    """The Keras tutorial's CNN on 3x64x64 images: Conv 32@3x3, ReLU, pool, Flatten, Dense 64, ReLU, Dense num_classes.

    (N, 3, 64, 64) -> (N, num_classes): 64 -> 62 -> 31, so Flatten gives 32*31*31 = 30752.
    """
    return nn.Sequential(
        nn.Conv2D(3, 32, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(32 * 31 * 31, 64), nn.ReLU(),
        nn.Dense(64, num_classes),
        input_shape=(3, 64, 64),
    )


MAX_BLOCKS_PER_STAGE = 256  # He et al.'s deepest CIFAR net (1202 layers) has 200


@nn.register
class ResNet(nn.Module):
    """A residual network of BasicBlocks, with torchvision's attribute names (so its state-dict keys).

    (N, in_channels, H, W) -> (N, num_classes) logits:
        conv1 -> bn1 -> relu -> maxpool -> layer1 -> ... -> layerK -> avgpool -> flatten -> fc
    conv1: 7x7, stride 2, padding 3 and maxpool: 3x3, stride 2, padding 1 (ImageNet's stem); with
    small_input=True a 3x3 stride-1 conv1 and no max pool, for 32x32 images. Stage k (`layerk`)
    holds blocks_per_stage[k] BasicBlocks of widths[k] channels; every stage after the first
    halves the resolution in its first block, whose `downsample` projects the shortcut. conv1
    has widths[0] channels; avgpool averages each channel globally; fc is a Linear(widths[-1],
    num_classes) in PyTorch's (out, in) layout.

    A child can be replaced by assignment, as in PyTorch: `model.fc = nn.Linear(512, 10)`.
    config() records every child that differs from the one the constructor built, so a
    checkpoint rebuilds the replaced head too.
    """

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=1000, in_channels=3,
                 small_input=False):
        super().__init__()
        if not (isinstance(blocks_per_stage, (list, tuple)) and isinstance(widths, (list, tuple))
                and 1 <= len(blocks_per_stage) == len(widths) <= 8):
            raise ValueError(f"ResNet: blocks_per_stage and widths must be lists of the same length (1 to 8 stages), "
                             f"got {blocks_per_stage!r} and {widths!r}")
        for count in blocks_per_stage:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BLOCKS_PER_STAGE:
                raise ValueError(f"ResNet: each stage holds 1 to {MAX_BLOCKS_PER_STAGE} blocks, got {blocks_per_stage!r}")
        if small_input not in (True, False):
            raise ValueError(f"ResNet: small_input must be True or False, got {small_input!r}")

        if small_input:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False, init="he")
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False, init="he")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = None if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if stage == 0 else 2
            blocks = [nn.BasicBlock(channels, width, stride)] + [nn.BasicBlock(width, width) for _ in range(count - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        # The layers have checked the sizes; keep them as plain ints (JSON-able for config()).
        self.blocks_per_stage = tuple(blocks_per_stage)
        self.widths = tuple(stage[0].out_channels for stage in self.stages())
        self.num_classes, self.in_channels, self.small_input = self.fc.out_features, self.conv1.in_channels, bool(small_input)
        # What the constructor built, so that config() can tell which children were replaced since.
        self.built_children = {name: nn.describe(child) for name, child in self.named_children()}

    def stages(self):
        """layer1, layer2, ... as they are now (a replaced stage included)."""
        return [getattr(self, f"layer{stage + 1}") for stage in range(len(self.blocks_per_stage))]

    def config(self):
        """The constructor arguments, and under 'replaced' the description of every child assigned since.

        Raises NotImplementedError when a replaced child is not a registered type (its weights can still be saved).
        """
        config = {"blocks_per_stage": list(self.blocks_per_stage), "widths": list(self.widths),
                  "num_classes": self.num_classes, "in_channels": self.in_channels, "small_input": self.small_input}
        replaced = {}
        for name, child in self.named_children():
            if name not in self.built_children:
                raise NotImplementedError(f"ResNet.config: '{name}' is a child the constructor does not make, so a "
                                          "checkpoint cannot rebuild it; its weights can still be saved")
            description = nn.describe(child)
            if self.built_children.get(name) != description:
                replaced[name] = description
        if replaced:
            config["replaced"] = replaced
        return config

    @classmethod
    def from_config(cls, config):
        """Build the ResNet that config() described: the constructor's, then each replaced child set in place."""
        arguments = dict(config)
        replaced = arguments.pop("replaced", {})
        if not isinstance(replaced, dict):
            raise ValueError(f"ResNet: 'replaced' must map child names to descriptions, got {type(replaced).__name__}")
        model = cls(**arguments)
        for name, description in replaced.items():
            if name not in model.built_children:
                raise ValueError(f"ResNet: cannot replace {shorten(name)}: not one of its children "
                                 f"({', '.join(model.built_children)})")
            setattr(model, name, nn.build(description))
        return model

    def forward(self, x):
        """x: (N, in_channels, H, W) -> (N, num_classes)."""
        self.check_channels(x)
        x = self.bn1(self.conv1(x))
        if self.maxpool is None:
            x = self.relu(x)
        elif pools_before_relu([self.relu, self.maxpool]):
            x = self.relu(self.maxpool(x))  # the same numbers as the written order, a quarter of ReLU's work
        else:
            x = self.maxpool(self.relu(x))
        for stage in self.stages():
            x = stage(x)
        x = F.flatten(self.avgpool(x))
        return self.fc(x)

    def check_channels(self, x):
        """A clear error for images with the wrong number of channels, with the usual fix for grey images."""
        expected = getattr(self.conv1, "in_channels", None)
        if expected is None or x.ndim != 4 or x.shape[1] == expected:
            return
        hint = ""
        if x.shape[1] == 1 and expected == 3:
            hint = ("; these are grey images: repeat the channel three times (the transform "
                    "minicnn.data.RepeatChannels(3), or numpy.repeat(images, 3, axis=1)), or build the model with in_channels=1 (without pretrained "
                    "weights for conv1)")
        raise ShapeError(f"ResNet conv1: expected input of shape (N, {expected}, H, W), got {x.shape}{hint}")

    def extra_repr(self):
        return (f"blocks_per_stage={list(self.blocks_per_stage)}, widths={list(self.widths)}, "
                f"num_classes={self.num_classes}, small_input={self.small_input}")


def resnet18(num_classes=1000, small_input=False, weights=None, in_channels=3):
    """torchvision's ResNet-18, block for block and name for name (`conv1.weight`, `layer2.0.downsample.0.weight`,
    `bn1.running_mean`, `fc.weight`, ...): four stages of two BasicBlocks, 64, 128, 256 and 512 channels.

    (N, in_channels, H, W) -> (N, num_classes); 224x224 images end as 7x7 maps before the average pool.
    small_input=True: the CIFAR variant (3x3 stride-1 stem, no max pool) for 32x32 images.
    weights: the path of a PyTorch state dict (torchvision's resnet18-*.pth, or torch.save(model.state_dict()))
    read without torch and without pickle by minicnn.interop.load_torch_state_dict; its fc must have
    num_classes outputs (1000 for ImageNet's weights: load them, then replace the head with model.fc = ...).
    """
    model = ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, small_input)
    if weights is not None:
        from .interop import load_torch_state_dict  # interop sits at this level, and reads torch's files

        load_torch_state_dict(model, weights)
    return model


def resnet(depth=20, num_classes=10, in_channels=3):
    """He et al.'s CIFAR-10 ResNets (section 4.2): depth 6n+2 (8, 20, 32, 44, 56, 110), for 32x32 images.

    A 3x3 conv of 16 channels, then three stages of n BasicBlocks with 16, 32 and 64 channels
    (32x32, 16x16 and 8x8 maps), global average pooling and fc. The shortcuts that change shape
    are 1x1 projections (the paper's option B; its CIFAR nets used zero-padded identities, option A,
    which has no parameters): resnet(20) has 272,474 parameters, the paper's 0.27M.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"resnet: depth must be 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6
    if n > MAX_BLOCKS_PER_STAGE:
        raise ValueError(f"resnet: depth {depth} is too deep (at most {6 * MAX_BLOCKS_PER_STAGE + 2})")
    return ResNet((n, n, n), (16, 32, 64), num_classes, in_channels, small_input=True)


MODELS = {"cnn": cnn, "lenet": lenet, "fashion_cnn": fashion_cnn, "cifar_cnn": cifar_cnn, "cnn64": cnn64,
          "resnet18": resnet18, "resnet": resnet}


def build(name, **kwargs):
    """The model called `name` (one of MODELS), built with kwargs: in_channels, image_size and num_classes for
    'cnn', 'lenet' and 'fashion_cnn'; num_classes for 'cifar_cnn' and 'cnn64'; num_classes, small_input, weights and
    in_channels for 'resnet18'; depth, num_classes and in_channels for 'resnet'."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
