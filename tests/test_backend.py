"""Device choice, device mismatches, a missing GPU, seeding and the malloc setting (backend.py)."""

import platform
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import backend
from conftest import AVAILABLE_DEVICES, to_host

# A stand-in for cupy.ndarray: backend recognises CuPy arrays by their type's module,
# so this lets a CPU-only machine exercise the device checks.
FakeCupyArray = type("ndarray", (), {"__module__": "cupy"})


@pytest.fixture
def cupy_missing(monkeypatch):
    """Make `import cupy` fail, as on a machine without CuPy (right on a GPU machine too)."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)


# ----- device mismatch -------------------------------------------------------------------------------
def test_fake_cupy_array_is_seen_as_gpu():
    assert backend.device_of(FakeCupyArray()) == "gpu"
    assert backend.device_of(np.zeros(2)) == "cpu"
    assert backend.device_of(3.0) == "cpu"


def test_check_same_device_names_each_input_and_device():
    with pytest.raises(minicnn.DeviceMismatchError) as info:
        backend.check_same_device("conv2d", [("input", np.zeros((1, 1, 3, 3))), ("weight", FakeCupyArray())])
    message = str(info.value)
    assert "conv2d" in message
    assert "input is on 'cpu'" in message
    assert "weight is on 'gpu'" in message
    assert ".to(" in message
    assert isinstance(info.value, RuntimeError)


def test_check_same_device_accepts_one_device():
    backend.check_same_device("add", [("a", np.zeros(2)), ("b", np.ones(2)), ("c", 1.0)])
    backend.check_same_device("add", [("a", FakeCupyArray()), ("b", FakeCupyArray())])


def test_operation_on_cpu_and_fake_gpu_tensor_raises_before_running():
    cpu = minicnn.tensor(np.ones(2), device="cpu")
    gpu = minicnn.Tensor(FakeCupyArray())
    assert gpu.device == "gpu"
    with pytest.raises(minicnn.DeviceMismatchError, match=r"a is on 'cpu', b is on 'gpu'.*\.to\("):
        cpu + gpu


@pytest.mark.gpu
@pytest.mark.skipif("gpu" not in AVAILABLE_DEVICES, reason="needs CuPy and a CUDA GPU")
def test_mixing_cpu_and_gpu_tensors_raises():
    cpu = minicnn.tensor(np.ones((2, 2)), device="cpu")
    gpu = minicnn.tensor(np.ones((2, 2)), device="gpu")
    with pytest.raises(minicnn.DeviceMismatchError) as info:
        cpu * gpu
    message = str(info.value)
    assert "a is on 'cpu'" in message and "b is on 'gpu'" in message and ".to(" in message
    with pytest.raises(minicnn.DeviceMismatchError, match="b is on 'cpu'"):
        gpu - cpu
    # Moving one side fixes it.
    np.testing.assert_array_equal(to_host(cpu.to("gpu") * gpu), np.ones((2, 2)))


def test_to_round_trip(device):
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = minicnn.tensor(values, device="cpu", requires_grad=True)
    moved = t.to(device)
    assert moved.device == device
    assert moved.requires_grad
    assert moved.dtype == np.float64
    back = moved.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.data, values)


# ----- missing GPU --------------------------------------------------------------------------------------
def _assert_explains_missing_cupy(error):
    message = str(error)
    assert "CuPy" in message
    # The command that works from a checkout: an unrelated package named minicnn is on PyPI.
    assert 'python3 -m pip install -e ".[gpu]"' in message
    assert "minicnn[gpu]" not in message


def test_set_default_device_gpu_without_cupy_raises(monkeypatch, cupy_missing):
    monkeypatch.setattr(backend, "_default_device", "cpu")
    with pytest.raises(minicnn.BackendUnavailableError) as info:
        minicnn.set_default_device("gpu")
    _assert_explains_missing_cupy(info.value)
    assert backend.default_device() == "cpu"  # the failed call changed nothing


def test_tensor_on_gpu_without_cupy_raises(cupy_missing):
    with pytest.raises(minicnn.BackendUnavailableError) as info:
        minicnn.tensor([1.0], device="gpu")
    _assert_explains_missing_cupy(info.value)


def test_tensor_to_gpu_without_cupy_raises(cupy_missing):
    t = minicnn.tensor([1.0, 2.0], device="cpu")
    with pytest.raises(minicnn.BackendUnavailableError) as info:
        t.to("gpu")
    _assert_explains_missing_cupy(info.value)
    assert isinstance(info.value, RuntimeError)


def test_gpu_available_is_false_without_cupy(cupy_missing):
    assert backend.gpu_available() is False
    assert minicnn.gpu_available() is False


# ----- default device from the environment ------------------------------------------------------------
@pytest.mark.parametrize("value", ["cpu", " CPU ", ""])
def test_minicnn_device_env_cpu_is_honoured(monkeypatch, value):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINICNN_DEVICE", value)
    assert backend.default_device() == "cpu"
    assert minicnn.tensor([1.0]).device == "cpu"


def test_minicnn_device_env_gpu_is_read(monkeypatch, cupy_missing):
    # Proof that the variable is read: asking for the GPU through it fails like set_default_device.
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINICNN_DEVICE", "gpu")
    with pytest.raises(minicnn.BackendUnavailableError, match="CuPy"):
        backend.default_device()


def test_minicnn_device_env_unknown_raises(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINICNN_DEVICE", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        backend.default_device()


def test_unset_env_defaults_to_cpu(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.delenv("MINICNN_DEVICE", raising=False)
    assert backend.default_device() == "cpu"


def test_set_default_device_cpu(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINICNN_DEVICE", "tpu")  # an explicit choice overrides the environment
    minicnn.set_default_device("cpu")
    assert backend.default_device() == "cpu"


# ----- unknown device names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tpu", "cuda", "GPU", ""])
def test_unknown_device_name_raises_value_error(name):
    with pytest.raises(ValueError, match="unknown device"):
        minicnn.set_default_device(name)
    with pytest.raises(ValueError, match="unknown device"):
        minicnn.tensor([1.0], device=name)
    with pytest.raises(ValueError, match="unknown device"):
        minicnn.tensor([1.0], device="cpu").to(name)
    with pytest.raises(ValueError):
        backend.array_module_for(name)


# ----- seeding -------------------------------------------------------------------------------------
def test_manual_seed_makes_dense_init_reproducible():
    minicnn.manual_seed(123)
    first = minicnn.nn.Dense(5, 4)
    minicnn.manual_seed(123)
    second = minicnn.nn.Dense(5, 4)
    np.testing.assert_array_equal(to_host(first.weight), to_host(second.weight))
    np.testing.assert_array_equal(to_host(first.bias), to_host(second.bias))


def test_different_seeds_give_different_weights():
    minicnn.manual_seed(1)
    first = minicnn.nn.Dense(5, 4)
    minicnn.manual_seed(2)
    second = minicnn.nn.Dense(5, 4)
    assert not np.array_equal(to_host(first.weight), to_host(second.weight))


def test_successive_layers_differ_without_reseeding():
    minicnn.manual_seed(7)
    first = minicnn.nn.Dense(5, 4)
    second = minicnn.nn.Dense(5, 4)
    assert not np.array_equal(to_host(first.weight), to_host(second.weight))


FAULTS_OF_CONV_BACKWARD = """
import resource, sys
import numpy as np
import minicnn, minicnn.functional as F
kept = sys.argv[1] == "keep" and minicnn.keep_freed_memory()
rng = np.random.default_rng(0)
x = minicnn.Tensor(rng.standard_normal((64, 32, 13, 13), dtype=np.float32), requires_grad=True)
w = minicnn.Tensor(rng.standard_normal((64, 32, 3, 3), dtype=np.float32), requires_grad=True)
grad = rng.standard_normal((64, 64, 11, 11), dtype=np.float32)
for _ in range(3):
    F.conv2d(x, w).backward(grad)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    F.conv2d(x, w).backward(grad)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults_of_five_conv_steps(mode):
    """Run FAULTS_OF_CONV_BACKWARD in a fresh process; mode 'keep' calls keep_freed_memory() first."""
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_CONV_BACKWARD, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt")
@pytest.mark.slow  # times page faults over many steps: in the slow suite
def test_freed_memory_is_reused_instead_of_page_faulted_in_again_each_step():
    """Page faults (not time) of five conv2d steps in a process that calls keep_freed_memory() and in one that
    only imports minicnn: importing must leave malloc alone, so the second faults its arrays in again each step."""
    took, kept = _page_faults_of_five_conv_steps("keep")
    assert took
    untouched, returned = _page_faults_of_five_conv_steps("default")
    assert not untouched
    assert kept * 10 < returned, (kept, returned)

