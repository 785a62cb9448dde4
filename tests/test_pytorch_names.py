"""PyTorch's spellings on minicnn: minicnn.max, minicnn.flatten, Tensor.size / numel / view (see test_tutorials too)."""

import numpy as np
import pytest

import minicnn
from conftest import to_host


def test_max_with_dim_gives_values_and_first_indices(device):
    x = minicnn.tensor(np.array([[1.0, 5.0, 5.0], [7.0, 0.0, -1.0]]), device=device, requires_grad=True)
    values, indices = minicnn.max(x, 1)
    np.testing.assert_array_equal(to_host(values), [5.0, 7.0])
    np.testing.assert_array_equal(to_host(indices), [1, 0])  # a tie goes to the first maximum
    assert to_host(indices).dtype.kind == "i" and not indices.requires_grad
    values.sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [[0, 1, 0], [1, 0, 0]])


def test_max_takes_the_raw_array_that_outputs_data_gives():
    outputs = minicnn.tensor(np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32))
    result = minicnn.max(outputs.data, 1)
    assert result.indices.numpy().tolist() == [1, 0] and result.values.shape == (2,)
    kept = minicnn.max(outputs, 0, keepdim=True)
    assert kept.values.shape == (1, 2) and kept.indices.shape == (1, 2)
    assert minicnn.max(outputs).item() == pytest.approx(0.9)


def test_flatten_keeps_the_axes_before_start_dim():
    x = minicnn.tensor(np.zeros((2, 3, 4, 5)))
    assert minicnn.flatten(x, 1).shape == (2, 60) and minicnn.flatten(x).shape == (120,)


def test_size_is_pytorchs_and_numel_counts():
    x = minicnn.tensor(np.zeros((4, 3)))
    assert x.size() == (4, 3) and x.size(0) == 4 and x.size(-1) == 3 and x.numel() == 12
    assert x.view(-1, 2).shape == (6, 2)
