"""torchvision's ResNet-18, and He et al.'s CIFAR ResNets as minicnn builds them, written out in plain torch
with torchvision's module names.

The references that the tests compare minicnn.models.resnet18 and minicnn.models.resnet with and the
benchmarks time them against: the torchvision wheel available to the project's machines does not import
beside the CPU build of torch 2.13. torch is passed in, so importing this module does not import it.
"""


def basic_block(torch, inplanes, planes, stride):
    """torchvision's BasicBlock: conv1, bn1, relu, conv2, bn2 and, where the shape changes, downsample."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    return BasicBlock()


def resnet18(torch, num_classes=1000):
    """torchvision.models.resnet18(num_classes=num_classes), untrained: (N, 3, H, W) -> (N, num_classes)."""
    tnn = torch.nn

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU(inplace=True)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for stage, planes in enumerate((64, 128, 256, 512)):
                stride = 1 if stage == 0 else 2
                setattr(self, f"layer{stage + 1}", tnn.Sequential(basic_block(torch, inplanes, planes, stride),
                                                                  basic_block(torch, planes, planes, 1)))
                inplanes = planes
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def cifar_resnet(torch, depth=20, num_classes=10):
    """minicnn.models.resnet(depth, num_classes), untrained, name for name: (N, 3, H, W) -> (N, num_classes).

    He et al.'s CIFAR ResNet (depth 6n+2): conv1 3x3 stride 1 with 16 channels, bn1, relu (no max pool),
    three stages of n BasicBlocks with 16, 32 and 64 channels, the first block of stages 2 and 3 halving
    the resolution with a 1x1 projection shortcut (`downsample`, option B, as minicnn builds it), a
    global average pool and fc = Linear(64, num_classes).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"cifar_resnet: depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth!r}")
    blocks = (depth - 2) // 6
    tnn = torch.nn

    class ResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            self.relu = tnn.ReLU(inplace=True)
            inplanes = 16
            for stage, planes in enumerate((16, 32, 64)):
                stride = 1 if stage == 0 else 2
                layer = [basic_block(torch, inplanes, planes, stride)]
                layer += [basic_block(torch, planes, planes, 1) for _ in range(blocks - 1)]
                setattr(self, f"layer{stage + 1}", tnn.Sequential(*layer))
                inplanes = planes
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(64, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()
