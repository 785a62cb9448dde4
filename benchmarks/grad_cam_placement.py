"""Does Grad-CAM's hottest pixel land on the digit? A measurement behind README's Grad-CAM figures.

Trains `cnn` for one epoch (Adam, seed 0) on the first 20,000 MNIST training images, then for
300 test images asks where each layer's Grad-CAM peaks, with the map's cells placed at their
receptive fields' centres (minicnn's way) and stretched edge to edge (the usual way, which the
viz module falls back to for models that are not a plain chain). A hit is a peak within 2 pixels
of the digit (pixels above 51 of 255, grown by 2 steps of 4-neighbours); the last line gives the
share of pixels that are hits, i.e. what a peak placed at random would score.

    python3 -m benchmarks.grad_cam_placement
"""

import numpy as np

import minicnn
from minicnn import models
from minicnn.data import load_mnist
from minicnn.training import Trainer
from minicnn.viz import saliency

IMAGES, DIGIT_LEVEL, NEAR = 300, 51, 2


def near_the_digit(image):
    """Boolean (H, W): the digit's pixels grown by NEAR steps of 4-neighbours."""
    grown = image > DIGIT_LEVEL
    for _ in range(NEAR):
        padded = np.pad(grown, 1)
        grown = grown | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return grown


def hit_rate(model, images, layer):
    hits = []
    for image in images:
        _, cam, details = saliency.grad_cam(model, image, layer=layer, details=True)
        hits.append(near_the_digit(image)[np.unravel_index(cam.argmax(), cam.shape)])
    return float(np.mean(hits)), details


def main():
    minicnn.keep_freed_memory()
    minicnn.manual_seed(0)
    train_images, train_labels = load_mnist("train")
    test_images, _ = load_mnist("test")
    model = models.cnn()
    Trainer(model, "adam").fit(train_images[:20000], train_labels[:20000], epochs=1, verbose=0)
    images = test_images[:IMAGES]
    placed_by_fields = saliency.receptive_field_grid
    print(f"{'layer':<10} {'map':<6} {'receptive fields':>17} {'stretched':>10}")
    for layer in (None, "6 Conv2D", "4 ReLU", "3 Conv2D"):
        by_fields, details = hit_rate(model, images, layer)
        saliency.receptive_field_grid = lambda *arguments: None  # grid None: stretched edge to edge
        try:
            stretched, _ = hit_rate(model, images, layer)
        finally:
            saliency.receptive_field_grid = placed_by_fields
        shape = "x".join(map(str, details["map_shape"]))
        print(f"{details['layer']:<10} {shape:<6} {by_fields:>17.3f} {stretched:>10.3f}")
    print(f"chance (share of pixels near the digit): {np.mean([near_the_digit(i).mean() for i in images]):.3f}")


if __name__ == "__main__":
    main()
