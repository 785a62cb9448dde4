"""The exceptions minicnn raises, so callers can catch them by kind."""


class ShapeError(ValueError):
    """An input's shape does not fit the layer or function it was given to."""


class DeviceMismatchError(RuntimeError):
    """One operation received arrays that live on different devices (CPU and GPU)."""


class BackendUnavailableError(RuntimeError):
    """The GPU was asked for but CuPy or a CUDA device is missing."""


class GradcheckError(AssertionError):
    """Analytic and finite-difference gradients disagree."""
