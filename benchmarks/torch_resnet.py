"""torchvision's ResNet-18 written out in plain torch, with torchvision's module names.

The reference that the tests compare minicnn.models.resnet18 with and the benchmarks time it
against: the torchvision wheel available to the project's machines does not import beside the
CPU build of torch 2.13. torch is passed in, so importing this module does not import it.
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
