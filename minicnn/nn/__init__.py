"""Layers and models: Module, Parameter, Sequential and thin layer wrappers over minicnn.functional.

nn knows nothing of training: minicnn.training (and the Keras-style minicnn.keras) sit above it.
PyTorch's spellings (Conv2d, MaxPool2d, Linear, BatchNorm2d, CrossEntropyLoss) stand beside minicnn's own.
"""

from . import init
from .blocks import BasicBlock
from .layers import (
    AdaptiveAvgPool2d, AvgPool2d, AvgPool2D, BatchNorm1d, BatchNorm1D, BatchNorm2d, BatchNorm2D, Conv2d, Conv2D, Dense,
    Dropout, Flatten, GlobalAvgPool2D, Identity, Linear, MaxPool2d, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh,
)
from .losses import CrossEntropyLoss
from .module import Module, Parameter
from .registry import ARCHITECTURES, build, describe, register, skeleton, state_shapes
from .sequential import Sequential

__all__ = [
    "ARCHITECTURES", "AdaptiveAvgPool2d", "AvgPool2D", "AvgPool2d", "BatchNorm1D", "BatchNorm1d", "BatchNorm2D", "BatchNorm2d", "BasicBlock", "Conv2D",
    "Conv2d", "CrossEntropyLoss", "Dense", "Dropout", "Flatten", "GlobalAvgPool2D", "Identity", "Linear", "MaxPool2D", "MaxPool2d",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "build", "describe", "init", "register",
    "skeleton", "state_shapes",
]
