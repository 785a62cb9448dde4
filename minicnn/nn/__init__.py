"""Layers and models: Module, Parameter, Sequential and thin layer wrappers over minicnn.functional."""

from . import init
from .layers import (
    AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh,
)
from .module import Module, Parameter
from .sequential import Sequential

__all__ = [
    "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "MaxPool2D",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "init",
]
