"""How far minicnn.data.Resize is from torchvision's resizes: a measurement behind README's transform notes.

torchvision is not importable beside the CPU build of torch 2.13, so its two paths are measured
through what they run: torch.nn.functional.interpolate(mode="bilinear", antialias=True/False) for
tensors, and PIL's Image.resize(BILINEAR) for PIL images (the tutorials' path: Resize on a PIL image).
Random images, seed 0; float images in [0, 1], differences in the same units (1/255 = 0.0039);
uint8 differences in grey levels.

    python3 -m benchmarks.resize_difference [--out results.json]
"""

import argparse
import json

import numpy as np

from minicnn.data import Resize

CASES = [  # (name, input (H, W), output (H, W))
    ("CIFAR 32 -> 256 (tutorial, enlarging)", (32, 32), (256, 256)),
    ("photo 375x500 -> 256x341 (shrinking)", (375, 500), (256, 341)),
    ("64 -> 28 (shrinking by 2.3)", (64, 64), (28, 28)),
]


def measure():
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for name, (H, W), size in CASES:
        images = rng.random((2, 3, H, W)).astype(np.float32)
        tensor = torch.from_numpy(images)
        row = {"case": name}
        for ours_antialias in (True, False):
            ours = Resize(size, antialias=ours_antialias)(images)
            for torch_antialias in (True, False):
                reference = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                                                            antialias=torch_antialias).numpy()
                key = f"ours_aa={ours_antialias}_vs_torch_aa={torch_antialias}_max_abs"
                row[key] = float(np.abs(ours - reference).max())
        pixels = rng.integers(0, 256, size=(1, 3, H, W), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(pixels[0].transpose(1, 2, 0)).resize(size[::-1], Image.BILINEAR))
        difference = np.abs(Resize(size)(pixels)[0].astype(int) - pil.transpose(2, 0, 1))
        row["uint8_vs_pil_max_levels"] = int(difference.max())
        row["uint8_vs_pil_share_differing"] = float((difference > 0).mean())
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = measure()
    print(f"{'case':40} {'aa vs torch aa':>15} {'aa vs torch':>12} {'plain vs torch':>15} {'uint8 vs PIL':>13}")
    for row in rows:
        print(f"{row['case']:40} {row['ours_aa=True_vs_torch_aa=True_max_abs']:15.2e} "
              f"{row['ours_aa=True_vs_torch_aa=False_max_abs']:12.3f} "
              f"{row['ours_aa=False_vs_torch_aa=False_max_abs']:15.2e} "
              f"{row['uint8_vs_pil_max_levels']:>4} levels ({100 * row['uint8_vs_pil_share_differing']:.1f}%)")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
