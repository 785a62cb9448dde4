"""The exceptions minicnn raises, so callers can catch them by kind, and how their messages show what
came from a file or the disk (`shown`)."""

import os
import reprlib


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


# ----- what a message shows of a file's content ------------------------------------------------
MAX_SHOWN = 200  # characters of a name, key or path from a file or the disk that a message shows
# A longer integer is shown by its size: repr() refuses past 4300 digits, and no message needs its digits.
MAX_SHOWN_INTEGER_BITS = 1024


class _BoundedRepr(reprlib.Repr):
    def repr_int(self, value, level):
        if value.bit_length() > MAX_SHOWN_INTEGER_BITS:
            return f"<an integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


_BOUNDED = _BoundedRepr()
_BOUNDED.maxstring = _BOUNDED.maxother = 60
_BOUNDED.maxlevel = 3


def shown(value, quoted=True):
    """A value read from a file or the disk (a name, a key, a path, a number), as one line of a message shows it.

    Text (a str or a path) is quoted and escaped as repr() escapes it, so that a newline or a terminal escape
    cannot forge lines on the user's terminal; with quoted=False, short printable text (a path, an archive
    member) is shown as it is. Text longer than MAX_SHOWN characters is cut, quoted and followed by its
    length: 'abc'... (5031 characters). Any other value (a number, a tuple, bytes) is shown as its repr,
    cut to a few dozen characters an item.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return _BOUNDED.repr(value)
    if len(value) > MAX_SHOWN:
        return f"{value[:MAX_SHOWN]!r}... ({len(value)} characters)"
    return value if value.isprintable() and not quoted else repr(value)
