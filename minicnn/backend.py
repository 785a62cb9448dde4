"""The one place that knows NumPy from CuPy.

Everything else asks this module for the array module of its inputs
(`get_array_module`), for the device an array lives on (`device_of`), or to
move an array (`to_device`). CuPy is imported lazily, the first time the GPU
is asked for, so importing minicnn never touches CUDA.
"""

import ctypes
import os

import numpy as np

from .errors import BackendUnavailableError, DeviceMismatchError

DEVICES = ("cpu", "gpu")
DEFAULT_FLOAT = np.float32

# minicnn is installed from a checkout (an unrelated package of the same name is on PyPI).
_GPU_INSTALL_HINT = (
    "install the GPU extra from your minicnn checkout with `python3 -m pip install -e \".[gpu]\"` "
    "(it pulls CuPy; pick the cupy-cudaXXx wheel matching your CUDA toolkit if the default does not fit), "
    "or use device='cpu'"
)

_cupy = None  # the cupy module once the GPU has been asked for and found
_default_device = None  # resolved lazily from MINICNN_DEVICE
_cpu_rng = np.random.default_rng()


def _load_cupy():
    """Import CuPy and check that a CUDA device is present, or explain what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the GPU was requested but CuPy is not installed ({exc}); {_GPU_INSTALL_HINT}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise BackendUnavailableError(
            f"the GPU was requested and CuPy is installed, but no CUDA GPU could be used ({exc}); "
            "check the NVIDIA driver with `nvidia-smi`, or use device='cpu'"
        ) from None
    if count == 0:
        raise BackendUnavailableError(
            "the GPU was requested and CuPy is installed, but no CUDA GPU is present; use device='cpu'"
        )
    _cupy = cupy
    return cupy


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _load_cupy()
    except BackendUnavailableError:
        return False
    return True


def is_cupy_array(array):
    # Checked by type name so that a CPU-only process never imports CuPy.
    return type(array).__module__.split(".")[0] == "cupy"


def is_array(value):
    """True for a NumPy or CuPy array (not for Python numbers, lists or Tensors)."""
    return isinstance(value, np.ndarray) or is_cupy_array(value)


def device_of(array):
    """'gpu' for a CuPy array, 'cpu' for anything else (NumPy arrays, scalars)."""
    return "gpu" if is_cupy_array(array) else "cpu"


def get_array_module(*arrays):
    """numpy, or cupy if any of the arrays is a CuPy array."""
    for array in arrays:
        if is_cupy_array(array):
            return _load_cupy()
    return np


def check_same_device(where, named_arrays):
    """Raise DeviceMismatchError if the arrays are not all on one device.

    named_arrays: sequence of (name, array) pairs; `where` names the operation.
    """
    devices = [(name, device_of(array)) for name, array in named_arrays]
    if len({device for _, device in devices}) > 1:
        listing = ", ".join(f"{name} is on '{device}'" for name, device in devices)
        raise DeviceMismatchError(
            f"{where}: inputs live on different devices ({listing}); move them to one device "
            "first, e.g. tensor.to('gpu') or model.to('gpu')"
        )


def check_device_name(device):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    return device


def array_module_for(device):
    """numpy for 'cpu', cupy for 'gpu' (raising a helpful error if the GPU is unavailable)."""
    return _load_cupy() if check_device_name(device) == "gpu" else np


def to_device(array, device):
    """The array on `device`; the same object when it is already there."""
    if device_of(array) == check_device_name(device):
        return array
    if device == "gpu":
        return _load_cupy().asarray(array)
    return array.get()


def to_numpy(array):
    """A host (NumPy) copy of a NumPy or CuPy array, in C order (whatever layout the engine kept it in)."""
    return array.get() if is_cupy_array(array) else np.array(array, copy=True, order="C")


def default_device():
    """The device for new tensors and parameters: 'cpu' unless changed."""
    if _default_device is None:
        set_default_device(os.environ.get("MINICNN_DEVICE", "cpu").strip().lower() or "cpu")
    return _default_device


def set_default_device(device):
    """Make `device` ('cpu' or 'gpu') the default for new tensors and parameters."""
    global _default_device
    array_module_for(device)  # fail now, not at the first tensor, if the GPU is missing
    _default_device = device


def manual_seed(seed):
    """Seed every random generator minicnn draws from (parameter init, shuffling, dropout)."""
    global _cpu_rng
    _cpu_rng = np.random.default_rng(seed)
    if _cupy is not None:
        _cupy.random.seed(seed)


def cpu_rng():
    """The seeded NumPy generator used for parameter initialisation and data shuffling."""
    return _cpu_rng


def random_uniform(like, shape):
    """Uniform [0, 1) samples of `shape` on the device of array `like`, from the seeded generator."""
    if is_cupy_array(like):
        return _load_cupy().random.random_sample(shape, dtype=like.dtype)
    return _cpu_rng.random(shape, dtype=like.dtype if like.dtype in (np.float32, np.float64) else np.float64)


def as_strided(xp, array, shape, strides):
    """A strided view of `array`; read-only use only (windows may overlap)."""
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def scatter_add(xp, target, index, values):
    """target[index] += values, accumulating repeated indices (unbuffered)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


# ----- the memory limit ------------------------------------------------------------------------
# One bound on what a single operation or a single decoded file may ask for, checked *before*
# allocating: a convolution's padded image and columns, an IDX file's declared size, a gzip
# stream's output. Past it minicnn refuses with its own error (ShapeError, DataError) naming
# the bytes needed, instead of filling the machine's memory and ending in MemoryError.
MEMORY_SHARE = 0.5  # the default limit: this share of the machine's memory
_memory_limit = None  # bytes, when set_memory_limit gave one


def machine_memory_bytes():
    """The memory this process may use: physical RAM, or a smaller cgroup (container) limit; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that reports it
        total = None
    for cgroup_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cgroup_file) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)  # "max" (no limit) and huge sentinels leave the RAM size
    return total


def memory_limit():
    """Bytes one operation or one decoded file may allocate before minicnn refuses it.

    Default: MEMORY_SHARE (half) of machine_memory_bytes(), or 8 GiB where that is unknown;
    change it with set_memory_limit.
    """
    if _memory_limit is not None:
        return _memory_limit
    total = machine_memory_bytes()
    return int(total * MEMORY_SHARE) if total else 8 << 30


def set_memory_limit(limit):
    """Set the bytes one operation or decoded file may allocate (an int > 0), or None for the default."""
    global _memory_limit
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0:
            raise ValueError(f"set_memory_limit: expected a positive number of bytes or None, got {limit!r}")
        limit = int(limit)
    _memory_limit = limit


# The default limit is half the machine, far more than a small file ever honestly needs: readers
# whose output is bounded by what the file holds also pass their file through file_budget, so that
# a few hundred bytes that declare gigabytes are refused (ONNX initialisers, for one).
FILE_BUDGET_FLOOR = 64 << 20  # bytes any file may take, however small it is


def file_budget(file_bytes, per_file_byte):
    """Bytes a reader may allocate for a file of `file_bytes` bytes whose format makes each byte worth at
    most `per_file_byte` bytes in memory: per_file_byte * file_bytes + FILE_BUDGET_FLOOR, never more
    than memory_limit()."""
    return min(memory_limit(), int(per_file_byte * file_bytes) + FILE_BUDGET_FLOOR)


def format_bytes(count):
    """A byte count for messages: '34.8 GiB (37363892224 bytes)'."""
    size, unit = float(count), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, next_unit
    return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({count} bytes)"


def gpu_pool_mib():
    """MiB held by CuPy's default memory pool (its high-water mark: the pool keeps freed blocks), or None."""
    if _cupy is None:
        return None
    return _cupy.get_default_memory_pool().total_bytes() / 2**20


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the OS.

    Opt-in and process-wide, as malloc is: `import minicnn` never calls it; the
    `minicnn` command and the benchmarks do (unless told not to), and a library
    user who trains in a loop calls it once, first thing.

    Each training step allocates and frees the same large arrays (columns,
    activations, gradients). By default glibc returns big blocks to the OS on
    free, so the next step page-faults them in again (five conv2d backward steps
    at batch 64, 32 -> 64 channels on 13x13: about 16,000 minor faults without
    this, 200 with it; tests/test_backend.py counts them). Blocks up to 32 MiB (the
    largest glibc allows here) now come from the heap, and up to 1 GiB of free
    heap stays mapped. Returns True when both settings took, False where this is
    not glibc (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
