"""Tests for minicnn.optim: SGD and Adam follow torch.optim step by step; state, dtype, device, errors."""

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn import nn, optim
from conftest import to_host

STEPS = 20


def _problem(seed=0):
    """Initial weights and data of a small tanh regression, float64 NumPy arrays."""
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.standard_normal((4, 3)),
        "bias": rng.standard_normal(3) * 0.1,
        "x": rng.standard_normal((6, 4)),
        "y": rng.standard_normal((6, 3)),
    }


def _minicnn_loss(params, x, y):
    weight, bias = params
    return ((F.tanh(F.linear(x, weight, bias)) - y) ** 2).mean()


def _torch_loss(torch, params, x, y):
    weight, bias = params
    return ((torch.tanh(x @ weight + bias) - y) ** 2).mean()


def _trajectories(make_ours, make_theirs, device, steps=STEPS, schedule=None):
    """Run both optimizers on the same problem; yield (step, our params, torch params) after each step."""
    torch = pytest.importorskip("torch")
    problem = _problem()
    ours = [nn.Parameter(minicnn.tensor(problem[name], device=device)) for name in ("weight", "bias")]
    theirs = [torch.tensor(problem[name], dtype=torch.float64, requires_grad=True) for name in ("weight", "bias")]
    x, y = (minicnn.tensor(problem[name], device=device) for name in ("x", "y"))
    tx, ty = (torch.tensor(problem[name], dtype=torch.float64) for name in ("x", "y"))
    our_optimizer, their_optimizer = make_ours(ours), make_theirs(torch, theirs)
    for step in range(steps):
        if schedule is not None:
            our_optimizer.lr = schedule(step)
            for group in their_optimizer.param_groups:
                group["lr"] = schedule(step)
        our_optimizer.zero_grad()
        _minicnn_loss(ours, x, y).backward()
        our_optimizer.step()
        their_optimizer.zero_grad()
        _torch_loss(torch, theirs, tx, ty).backward()
        their_optimizer.step()
        yield step, ours, theirs


def _assert_same_trajectory(make_ours, make_theirs, device, schedule=None):
    start = _problem()["weight"]
    for step, ours, theirs in _trajectories(make_ours, make_theirs, device, schedule=schedule):
        for name, our, their in zip(("weight", "bias"), ours, theirs):
            assert our.dtype == np.float64
            np.testing.assert_allclose(
                to_host(our), their.detach().numpy(), rtol=1e-10, atol=1e-12,
                err_msg=f"{name} after step {step + 1}",
            )
    # the run actually moved the weights
    assert not np.allclose(to_host(ours[0]), start, atol=1e-3)


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "combined": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "momentum_weight_decay": dict(lr=0.05, momentum=0.9, weight_decay=0.05),
}


@pytest.mark.parametrize("options", SGD_CASES.values(), ids=SGD_CASES.keys())
def test_sgd_matches_torch(options, device):
    _assert_same_trajectory(
        lambda params: optim.SGD(params, **options),
        lambda torch, params: torch.optim.SGD(params, **options),
        device,
    )


ADAM_CASES = {
    "default": dict(),
    "lr": dict(lr=0.05),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "betas_eps": dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3),
    "all": dict(lr=0.03, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.02),
}


@pytest.mark.parametrize("options", ADAM_CASES.values(), ids=ADAM_CASES.keys())
def test_adam_matches_torch(options, device):
    _assert_same_trajectory(
        lambda params: optim.Adam(params, **options),
        lambda torch, params: torch.optim.Adam(params, **options),
        device,
    )


def _decaying(step):
    return 0.1 * 0.8**step


@pytest.mark.parametrize(
    "make_ours, make_theirs",
    [
        (lambda p: optim.SGD(p, lr=1.0, momentum=0.9), lambda torch, p: torch.optim.SGD(p, lr=1.0, momentum=0.9)),
        (lambda p: optim.Adam(p, lr=1.0), lambda torch, p: torch.optim.Adam(p, lr=1.0)),
    ],
    ids=["sgd", "adam"],
)
def test_learning_rate_schedule_matches_torch(make_ours, make_theirs, device):
    _assert_same_trajectory(make_ours, make_theirs, device, schedule=_decaying)


@pytest.mark.parametrize("make_optimizer", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1)], ids=["sgd", "adam"])
def test_changed_learning_rate_takes_effect(make_optimizer, device):
    parameter = nn.Parameter(minicnn.tensor(np.array([1.0, -2.0, 3.0]), device=device))
    optimizer = make_optimizer([parameter])
    parameter.grad = parameter.data * 0 + 1
    optimizer.step()
    moved = to_host(parameter).copy()
    assert not np.allclose(moved, [1.0, -2.0, 3.0])
    optimizer.lr = 0.0
    parameter.grad = parameter.data * 0 + 1
    optimizer.step()
    np.testing.assert_array_equal(to_host(parameter), moved)


def test_plain_sgd_update_by_hand(device):
    parameter = nn.Parameter(minicnn.tensor(np.array([1.0, 2.0]), device=device))
    optimizer = optim.SGD([parameter], lr=0.5)
    parameter.grad = minicnn.tensor(np.array([0.2, -0.4]), device=device).data
    optimizer.step()
    np.testing.assert_allclose(to_host(parameter), [0.9, 2.2], rtol=1e-15)


# ----- dtype, device, skipped parameters ---------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.1),
    "sgd_all": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: optim.Adam(p, lr=0.1),
    "adam_wd": lambda p: optim.Adam(p, lr=0.1, weight_decay=0.01),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_parameters_keep_float32_and_device(make_optimizer, device):
    model = nn.Sequential(nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 2)).to(device)
    optimizer = make_optimizer(model.parameters())
    x = minicnn.tensor(np.random.default_rng(0).standard_normal((8, 4)), device=device, dtype=np.float32)
    before = [to_host(p).copy() for p in model.parameters()]
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), np.array([0, 1] * 4)).backward()
        optimizer.step()
    for parameter, start in zip(model.parameters(), before):
        assert parameter.dtype == np.float32
        assert parameter.data.dtype == np.float32
        assert parameter.device == device
        assert not np.array_equal(to_host(parameter), start)


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_parameters_without_grad_are_skipped(make_optimizer, device):
    used = nn.Parameter(minicnn.tensor(np.array([1.0, 2.0, 3.0]), device=device))
    unused = nn.Parameter(minicnn.tensor(np.array([4.0, 5.0]), device=device))
    optimizer = make_optimizer([unused, used])
    for _ in range(3):
        optimizer.zero_grad()
        (used * used).sum().backward()
        assert unused.grad is None
        optimizer.step()
    np.testing.assert_array_equal(to_host(unused), [4.0, 5.0])
    assert not np.allclose(to_host(used), [1.0, 2.0, 3.0])


def test_skipped_steps_do_not_advance_adam_state(device):
    """A parameter without grad for a while continues as if those steps had not happened (as torch)."""
    torch = pytest.importorskip("torch")
    start = np.array([1.0, -2.0])
    ours = nn.Parameter(minicnn.tensor(start, device=device))
    theirs = torch.tensor(start, requires_grad=True)
    our_optimizer = optim.Adam([ours], lr=0.1)
    their_optimizer = torch.optim.Adam([theirs], lr=0.1)
    for step in range(6):
        our_optimizer.zero_grad()
        their_optimizer.zero_grad()
        if step not in (1, 2):
            (ours * ours * ours).sum().backward()
            (theirs**3).sum().backward()
        our_optimizer.step()
        their_optimizer.step()
        np.testing.assert_allclose(to_host(ours), theirs.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_zero_grad_clears_grads(make_optimizer, device):
    parameters = [nn.Parameter(minicnn.tensor(np.ones(3), device=device)) for _ in range(2)]
    optimizer = make_optimizer(parameters)
    (parameters[0] * parameters[1]).sum().backward()
    assert all(p.grad is not None and np.any(to_host(p.grad)) for p in parameters)
    optimizer.zero_grad()
    for parameter in parameters:
        assert parameter.grad is None or not np.any(to_host(parameter.grad))


def test_optimizer_accepts_a_generator_of_parameters():
    model = nn.Dense(3, 2)
    optimizer = optim.SGD((p for p in model.parameters()), lr=0.1)
    model(minicnn.tensor(np.ones((1, 3), dtype=np.float32))).sum().backward()
    before = to_host(model.bias).copy()
    optimizer.step()
    assert not np.array_equal(to_host(model.bias), before)


# ----- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_optimizer", [lambda p: optim.SGD(p, lr=0.1), lambda p: optim.Adam(p)], ids=["sgd", "adam"])
def test_empty_parameter_list_raises_value_error(make_optimizer):
    with pytest.raises(ValueError):
        make_optimizer([])
    with pytest.raises(ValueError):
        make_optimizer(iter([]))


def test_nesterov_without_momentum_raises_value_error():
    parameters = nn.Dense(3, 2).parameters()
    with pytest.raises(ValueError, match="(?i)nesterov"):
        optim.SGD(parameters, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="(?i)nesterov"):
        optim.SGD(parameters, lr=0.1, momentum=0.0, nesterov=True)
    optim.SGD(parameters, lr=0.1, momentum=0.5, nesterov=True)  # fine with momentum


BAD_ARGUMENTS = [
    # (what torch.optim also refuses, the optimizer, the words the message must contain)
    ("negative lr", lambda p: optim.SGD(p, lr=-0.1), "lr must be >= 0"),
    ("NaN lr", lambda p: optim.Adam(p, lr=float("nan")), "lr must be >= 0"),
    ("negative momentum", lambda p: optim.SGD(p, lr=0.1, momentum=-0.9), "momentum must be >= 0"),
    ("negative SGD weight decay", lambda p: optim.SGD(p, lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0"),
    ("beta1 = 1", lambda p: optim.Adam(p, betas=(1.0, 0.999)), r"betas must be two numbers in \[0, 1\)"),
    ("negative beta2", lambda p: optim.Adam(p, betas=(0.9, -0.1)), r"betas must be two numbers in \[0, 1\)"),
    ("three betas", lambda p: optim.Adam(p, betas=(0.9, 0.99, 0.999)), "betas"),
    ("negative eps", lambda p: optim.Adam(p, eps=-1e-8), "eps must be >= 0"),
    ("negative Adam weight decay", lambda p: optim.Adam(p, weight_decay=-0.1), "weight_decay must be >= 0"),
]


@pytest.mark.parametrize("make_optimizer, message", [case[1:] for case in BAD_ARGUMENTS],
                         ids=[case[0] for case in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error_naming_them(make_optimizer, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(nn.Dense(3, 2).parameters())


def test_edge_arguments_are_accepted():
    parameters = nn.Dense(3, 2).parameters()
    optim.SGD(parameters, lr=0.0, momentum=0.0, weight_decay=0.0)
    optim.Adam(parameters, lr=0.0, betas=(0.0, 0.0), eps=0.0)


# ----- saving and loading optimizer state ------------------------------------------------------------

STATEFUL_OPTIMIZERS = {
    "sgd_nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.8),
    "adam": lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01),
}


def _tiny_model_and_batch(device):
    model = nn.Sequential(nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 3)).to(device)
    x = minicnn.tensor(np.random.default_rng(1).standard_normal((6, 4)), device=device, dtype=np.float32)
    return model, x, np.array([0, 1, 2, 0, 1, 2])


def _train(model, optimizer, x, labels, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()


@pytest.mark.parametrize("make_optimizer", STATEFUL_OPTIMIZERS.values(), ids=STATEFUL_OPTIMIZERS.keys())
def test_restored_state_continues_bitwise_identically(make_optimizer, device):
    model, x, labels = _tiny_model_and_batch(device)
    optimizer = make_optimizer(model.parameters())
    _train(model, optimizer, x, labels, 3)
    saved_weights, saved_state = model.state_dict(), optimizer.state_dict()
    _train(model, optimizer, x, labels, 3)

    twin, _, _ = _tiny_model_and_batch(device)
    twin.load_state_dict(saved_weights)
    # made with other settings: load_state_dict restores the saved ones, as torch does
    twin_optimizer = type(optimizer)(twin.parameters(), lr=123.0)
    twin_optimizer.load_state_dict(saved_state)
    _train(twin, twin_optimizer, x, labels, 3)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(to_host(twin.state_dict()[name]), to_host(array), err_msg=name)
    assert twin_optimizer.lr == optimizer.lr


@pytest.mark.parametrize("make_optimizer", STATEFUL_OPTIMIZERS.values(), ids=STATEFUL_OPTIMIZERS.keys())
def test_state_dict_copies_arrays_and_keeps_settings_json_able(make_optimizer, device):
    import json

    model, x, labels = _tiny_model_and_batch(device)
    optimizer = make_optimizer(model.parameters())
    _train(model, optimizer, x, labels, 2)
    state = optimizer.state_dict()
    slots = {name: state.pop(name) for name in optimizer.slot_names}
    assert json.loads(json.dumps(state)) == state  # everything but the arrays is JSON-able
    assert state["type"] == type(optimizer).__name__
    frozen = {name: [to_host(a).copy() for a in arrays] for name, arrays in slots.items()}
    _train(model, optimizer, x, labels, 2)  # updates the optimizer's arrays in place
    for name, arrays in slots.items():
        assert len(arrays) == len(model.parameters())
        for array, before in zip(arrays, frozen[name]):
            np.testing.assert_array_equal(to_host(array), before)
        assert all(a is not b for a, b in zip(arrays, getattr(optimizer, name)))


def test_fresh_state_holds_none_and_step_counts():
    parameters = nn.Dense(3, 2).parameters()
    assert optim.SGD(parameters, lr=0.1, momentum=0.9).state_dict() == {
        "type": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "velocities": [None, None],
    }
    assert optim.Adam(parameters, lr=0.01).state_dict() == {
        "type": "Adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
        "first_moments": [None, None], "second_moments": [None, None], "steps": [0, 0],
    }


def test_loaded_arrays_take_the_parameters_dtype_and_device(device):
    model, _, _ = _tiny_model_and_batch(device)
    optimizer = optim.Adam(model.parameters())
    state = optimizer.state_dict()
    # float64 NumPy arrays, as a checkpoint written from a float64 model on the CPU would hold
    state["first_moments"] = [np.ones(p.shape, dtype=np.float64) for p in model.parameters()]
    state["second_moments"] = [np.ones(p.shape, dtype=np.float64) for p in model.parameters()]
    state["steps"] = [4] * len(model.parameters())
    optimizer.load_state_dict(state)
    for moment in optimizer.first_moments + optimizer.second_moments:
        assert moment.dtype == np.float32
        assert minicnn.backend.device_of(moment) == device
    assert optimizer.steps == [4, 4, 4, 4]
    assert optimizer.betas == (0.9, 0.999)


def test_load_state_of_another_optimizer_type_raises():
    parameters = nn.Dense(3, 2).parameters()
    with pytest.raises(minicnn.CheckpointError, match="'SGD' optimizer, not 'Adam'"):
        optim.Adam(parameters).load_state_dict(optim.SGD(parameters, lr=0.1).state_dict())


def test_load_state_with_another_parameter_count_raises():
    state = optim.SGD(nn.Dense(3, 2).parameters(), lr=0.1, momentum=0.9).state_dict()
    optimizer = optim.SGD(nn.Dense(3, 2, bias=False).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(minicnn.CheckpointError, match="'velocities' holds state for 2 parameters, but this optimizer has 1"):
        optimizer.load_state_dict(state)


def test_load_state_with_a_wrong_shape_names_the_parameter_and_changes_nothing():
    model = nn.Sequential(nn.Dense(3, 2), nn.Dense(2, 2))
    x = minicnn.tensor(np.ones((2, 3), dtype=np.float32))
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    _train(model, optimizer, x, np.array([0, 1]), 2)
    before = optimizer.state_dict()
    state = optimizer.state_dict()
    state["lr"] = 5.0
    state["steps"] = [9, 9, 9, 9]
    state["second_moments"][2] = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(minicnn.CheckpointError, match=r"second_moments\[2\] has shape \(3, 2\) but parameter 2 has shape \(2, 2\)"):
        optimizer.load_state_dict(state)
    assert optimizer.lr == 0.1 and optimizer.steps == before["steps"]
    for name in optimizer.slot_names:
        for array, kept in zip(getattr(optimizer, name), before[name]):
            np.testing.assert_array_equal(array, kept)


def test_load_state_with_bad_step_counts_raises():
    optimizer = optim.Adam(nn.Dense(3, 2).parameters())
    state = optimizer.state_dict()
    state["steps"] = [1, -1]
    with pytest.raises(minicnn.CheckpointError, match="'steps' must hold counts >= 0"):
        optimizer.load_state_dict(state)
    del state["steps"]
    with pytest.raises(minicnn.CheckpointError, match="'steps' holds no step counts"):
        optimizer.load_state_dict(state)
