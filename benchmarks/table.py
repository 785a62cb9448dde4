"""Print a results file as a Markdown table (the README's benchmark table).

    python -m benchmarks.table benchmarks/results/cpu-2026-11-21.json [--batch 64]
"""

import argparse
import json
import pathlib

from .common import UNSTEADY_MARK, describe_load, is_unsteady, unsteady_footnote


def markdown(payload, batch=None):
    """The rows of a results file (of batch `batch`, or all) as a Markdown table, under a line saying when,
    on what and under which load they were measured; rows timed on a busy machine are marked, with a footnote."""
    lines = [_header(payload), "",
             "| operation | layer | shape | minicnn ms | rate | PyTorch ms | PyTorch / minicnn |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    unsteady = 0
    for row in payload["rows"]:
        if batch is not None and not (row["shape"].startswith(f"{batch}x") or row["shape"] == f"batch {batch}"):
            continue
        rate = (f"{row['gflops_per_s']:.1f} GFLOP/s" if "gflops_per_s" in row
                else f"{row['gb_per_s']:.2f} GB/s" if "gb_per_s" in row else f"{row['images_per_s']:.0f} img/s")
        if "share_of_matmul_rate" in row:
            rate += f" ({row['share_of_matmul_rate']:.2f} of BLAS)"
        mark = f" {UNSTEADY_MARK}" if is_unsteady(row) else ""
        unsteady += bool(mark)
        torch = (f"{row['torch_median_ms']:.2f} | {row['torch_over_minicnn']:.2f}{mark}" if "torch_median_ms" in row
                 else f"- | -{mark}")
        lines.append(f"| {row['group']} | {row['name']} | {row['shape']} | {row['median_ms']:.2f} | {rate} | {torch} |")
    footnote = unsteady_footnote(unsteady)
    if not any("round_medians_ms" in row for row in payload["rows"]):
        footnote = "(this file predates the rounds' medians: which rows were timed on a busy machine is unknown)"
    return "\n".join(lines + (["", footnote] if footnote else []))


def _header(payload):
    """'cpu, 2026-11-30, Intel(R) Xeon(R) Processor, load average 0.41, 0.52, 0.60 (1, 5, 15 min) at the start'."""
    machine = payload.get("machine", {})
    parts = [payload.get("device", "?"), payload.get("date", "?"), machine.get("gpu") or machine.get("cpu_model")]
    if machine.get("avx512") is not None:
        parts.append("AVX-512" if machine["avx512"] else "no AVX-512")
    if machine.get("blas_kernels"):  # absent from files written before it was recorded
        parts.append("BLAS kernels: " + ", ".join(machine["blas_kernels"].values()))
    load = payload.get("load_average") or {}  # absent from files written before it was recorded
    for moment in ("start", "end"):
        if load.get(moment):
            parts.append(f"{describe_load(load[moment])} at the {moment}")
    if not load:
        parts.append("load average not recorded")
    return "Measured: " + "; ".join(str(part) for part in parts if part)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--batch", type=int, default=None, help="only the rows of this batch size")
    args = parser.parse_args()
    print(markdown(json.loads(pathlib.Path(args.results).read_text()), args.batch))


if __name__ == "__main__":
    main()
