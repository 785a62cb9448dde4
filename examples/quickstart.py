"""Build a small CNN, take one training step, and check a gradient (the README's example)."""

import numpy as np

import minicnn
from minicnn import functional as F, nn, optim

minicnn.manual_seed(0)
rng = np.random.default_rng(0)
model = nn.Sequential(
    nn.Conv2D(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
    nn.Flatten(), nn.Dense(8 * 14 * 14, 10),
)
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
images = minicnn.tensor(rng.random((32, 1, 28, 28), dtype=np.float32))  # (N, C, H, W)
labels = minicnn.tensor(rng.integers(0, 10, size=32))                     # (N,) int64

loss = F.cross_entropy(model(images), labels)
optimizer.zero_grad()
loss.backward()
optimizer.step()
print(f"loss: {loss.item():.4f}")

x = minicnn.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)  # float64
w = minicnn.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
print("gradcheck max errors:", minicnn.gradcheck(lambda x, w: F.conv2d(x, w, stride=2, padding=1), x, w))
