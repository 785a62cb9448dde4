"""Reference: PyTorch trains the `cnn` model for one epoch on MNIST (55,000 images, Adam, batch 64).

Prints the test accuracy per seed, to put minicnn's one-epoch accuracy in context.
    python3 benchmarks/torch_cnn_one_epoch.py --seeds 0,1,2
"""

import argparse

import numpy as np
import torch
from torch import nn

from minicnn.data import load_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seeds", default="0", help="comma-separated seeds")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
x = torch.tensor(images[:, None].astype(np.float32) / 255)
y = torch.tensor(labels)
x_test = torch.tensor(test_images[:, None].astype(np.float32) / 255)
y_test = torch.tensor(test_labels)

for seed in (int(text) for text in args.seeds.split(",")):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(55000, generator=torch.Generator().manual_seed(seed))
    for start in range(0, 55000, 64):
        batch = order[start : start + 64]
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"seed {seed}: test accuracy {accuracy:.4f}")
