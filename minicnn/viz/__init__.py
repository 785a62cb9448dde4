"""Looking inside a network: its computation graph (Graphviz), feature maps, filters, saliency and
Grad-CAM, training health, and training curves. matplotlib is imported only when a picture is drawn."""

from .graph import export_graph, render, to_dot
from .health import HealthMonitor
from .plots import (
    feature_maps, image_grid, save_confusion_matrix, save_feature_maps, save_filters, save_health, save_saliency,
    save_training_curves,
)
from .saliency import grad_cam, saliency_map

__all__ = [
    "HealthMonitor", "export_graph", "feature_maps", "grad_cam", "image_grid", "render", "saliency_map",
    "save_confusion_matrix", "save_feature_maps", "save_filters", "save_health", "save_saliency",
    "save_training_curves", "to_dot",
]
