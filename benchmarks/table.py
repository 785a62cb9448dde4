"""Print a results file as a Markdown table (the README's benchmark table).

    python -m benchmarks.table benchmarks/results/cpu-2026-11-21.json [--batch 64]
"""

import argparse
import json
import pathlib


def markdown(payload, batch=None):
    lines = ["| operation | layer | shape | minicnn ms | rate | PyTorch ms | PyTorch / minicnn |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in payload["rows"]:
        if batch is not None and not (row["shape"].startswith(f"{batch}x") or row["shape"] == f"batch {batch}"):
            continue
        rate = (f"{row['gflops_per_s']:.1f} GFLOP/s" if "gflops_per_s" in row
                else f"{row['gb_per_s']:.2f} GB/s" if "gb_per_s" in row else f"{row['images_per_s']:.0f} img/s")
        if "share_of_matmul_rate" in row:
            rate += f" ({row['share_of_matmul_rate']:.2f} of BLAS)"
        torch = (f"{row['torch_median_ms']:.2f} | {row['torch_over_minicnn']:.2f}" if "torch_median_ms" in row
                 else "- | -")
        lines.append(f"| {row['group']} | {row['name']} | {row['shape']} | {row['median_ms']:.2f} | {rate} | {torch} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--batch", type=int, default=None, help="only the rows of this batch size")
    args = parser.parse_args()
    print(markdown(json.loads(pathlib.Path(args.results).read_text()), args.batch))


if __name__ == "__main__":
    main()
