"""One backend fixture for every test: NumPy always, CuPy when a CUDA GPU is present."""

import numpy as np
import pytest

from minicnn import backend

AVAILABLE_DEVICES = ["cpu"] + (["gpu"] if backend.gpu_available() else [])


@pytest.fixture(params=[pytest.param(d, marks=[pytest.mark.gpu] if d == "gpu" else []) for d in AVAILABLE_DEVICES])
def device(request):
    """'cpu', and 'gpu' where CuPy sees a CUDA device."""
    return request.param


@pytest.fixture
def xp(device):
    """The array module of `device`: numpy or cupy."""
    return backend.array_module_for(device)


@pytest.fixture(autouse=True)
def _isolated_global_state():
    """Each test starts from the default device and a fixed seed, and leaves them as it found them."""
    saved_device = backend._default_device
    backend.manual_seed(0)
    yield
    backend._default_device = saved_device


def to_host(array):
    """A NumPy copy of a NumPy/CuPy array or Tensor, for comparisons."""
    data = getattr(array, "data", array)
    return backend.to_numpy(data) if not isinstance(data, np.ndarray) else data
