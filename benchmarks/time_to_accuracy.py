"""Wall-clock seconds to reach a test accuracy on MNIST: minicnn against PyTorch, the same recipe.

The recipe of `minicnn train`: the `cnn` model, Adam (lr 1e-3), batch 64, shuffled each epoch,
here on all 60,000 training images (`--validation 0`). After each epoch both libraries are
evaluated on the 10,000 test images; the training seconds (evaluation left out) are summed until
the test accuracy reaches the target. Both run in this process, one after the other.
    python3 -m benchmarks.time_to_accuracy --target 0.99 --epochs 5
"""

import argparse
import time

import numpy as np

import minicnn
from minicnn import models
from minicnn.data import load_mnist
from minicnn.training import Trainer


def minicnn_epochs(images, labels, test_images, test_labels, epochs, seed):
    """Yield (training seconds of the epoch, test accuracy after it)."""
    minicnn.manual_seed(seed)
    trainer = Trainer(models.cnn(), "adam", lr=1e-3)
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer.fit(images, labels, epochs=epoch + 1, initial_epoch=epoch, batch_size=64, seed=seed, verbose=0)
        seconds = time.perf_counter() - start
        yield seconds, trainer.evaluate(test_images, test_labels)["accuracy"]


def torch_epochs(images, labels, test_images, test_labels, epochs, seed):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.tensor(images[:, None].astype(np.float32) / 255), torch.tensor(labels)
    x_test, y_test = torch.tensor(test_images[:, None].astype(np.float32) / 255), torch.tensor(test_labels)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(x), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        yield seconds, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, default=5, help="the most epochs to train each library")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    minicnn.keep_freed_memory()  # as `minicnn train` does
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    for name, epochs in (("minicnn", minicnn_epochs), ("PyTorch", torch_epochs)):
        total = 0.0
        for epoch, (seconds, accuracy) in enumerate(epochs(images, labels, test_images, test_labels,
                                                           args.epochs, args.seed), start=1):
            total += seconds
            print(f"{name:8s} epoch {epoch}: {seconds:6.1f} s, test accuracy {accuracy:.4f}, {total:6.1f} s in all",
                  flush=True)
            if accuracy >= args.target:
                print(f"{name:8s} reached {args.target:.2%} after {epoch} epochs, {total:.1f} s of training", flush=True)
                break
        else:
            print(f"{name:8s} did not reach {args.target:.2%} in {args.epochs} epochs", flush=True)


if __name__ == "__main__":
    main()
