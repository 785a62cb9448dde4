"""The exceptions minicnn raises, so callers can catch them by kind."""


class ShapeError(ValueError):
    """An input's shape does not fit the layer or function it was given to."""


class DeviceMismatchError(RuntimeError):
    """One operation received arrays that live on different devices (CPU and GPU)."""


class BackendUnavailableError(RuntimeError):
    """The GPU was asked for but CuPy or a CUDA device is missing."""


class GradcheckError(AssertionError):
    """Analytic and finite-difference gradients disagree."""


class DataError(ValueError):
    """A data file is missing, truncated or corrupt, or data has the wrong shape or values."""


class ChecksumError(DataError):
    """A downloaded or cached file's SHA-256 is not the expected one."""


class CheckpointError(ValueError):
    """A checkpoint file is not one, holds pickled objects, or does not fit the model or optimizer."""


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""
