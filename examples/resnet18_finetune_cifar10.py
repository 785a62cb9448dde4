"""Fine-tune an ImageNet ResNet-18 on CIFAR-10, written as PyTorch's transfer-learning tutorial writes it.

The ResNet-18 is torchvision's, name for name; its pretrained weights are torchvision's file
resnet18-f37072fd.pth (https://download.pytorch.org/models/resnet18-f37072fd.pth, 45 MB), read
without PyTorch. The backbone is frozen and only the new final layer, fc, trains:
Resize(256), CenterCrop(224), Normalize(ImageNet mean/std), batch 4, SGD lr 0.001 momentum 0.9.
CIFAR-10 is cifar-10-python.tar.gz, given with --data, or else the one `minicnn fetch cifar10`
downloads into $MINICNN_DATA/cifar10/ (fetched here if missing). Run:
    python3 examples/resnet18_finetune_cifar10.py --weights resnet18-f37072fd.pth [--data cifar-10-python.tar.gz]
(--epochs, --limit and --test-limit make it shorter; a whole epoch is 12,500 steps of 4 images at 224x224).
The same recipe from the command line:
    minicnn train --model resnet18 --dataset cifar10 --data cifar-10-python.tar.gz --weights resnet18-f37072fd.pth \
        --freeze-backbone --image-size 224 --batch-size 4 --optimizer sgd --lr 0.001
"""

import argparse
import sys

import minicnn as torch
import minicnn.nn as nn
import minicnn.optim as optim
from minicnn import models
from minicnn.data import (
    CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, DataLoader, Normalize, Resize, ToFloat,
    fetch_archive, load_cifar10,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default=None, help="cifar-10-python.tar.gz or its cifar-10-batches-py folder "
                                                "(default: the one in $MINICNN_DATA/cifar10/, downloaded if missing)")
parser.add_argument("--weights", default=None, help="torchvision's resnet18-*.pth (default: start from scratch)")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--test-limit", type=int, default=None, help="test on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()

torch.manual_seed(0)
torch.set_default_device(args.device)
transform = Compose([
    Resize(256),
    CenterCrop(224),
    ToFloat(),  # torchvision's ToTensor: uint8 -> float in [0, 1]
    Normalize(IMAGENET_MEAN, IMAGENET_STD),
])
try:
    archive = args.data or fetch_archive("cifar10")  # from the cache, else downloaded and checked
    images, labels = load_cifar10(archive, "train")  # uint8 (50000, 3, 32, 32): resized batch by batch
    test_images, test_labels = load_cifar10(archive, "test")
except torch.DataError as error:  # no archive and no network, a damaged archive: one line, no traceback
    sys.exit(f"resnet18_finetune_cifar10.py: {error}")
trainloader = DataLoader(images[: args.limit], labels[: args.limit], batch_size=4, shuffle=True, seed=0,
                         transform=transform)
testloader = DataLoader(test_images[: args.test_limit], test_labels[: args.test_limit], batch_size=4,
                        transform=transform)

model = models.resnet18(weights=args.weights)
for param in model.parameters():
    param.requires_grad = False
model.fc = nn.Linear(512, len(CIFAR10_CLASSES))  # a new layer's parameters require grad
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)

for epoch in range(args.epochs):
    model.train()
    running_loss = 0.0
    for i, data in enumerate(trainloader, 0):
        inputs, labels = data
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % 2000 == 1999:
            print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}")
            running_loss = 0.0

model.eval()
correct = 0
total = 0
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
print(f"Accuracy of the network on the {total} test images: {100 * correct // total} %")
