"""Plots of benchmark results (matplotlib, the optional `viz` extra): per-op time CPU against GPU,
and training throughput against batch size for minicnn and PyTorch."""

import json
import pathlib


def plot_results(paths):
    """Write ops.png and throughput.png beside the JSON results in `paths`; return the PNG paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('plotting needs matplotlib: pip install "minicnn[viz]"') from None
    results = {json.loads(pathlib.Path(p).read_text())["device"]: json.loads(pathlib.Path(p).read_text()) for p in paths}
    folder = pathlib.Path(paths[0]).parent
    written = []

    figure, axis = plt.subplots(figsize=(10, 8))
    kernel_rows = {device: [row for row in payload["rows"] if row["group"] != "throughput sweep"]
                   for device, payload in results.items()}
    labels = [f"{row['group']} {row['name']} ({row['shape']})" for row in next(iter(kernel_rows.values()))]
    height = 0.8 / len(kernel_rows)
    for index, (device, rows) in enumerate(kernel_rows.items()):
        positions = [position + index * height for position in range(len(rows))]
        axis.barh(positions, [row["median_ms"] for row in rows], height=height, label=f"minicnn {device}")
    axis.set_yticks(range(len(labels)), labels, fontsize=5)
    axis.set_xscale("log")
    axis.set_xlabel("median time (ms, log scale)")
    axis.set_title("time per operation: " + " against ".join(kernel_rows))
    axis.legend()
    figure.tight_layout()
    written.append(folder / "ops.png")
    figure.savefig(written[-1], dpi=150)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 5))
    for device, payload in results.items():
        sweep = [row for row in payload["rows"] if row["group"] == "throughput sweep"]
        for model in ("cnn", "lenet"):
            rows = [row for row in sweep if row["name"] == model]
            if not rows:
                continue
            batches = [int(row["shape"].split()[-1]) for row in rows]
            axis.plot(batches, [row["images_per_s"] for row in rows], marker="o", label=f"minicnn {model} {device}")
            if all("torch_images_per_s" in row for row in rows):
                axis.plot(batches, [row["torch_images_per_s"] for row in rows], marker="x", linestyle="--",
                          label=f"PyTorch {model} {device}")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel("training images per second")
    axis.set_title("training throughput (forward, backward, Adam)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    written.append(folder / "throughput.png")
    figure.savefig(written[-1], dpi=150)
    plt.close(figure)
    return written
