"""One backend fixture for every test: NumPy always, CuPy when a CUDA GPU is present."""

import re

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


# The extra (pyproject.toml's optional-dependencies) that brings each optional module. Without the extra, the
# default suite skips the tests that need it, and the skip's reason names what to install.
EXTRA_OF_MODULE = {
    "cupy": "gpu", "matplotlib": "viz", "mpi4py": "dist", "onnx": "onnx", "onnxruntime": "onnx", "PIL": "images",
    "selenium": "browser", "tensorboard": "tensorboard", "tensorboardX": "tensorboard", "threadpoolctl": "threads",
    "torch": "torch",
}


def name_the_extra(report):
    """Adds the extra to install to a skip that `pytest.importorskip("torch")` gave without one."""
    if not (report.skipped and isinstance(report.longrepr, tuple)):
        return
    path, line, reason = report.longrepr
    missing = re.search(r"could not import '(\w+)", reason)
    extra = EXTRA_OF_MODULE.get(missing.group(1)) if missing else None
    if extra is not None and "[" not in reason:
        report.longrepr = (path, line, f"{reason} (the {extra} extra: pip install -e '.[{extra}]')")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    name_the_extra((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    name_the_extra((yield).get_result())  # a module that needs an extra throughout skips as it is collected


BARS_SIZE = 12
BARS_CLASSES = ("vertical bar", "horizontal bar", "blank")


def bars_dataset(count_per_class=34, noise=0.3, seed=0):
    """(N, 1, 12, 12) images and (N,) labels: a vertical bar (0), a horizontal bar (1) or nothing (2),
    at a random position and length, with Gaussian noise everywhere."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(BARS_CLASSES)):
        for _ in range(count_per_class):
            image = np.zeros((BARS_SIZE, BARS_SIZE))
            line = rng.integers(1, BARS_SIZE - 1)
            start = rng.integers(0, 4)
            length = rng.integers(6, BARS_SIZE - start + 1)
            if label == 0:
                image[start:start + length, line] = 1.0
            elif label == 1:
                image[line, start:start + length] = 1.0
            images.append(image + noise * rng.standard_normal((BARS_SIZE, BARS_SIZE)))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.asarray(images)[order][:, None], np.asarray(labels)[order]
