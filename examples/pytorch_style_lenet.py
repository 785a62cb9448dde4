"""LeNet-5 on MNIST trained with a hand-written loop, written as the PyTorch tutorial writes it.

Only the import lines differ from PyTorch's "Training a classifier" tutorial (with one-channel
28x28 digits: 28 -> conv 5x5 -> 24 -> pool -> 12 -> conv 5x5 -> 8 -> pool -> 4, so 16 * 4 * 4 features).
Run:  python3 examples/pytorch_style_lenet.py   (--epochs and --limit make it shorter)
"""

import argparse

import minicnn as torch
import minicnn.functional as F
import minicnn.nn as nn
import minicnn.optim as optim
from minicnn.data import DataLoader, load_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 4 * 4)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


torch.manual_seed(0)
torch.set_default_device(args.device)
images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
trainloader = DataLoader(images[: args.limit], labels[: args.limit], batch_size=4, shuffle=True, seed=0)
testloader = DataLoader(test_images, test_labels, batch_size=1000)

net = Net()
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

for epoch in range(args.epochs):
    running_loss = 0.0
    for i, data in enumerate(trainloader, 0):
        inputs, labels = data
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % 2000 == 1999:
            print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}")
            running_loss = 0.0

correct = 0
total = 0
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
print(f"Accuracy of the network on the {total} test images: {100 * correct // total} %")
