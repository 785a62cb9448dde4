"""Layers and models: Module, Parameter, Sequential and thin layer wrappers over minicnn.functional."""

from . import init
from .layers import (
    LAYER_TYPES, AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh,
)
from .module import Module, Parameter
from .sequential import Sequential

# Registered here rather than in layers.py, which Sequential's module imports (not the other way round).
LAYER_TYPES["Sequential"] = Sequential

__all__ = [
    "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "LAYER_TYPES", "MaxPool2D",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "init",
]
