"""Plots of benchmark results (matplotlib, the optional `viz` extra): per-op time CPU against GPU,
training throughput against batch size for minicnn and PyTorch, and (image_sweep.png) the time per
image of a `cnn` step against batch size for each image size, both libraries.

A chart is drawn only when the results hold its rows: a run without the throughput sweep
(--quick, --no-sweep, --only) gets no throughput.png rather than an empty one.
"""

import json
import pathlib


def _row_label(row):
    return f"{row['group']} {row['name']} ({row['shape']})"


def plot_results(paths):
    """Write ops.png and throughput.png beside the JSON results in `paths`; return the PNG paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('plotting needs matplotlib; from the minicnn checkout: pip install -e ".[viz]"') from None
    results = {}
    for path in paths:
        payload = json.loads(pathlib.Path(path).read_text())
        results[payload["device"]] = payload
    folder = pathlib.Path(paths[0]).parent
    written = []

    sweeps = ("throughput sweep", "image-size sweep")
    kernel_rows = {device: {_row_label(row): row for row in payload["rows"] if row["group"] not in sweeps}
                   for device, payload in results.items()}
    labels = list(dict.fromkeys(label for rows in kernel_rows.values() for label in rows))  # every row, in order
    if labels:
        figure, axis = plt.subplots(figsize=(10, max(4, 0.12 * len(labels) * len(kernel_rows) + 1.5)))
        height = 0.8 / len(kernel_rows)
        for index, (device, rows) in enumerate(kernel_rows.items()):
            present = [position for position, label in enumerate(labels) if label in rows]  # GPU-only twins
            axis.barh([position + index * height for position in present],
                      [rows[labels[position]]["median_ms"] for position in present], height=height,
                      label=f"minicnn {device}")
        axis.set_yticks(range(len(labels)), labels, fontsize=5)
        axis.set_xscale("log")
        axis.set_xlabel("median time (ms, log scale)")
        axis.set_title("time per operation: " + " against ".join(kernel_rows))
        axis.legend()
        figure.tight_layout()
        written.append(folder / "ops.png")
        figure.savefig(written[-1], dpi=150)
        plt.close(figure)
    else:
        print("no operation rows in these results: ops.png not drawn")

    series = []  # (batches, images per second, style, label)
    for device, payload in results.items():
        sweep = [row for row in payload["rows"] if row["group"] == "throughput sweep"]
        for model in ("cnn", "lenet"):
            rows = [row for row in sweep if row["name"] == model]
            if not rows:
                continue
            batches = [int(row["shape"].split()[-1]) for row in rows]
            series.append((batches, [row["images_per_s"] for row in rows], dict(marker="o"),
                           f"minicnn {model} {device}"))
            if all("torch_images_per_s" in row for row in rows):
                series.append((batches, [row["torch_images_per_s"] for row in rows],
                               dict(marker="x", linestyle="--"), f"PyTorch {model} {device}"))
    written += _plot_image_sweep(plt, results, folder)
    if not series:
        print("no throughput sweep in these results (--quick, --no-sweep or --only): throughput.png not drawn")
        return written
    written.append(_plot_against_batch_size(plt, series, folder / "throughput.png", "training images per second",
                                            "training throughput (forward, backward, Adam)", legend_size=8))
    return written


def _plot_image_sweep(plt, results, folder):
    """image_sweep.png: milliseconds per image against batch size, one line per image size and library."""
    lines = []  # (batches, ms per image, style, label)
    for device, payload in results.items():
        sweep = [row for row in payload["rows"] if row["group"] == "image-size sweep"]
        for image_size in sorted({row["image_size"] for row in sweep}):
            rows = sorted((row for row in sweep if row["image_size"] == image_size), key=lambda row: row["batch"])
            batches = [row["batch"] for row in rows]
            color = f"C{sum(label.startswith('minicnn') for *_, label in lines)}"  # one colour per image size
            lines.append((batches, [row["median_ms"] / row["batch"] for row in rows],
                          dict(marker="o", color=color), f"minicnn {image_size}x{image_size} {device}"))
            if all("torch_median_ms" in row for row in rows):  # the same colour, dashed
                lines.append((batches, [row["torch_median_ms"] / row["batch"] for row in rows],
                              dict(marker="x", linestyle="--", color=color),
                              f"PyTorch {image_size}x{image_size} {device}"))
    if not lines:
        print("no image-size sweep in these results: image_sweep.png not drawn")
        return []
    return [_plot_against_batch_size(plt, lines, folder / "image_sweep.png",
                                     "ms per training image (forward, backward, Adam)",
                                     "cnn: time per image by image size", legend_size=7)]


def _plot_against_batch_size(plt, lines, path, ylabel, title, legend_size):
    """Draw `lines` ((batches, values, style, label) each) on log-log axes against batch size into `path`."""
    figure, axis = plt.subplots(figsize=(7, 5))
    for batches, values, style, label in lines:
        axis.plot(batches, values, label=label, **style)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=legend_size)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path
