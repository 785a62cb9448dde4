"""How well `minicnn.predict` reads MNIST digits saved as picture files in four forms.

Saves the first N MNIST test images (Fashion-MNIST's for a checkpoint trained on Fashion-MNIST) as
PNG files in a temporary folder, in four forms:
    stored    the 28x28 grey image as MNIST stores it (light digit on black)
    inverted  dark digit on a white background (ink on paper)
    rgb112    scaled up to 112x112 (bicubic) and saved as RGB
    shifted   pasted at a random place in a black 60x60 canvas (off-centre, smaller in the frame)
then runs minicnn.predict over each form's files and prints the accuracy per form, beside the
model's accuracy on the raw arrays of the same images.

    python3 benchmarks/predict_forms.py /work/shared_ckpt/cnn5.npz --count 1000 [--out results.json]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import minicnn
from minicnn.checkpoint import load_checkpoint
from minicnn.data import load_fashion_mnist, load_mnist
from minicnn.pictures import load_model
from minicnn.training import Trainer

CANVAS = 60  # the `shifted` form's canvas side


def stored(image, rng):
    return image


def inverted(image, rng):
    return 255 - image


def rgb112(image, rng):
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((112, 112), Image.Resampling.BICUBIC).convert("RGB"))


def shifted(image, rng):
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    top, left = rng.integers(0, CANVAS - image.shape[0] + 1, size=2)
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


FORMS = {"stored": stored, "inverted": inverted, "rgb112": rgb112, "shifted": shifted}


def write_forms(images, folder, seed=0):
    """Save each image in every form as folder/FORM/INDEX.png; returns {form: [paths]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for name, make in FORMS.items():
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        written[name] = []
        for index, image in enumerate(images):
            path = Path(folder) / name / f"{index:05d}.png"
            Image.fromarray(make(image, rng)).save(path)
            written[name].append(path)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a model trained on MNIST")
    parser.add_argument("--count", type=int, default=1000, help="how many test images per form (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the `shifted` offsets")
    parser.add_argument("--out", type=Path, default=None, help="also write the accuracies as JSON here")
    args = parser.parse_args()

    dataset = load_model(args.checkpoint)[1]
    images, labels = (load_fashion_mnist if dataset == "fashion-mnist" else load_mnist)("test")
    images, labels = images[:args.count], labels[:args.count]
    model = load_checkpoint(args.checkpoint).model
    raw = float((Trainer(model).predict(images).argmax(axis=1) == labels).mean())
    results = {"checkpoint": str(args.checkpoint), "dataset": dataset, "count": len(labels), "raw_arrays": raw, "forms": {}}
    print(f"{args.checkpoint}: {len(labels)} {dataset} test images per form")
    print(f"{'form':<10} {'accuracy':>9} {'seconds':>8}")
    print(f"{'raw':<10} {raw:>9.2%} {'':>8}")
    with tempfile.TemporaryDirectory() as folder:
        written = write_forms(images, folder, args.seed)
        for name, paths in written.items():
            start = time.perf_counter()
            predictions = minicnn.predict(args.checkpoint, paths, top=1)
            seconds = time.perf_counter() - start
            guessed = np.array([result["predictions"][0]["index"] for result in predictions])
            accuracy = float((guessed == labels).mean())
            results["forms"][name] = accuracy
            print(f"{name:<10} {accuracy:>9.2%} {seconds:>8.1f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
