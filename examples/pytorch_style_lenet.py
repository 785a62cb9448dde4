"""LeNet-5 on MNIST trained with a hand-written loop, PyTorch-style, with SGD and momentum 0.9.

This is the `lenet` model of `minicnn train`. Run:  python3 examples/pytorch_style_lenet.py
"""

import argparse

import minicnn
from minicnn import functional as F, nn, optim
from minicnn.data import DataLoader, load_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
args = parser.parse_args()


class LeNet(nn.Module):
    """(N, 1, 28, 28) -> (N, 10) logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2D(1, 6, kernel_size=5, padding=2)   # -> (N, 6, 28, 28), pooled to 14x14
        self.conv2 = nn.Conv2D(6, 16, kernel_size=5)             # -> (N, 16, 10, 10), pooled to 5x5
        self.fc1 = nn.Dense(16 * 5 * 5, 120, init="he")
        self.fc2 = nn.Dense(120, 84, init="he")
        self.fc3 = nn.Dense(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.flatten(x)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


minicnn.manual_seed(0)
minicnn.set_default_device(args.device)
images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
train_loader = DataLoader(images[: args.limit], labels[: args.limit], batch_size=64, shuffle=True, seed=0)
test_loader = DataLoader(test_images, test_labels, batch_size=1000)

model = LeNet()
optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

for epoch in range(args.epochs):
    model.train()
    total_loss, seen = 0.0, 0
    for x, y in train_loader:                  # x: (64, 1, 28, 28) float32 in [0, 1], y: (64,) int64
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        seen += len(y)

    model.eval()
    correct = 0
    with minicnn.no_grad():
        for x, y in test_loader:
            correct += int((model(x).argmax(axis=1) == y).sum().item())
    print(f"epoch {epoch + 1}: train loss {total_loss / seen:.4f}, test accuracy {correct / len(test_labels):.4f}")
