"""Pictures of a model and its training, written as PNG files.

    save_feature_maps(model, image, "out/")     # one grid per Conv2D layer: what it sees in the image
    save_filters(model, "out/")                 # one grid per Conv2D layer: its learned kernels
    save_saliency(model, image, "out/saliency.png")
    save_health(monitor.history, "out/health.png")
    save_training_curves(history, "out/training_curves.png")
    save_confusion_matrix(confusion, "out/confusion_matrix.png", class_names)

The numbers behind the pictures come from functions that need only NumPy
(`feature_maps`, `image_grid`, and minicnn.viz.saliency), so they can be tested
and reused without drawing. matplotlib is imported only inside the functions
that draw, and only its object-oriented Figure is used (never pyplot), so saving
a picture needs no display and changes no global matplotlib setting. Install it
from a checkout with `pip install -e ".[viz]"`.
"""

import math
from pathlib import Path

import numpy as np

from .. import backend
from ..nn import Conv2D
from ..tensor import no_grad
from .health import ACTIVATION_STATS, GRADIENT_STATS
from .saliency import grad_cam, image_batch, named_layers, saliency_map

DPI = 100  # a figure of w x h inches is saved as (100 w) x (100 h) pixels


def _figure(width, height, layout=None):
    """A matplotlib Figure of width x height inches, without pyplot (no window, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            'minicnn.viz needs matplotlib to draw pictures; install it from the minicnn checkout with: '
            'pip install -e ".[viz]"'
        ) from None
    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def require_matplotlib():
    """Raise ImportError (saying `pip install -e ".[viz]"`) unless matplotlib can be imported."""
    _figure(1, 1)


def _save(figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def _file_name(layer_name):
    """'0 Conv2D' -> '0_Conv2D', safe in a file name."""
    return "".join(c if c.isalnum() else "_" for c in layer_name)


# ----- grids of small images ----------------------------------------------------------------------------

def image_grid(arrays, columns=None, padding=1, normalize=True):
    """Tile equally shaped 2-d arrays into one 2-d array, row by row.

    arrays: a sequence of (h, w) arrays, or one array (n, h, w).
    columns: tiles per row (default: ceil(sqrt(n)), a square-ish grid).
    padding: gap in pixels between tiles; gaps (and unused tiles of the last row)
    are NaN, which matplotlib's imshow leaves blank.
    normalize: scale each tile to [0, 1] by its own minimum and maximum (a constant
    tile becomes 0), so that every tile uses the full colour range.
    Returns float64 (rows * (h + padding) - padding, columns * (w + padding) - padding).
    """
    tiles = [np.asarray(backend.to_numpy(a) if backend.is_cupy_array(a) else a, dtype=np.float64) for a in arrays]
    if not tiles or any(tile.ndim != 2 or tile.shape != tiles[0].shape for tile in tiles):
        raise ValueError(f"image_grid: expected a non-empty sequence of equally shaped 2-d arrays, got shapes "
                         f"{[tile.shape for tile in tiles]}")
    count, (height, width) = len(tiles), tiles[0].shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + padding) - padding, columns * (width + padding) - padding), np.nan)
    for index, tile in enumerate(tiles):
        if normalize:
            low, high = tile.min(), tile.max()
            tile = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        grid[top:top + height, left:left + width] = tile
    return grid


def _grid_figure(grid, title, tile_columns, cmap, gap_colour, colorbar=False, **imshow_options):
    """A figure showing one grid, about 0.9 inch per tile across, with a title (and a colour bar).

    The gaps (NaN) are drawn in gap_colour, a colour the map itself never uses, so that
    a tile whose edge is white or black still shows where it ends.
    """
    from matplotlib import colormaps

    image_width = min(12.0, max(4.0, 0.9 * tile_columns))
    bar_width = 0.9 if colorbar else 0.0
    figure = _figure(image_width + bar_width, image_width * grid.shape[0] / grid.shape[1] + 0.7,
                     layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(grid, interpolation="nearest", cmap=colormaps[cmap].with_extremes(bad=gap_colour),
                        **imshow_options)
    axes.set_axis_off()
    if colorbar:
        figure.colorbar(shown, ax=axes, fraction=0.9 / (image_width + bar_width), pad=0.02)
    figure.suptitle(title, fontsize=10)
    return figure


# ----- feature maps and filters ---------------------------------------------------------------------------

def _enlarged(tiles, at_least=24):
    """Tiles (n, h, w) with each pixel repeated so that a tile is at least `at_least` pixels high,
    which keeps the grid's one-pixel gaps thin beside a 3x3 map."""
    factor = max(1, -(-at_least // tiles.shape[1]))
    return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def _conv_layers(model):
    return [(name, module) for name, module in named_layers(model) if isinstance(module, Conv2D)]


def feature_maps(model, image):
    """The output of every Conv2D layer for one image, in eval mode (the model's mode comes back after).

    image: (H, W), (C, H, W) or (1, C, H, W), uint8 or float (see saliency.image_batch).
    Returns [(layer name, float array (channels, OH, OW))], one per Conv2D layer in
    forward order; the maps are the convolution's output, before any activation.
    """
    layers = _conv_layers(model)
    outputs = {}

    def keep_output(module, inputs, output):
        outputs[id(module)] = output.data

    handles = [module.register_forward_hook(keep_output) for _, module in layers]
    try:
        with model.evaluating(), no_grad():
            model(image_batch(model, image))
    finally:
        for handle in handles:
            handle.remove()
    return [(name, backend.to_numpy(outputs[id(module)][0])) for name, module in layers if id(module) in outputs]


def save_feature_maps(model, image, folder, columns=8):
    """One PNG per Conv2D layer, folder/feature_maps_<layer>.png: a grid of its channels for `image`.

    Each map is scaled to its own range (dark: low, bright: high). Returns the paths.
    """
    paths = []
    for name, maps in feature_maps(model, image):
        grid = image_grid(_enlarged(maps), columns=min(columns, len(maps)))
        title = (f"layer {name}: {maps.shape[0]} feature maps of {maps.shape[1]}x{maps.shape[2]} "
                 "(output before ReLU, each map scaled to its own range)")
        figure = _grid_figure(grid, title, min(columns, len(maps)), cmap="gray", gap_colour="#b0c4de")
        paths.append(_save(figure, Path(folder) / f"feature_maps_{_file_name(name)}.png"))
    return paths


def save_filters(model, folder, columns=8):
    """One PNG per Conv2D layer, folder/filters_<layer>.png: a grid of its weight kernels (KH, KW).

    A layer with several input channels has a kernel per input channel in each filter;
    the picture shows their mean over the input channels (the title says so). Colours
    share one scale per layer, symmetric about 0: blue negative, red positive.
    Returns the paths.
    """
    paths = []
    for name, module in _conv_layers(model):
        weight = backend.to_numpy(module.weight.data).astype(np.float64)  # (F, C, KH, KW)
        if weight.shape[1] == 1:
            kernels, what = weight[:, 0], "one input channel"
        else:
            kernels, what = weight.mean(axis=1), f"mean over the {weight.shape[1]} input channels"
        limit = float(np.abs(kernels).max()) or 1.0
        grid = image_grid(_enlarged(kernels), columns=min(columns, len(kernels)), normalize=False)
        title = f"layer {name}: {weight.shape[0]} filters {weight.shape[2]}x{weight.shape[3]} ({what})"
        figure = _grid_figure(grid, title, min(columns, len(kernels)), cmap="RdBu_r", gap_colour="#8c8c8c",
                              colorbar=True, vmin=-limit, vmax=limit)
        paths.append(_save(figure, Path(folder) / f"filters_{_file_name(name)}.png"))
    return paths


# ----- saliency ------------------------------------------------------------------------------------------------

def _displayable(batch):
    """(1, C, H, W) Tensor -> (H, W) grey or (H, W, 3) colour array in [0, 1], and the colour map."""
    image = backend.to_numpy(batch.data[0]).astype(np.float64)
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    if image.shape[0] == 3:
        return image.transpose(1, 2, 0), None
    return image.mean(axis=0), "gray"


def save_saliency(model, image, path, label=None, class_names=None, layer=None):
    """Write the image beside its saliency map and its Grad-CAM map, each over the image.

    layer: the layer Grad-CAM explains (see saliency.grad_cam; default the last
    convolution after its ReLU). The Grad-CAM panel's title names the layer and the
    size of its map: the map is that coarse (3x3 for cnn's default), each cell drawn at
    the centre of the pixels it sees. label: the true class, shown in the title when
    given; class_names: names for the class indices. Returns the path.
    """
    predicted, saliency = saliency_map(model, image)
    _, cam, info = grad_cam(model, image, layer=layer, details=True)
    shown, cmap = _displayable(image_batch(model, image))
    name = (lambda k: class_names[k] if class_names else str(k))
    title = f"predicted {name(predicted)}" + (f", true {name(label)}" if label is not None else "")
    height, width = info["map_shape"]
    placement = "cells at their fields' centres" if info["placed"] == "receptive fields" else "stretched"
    figure = _figure(10.5, 4.0)
    panels = figure.subplots(1, 3)
    peak = saliency.max()
    for axes, overlay, caption, colours in (
        (panels[0], None, "input", None),
        (panels[1], saliency / peak if peak > 0 else saliency, "saliency |d logit / d pixel|", "hot"),
        (panels[2], cam, f"Grad-CAM, layer {info['layer']}\n{height}x{width} map, {placement}", "jet"),
    ):
        axes.imshow(shown, cmap=cmap, interpolation="nearest")
        if overlay is not None:
            shown_layer = axes.imshow(overlay, cmap=colours, alpha=0.55, vmin=0, vmax=1, interpolation="nearest")
            figure.colorbar(shown_layer, ax=axes, fraction=0.046, pad=0.02)
        axes.set_title(caption, fontsize=10)
        axes.set_axis_off()
    figure.suptitle(title)
    figure.subplots_adjust(left=0.02, right=0.96, top=0.80, bottom=0.04, wspace=0.15)
    return _save(figure, path)


# ----- training ------------------------------------------------------------------------------------------------

def _statistic_order(history):
    """Every statistic in history, activations first, then gradients, then the parameter ratios."""
    present = {stat for stats in history.values() for stat in stats}
    known = [stat for stat in ACTIVATION_STATS + GRADIENT_STATS if stat in present]
    return known + sorted(present - set(known))


def _epoch_axis(axes, epochs):
    """x axis labelled 'epoch' with whole-number ticks 1..epochs (thinned out for long runs)."""
    axes.set_xlabel("epoch")
    axes.set_xlim(0.5, epochs + 0.5)
    step = max(1, math.ceil(epochs / 10))
    axes.set_xticks(range(1, epochs + 1, step))


LAYER_MARKERS = {"Conv2D": "o", "ReLU": "^", "MaxPool2D": "s", "AvgPool2D": "s", "Dense": "D", "Flatten": "x"}


def save_health(history, path):
    """One figure: a subplot per statistic of a HealthMonitor's history, a line per layer, x = epoch.

    Colour follows depth (dark: first layer, yellow: last), the marker the layer's
    type. Standard deviations and ratios, positive numbers spanning decades, get a
    logarithmic axis. Returns the path.
    """
    from matplotlib import colormaps

    stats = _statistic_order(history)
    if not stats:
        raise ValueError("save_health: the history holds no statistics (did the monitor see a training epoch?)")
    columns = min(3, len(stats))
    rows = math.ceil(len(stats) / columns)
    spare_panel = rows * columns > len(stats)  # the legend goes there, or else to the right
    width, height = 5.0 * columns + (0 if spare_panel else 2.0), 3.2 * rows + 0.6
    figure = _figure(width, height)
    panels = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    layers = list(history)
    depth = colormaps["viridis"]
    for axes, stat in zip(panels, stats):
        positive = True
        for index, layer in enumerate(layers):
            values = history[layer].get(stat)
            if values is None:
                continue
            axes.plot(np.arange(1, len(values) + 1), values, marker=LAYER_MARKERS.get(layer.split()[-1], "."),
                      color=depth(index / max(len(layers) - 1, 1) * 0.9), label=layer)
            positive = positive and all(value > 0 for value in values if np.isfinite(value))
        if (stat.endswith("_std") or stat.endswith("_ratio")) and positive:
            axes.set_yscale("log")
        axes.set_title(stat.replace("_", " "), fontsize=10)
        _epoch_axis(axes, max(len(series.get(stat, ())) for series in history.values()))
        axes.grid(alpha=0.3)
    for axes in panels[len(stats):]:
        axes.set_axis_off()
    handles = {}
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ordered = [layer for layer in layers if layer in handles]
    legend_options = dict(fontsize=9, title="layer", ncols=2 if len(ordered) > 8 else 1)
    if spare_panel:
        panels[len(stats)].legend([handles[layer] for layer in ordered], ordered, loc="center", **legend_options)
    else:
        figure.legend([handles[layer] for layer in ordered], ordered, loc="center right", **legend_options)
    figure.suptitle("training health per layer (training batches, averaged per epoch)")
    figure.subplots_adjust(left=0.06, right=0.98 if spare_panel else 1 - 2.0 / width, top=1 - 0.6 / height,
                           bottom=0.08, hspace=0.45, wspace=0.3)
    return _save(figure, path)


def save_training_curves(history, path):
    """Loss and accuracy per epoch, training and validation, from a Trainer History or metrics.json's "history".

    history: {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]};
    any of them may be missing except both of loss and accuracy. Returns the path.
    """
    panels_wanted = [key for key in ("loss", "accuracy") if key in history or f"val_{key}" in history]
    if not panels_wanted:
        raise ValueError(f"save_training_curves: the history has neither loss nor accuracy (keys: {sorted(history)})")
    figure = _figure(10.0, 4.0)
    panels = np.atleast_1d(figure.subplots(1, len(panels_wanted)))
    for axes, key in zip(panels, panels_wanted):
        for name, label, style in ((key, "training", "o-"), (f"val_{key}", "validation", "s--")):
            if history.get(name):
                axes.plot(np.arange(1, len(history[name]) + 1), history[name], style, label=label)
        axes.set_title(key)
        _epoch_axis(axes, max(len(history.get(key) or ()), len(history.get(f"val_{key}") or ())))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("training: mean over each epoch's batches, as the weights change; "
                    "validation: at the end of each epoch", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def save_confusion_matrix(confusion, path, class_names=None):
    """An annotated heatmap of a confusion matrix (row: true class, column: predicted); returns the path.

    Colours follow each row's share (the recall of the true class), so the mistakes
    of a small class show as clearly as those of a large one; the numbers are counts.
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"save_confusion_matrix: expected a square (classes, classes) matrix, got {confusion.shape}")
    classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(k) for k in range(classes)]
    if len(names) != classes:
        raise ValueError(f"save_confusion_matrix: {len(names)} class names for {classes} classes")
    totals = confusion.sum(axis=1, keepdims=True)
    shares = confusion / np.maximum(totals, 1)
    side = max(4.0, 0.55 * classes + 2.0)
    figure = _figure(side + 1.0, side)
    axes = figure.add_subplot()
    shown = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    for row in range(classes):
        for column in range(classes):
            if confusion[row, column]:
                axes.text(column, row, str(int(confusion[row, column])), ha="center", va="center", fontsize=8,
                          color="white" if shares[row, column] > 0.5 else "black")
    axes.set_xticks(range(classes), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right"
                    if max(map(len, names)) > 2 else "center")
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    axes.set_title(f"confusion matrix: {int(confusion.sum())} images, accuracy {accuracy:.2%}")
    figure.tight_layout()
    return _save(figure, path)
