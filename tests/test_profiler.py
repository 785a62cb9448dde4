"""profile(): per-operation call counts and times (profiler.py)."""

import collections
import sys

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn.profiler import OpStats

# minicnn.tensor is the tensor() function; the module behind it holds the timer hook.
tensor_module = sys.modules["minicnn.tensor"]

EXPECTED_CNN_STEP = {"Conv2dOp": 3, "MaxPool2dOp": 2, "ReLU": 4, "Linear": 2, "CrossEntropy": 1, "Reshape": 1}


def _cnn_batch(device):
    model = minicnn.models.cnn().to(device)
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32), device=device)
    labels = minicnn.tensor(rng.integers(0, 10, size=8), device=device)
    return model, x, labels


def _training_step(model, x, labels):
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    return loss


@pytest.fixture
def operation_counter(monkeypatch):
    """Counts forward and backward calls per Operation class without the profiler's help."""
    forward_calls, backward_calls = collections.Counter(), collections.Counter()
    original_call = minicnn.Operation.__call__
    patched_classes = set()

    def counting_call(operation, *inputs):
        cls = type(operation)
        forward_calls[cls.__name__] += 1
        if cls not in patched_classes:
            patched_classes.add(cls)
            original_backward = cls.backward

            def counting_backward(self, *grads):
                backward_calls[type(self).__name__] += 1
                return original_backward(self, *grads)

            monkeypatch.setattr(cls, "backward", counting_backward)
        return original_call(operation, *inputs)

    monkeypatch.setattr(minicnn.Operation, "__call__", counting_call)
    return forward_calls, backward_calls


def test_cnn_training_step_counts(device):
    model, x, labels = _cnn_batch(device)
    with minicnn.profile() as p:
        _training_step(model, x, labels)
    assert set(p.stats) == set(EXPECTED_CNN_STEP)
    for name, calls in EXPECTED_CNN_STEP.items():
        # The first convolution's input needs no gradient, but its weight does, so its backward runs too.
        assert (p.stats[name].forward_calls, p.stats[name].backward_calls) == (calls, calls), name


def test_counts_match_an_independent_count_of_operation_calls(operation_counter):
    forward_calls, backward_calls = operation_counter
    model, x, labels = _cnn_batch("cpu")
    with minicnn.profile() as p:
        _training_step(model, x, labels)
        (x * x + 1.0).sum()  # ops that no backward reaches
    assert sum(forward_calls.values()) > sum(EXPECTED_CNN_STEP.values())
    assert {name: stats.forward_calls for name, stats in p.stats.items()} == dict(forward_calls)
    assert {name: stats.backward_calls for name, stats in p.stats.items() if stats.backward_calls} == dict(backward_calls)


def test_times_are_non_negative_and_fit_in_the_block():
    model, x, labels = _cnn_batch("cpu")
    with minicnn.profile() as p:
        _training_step(model, x, labels)
    for stats in p.stats.values():
        assert isinstance(stats, OpStats)
        assert stats.forward_seconds >= 0 and stats.backward_seconds >= 0
        assert stats.total_seconds == stats.forward_seconds + stats.backward_seconds
    # Each operation was timed inside the block, one after another, so they cannot add up to more.
    assert p.op_seconds == pytest.approx(sum(stats.total_seconds for stats in p.stats.values()))
    assert p.total_seconds >= p.op_seconds > 0


def test_table_lists_every_operation_slowest_first():
    model, x, labels = _cnn_batch("cpu")
    with minicnn.profile() as p:
        _training_step(model, x, labels)
    table = p.table()
    for header in ("op", "forward calls", "forward total ms", "forward mean ms", "backward calls",
                   "backward total ms", "backward mean ms", "share %"):
        assert header in table.splitlines()[0]
    rows = [line.split()[0] for line in table.splitlines()[2:2 + len(p.stats)]]
    assert sorted(rows) == sorted(EXPECTED_CNN_STEP)
    totals = [p.stats[name].total_seconds for name in rows]
    assert totals == sorted(totals, reverse=True)
    shares = [float(line.split()[-1]) for line in table.splitlines()[2:2 + len(p.stats)]]
    assert sum(shares) == pytest.approx(100, abs=0.5)
    conv_row = table.splitlines()[2 + rows.index("Conv2dOp")].split()
    assert conv_row[1] == "3" and conv_row[4] == "3"


def test_nothing_is_recorded_outside_the_block():
    model, x, labels = _cnn_batch("cpu")
    _training_step(model, x, labels)
    with minicnn.profile() as p:
        (x * 2.0).sum()
    assert tensor_module._op_timer is None
    _training_step(model, x, labels)
    assert {name: (stats.forward_calls, stats.backward_calls) for name, stats in p.stats.items()} == {
        "Multiply": (1, 0), "Sum": (1, 0)}
    frozen = p.total_seconds
    assert p.total_seconds == frozen


def test_the_timer_is_removed_when_the_block_raises():
    with pytest.raises(ZeroDivisionError), minicnn.profile():
        _ = 1 / 0
    assert tensor_module._op_timer is None


def test_nested_blocks_raise_and_leave_the_outer_one_recording():
    x = minicnn.tensor([1.0, 2.0], requires_grad=True)
    with minicnn.profile() as outer:
        with pytest.raises(RuntimeError, match="nested"), minicnn.profile():
            pass
        (x * x).sum().backward()
    assert outer.stats["Multiply"].forward_calls == 1 and outer.stats["Multiply"].backward_calls == 1
    assert tensor_module._op_timer is None


def test_a_profile_is_used_once():
    p = minicnn.profile()
    with p:
        pass
    with pytest.raises(RuntimeError, match="already used"), p:
        pass


def test_under_no_grad_only_forward_calls_are_counted(device):
    model, x, labels = _cnn_batch(device)
    with minicnn.profile() as p, minicnn.no_grad():
        F.cross_entropy(model(x), labels)
    for name, calls in EXPECTED_CNN_STEP.items():
        assert (p.stats[name].forward_calls, p.stats[name].backward_calls) == (calls, 0), name
