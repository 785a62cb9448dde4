"""minicnn: a small deep-learning engine on NumPy (CPU) and CuPy (GPU) that you can read in an afternoon.

`import minicnn` loads the engine and nothing optional. The integrations (`minicnn.onnx`, `minicnn.serve`, ...)
are reachable from here too, but each is imported on first use, and imports its extra (onnx, Pillow, ...) only
when one of its functions needs it.
"""

from . import checkpoint, data, functional, metrics, models, nn, optim, training
from .backend import gpu_available, keep_freed_memory, manual_seed, set_default_device
from .errors import (
    BackendUnavailableError, CheckpointError, ChecksumError, DataError, DeviceMismatchError, GradcheckError,
    ShapeError, TrainingDivergedError,
)
from .gradcheck import gradcheck
from .kernels import num_threads, set_num_threads, share_cores_with_blas
from .pictures import predict
from .profiler import profile
from .pytorch_names import flatten, max
from .tensor import Operation, Tensor, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "CheckpointError", "ChecksumError", "DataError", "DeviceMismatchError", "GradcheckError", "Operation", "ShapeError",
    "Tensor", "checkpoint", "flatten", "max", "data", "functional", "metrics", "models", "training", "gpu_available", "gradcheck", "is_grad_enabled", "keep_freed_memory", "manual_seed", "nn",
    "no_grad", "num_threads", "optim", "predict", "profile", "set_default_device", "set_num_threads", "share_cores_with_blas", "tensor", "TrainingDivergedError",
]

# Loaded on first use (PEP 562): `minicnn.onnx.export(...)` works after a bare `import minicnn`, which stays quick.
_LAZY_SUBMODULES = ("cli", "distributed", "interop", "keras", "onnx", "recipe", "serve", "tensorboard", "viz")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        # Importing a submodule also binds it as an attribute of the package, so this runs once per name.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
