"""Tests for the learning-rate schedules in minicnn.optim: PyTorch's lr sequences, state, errors."""

import json
import math

import numpy as np
import pytest

from minicnn import CheckpointError, nn, optim

EPOCHS = 15
BASE_LR = 0.1


def _optimizer(lr=BASE_LR):
    return optim.SGD(nn.Dense(3, 2).parameters(), lr=lr, momentum=0.9)


SCHEDULES = {
    "step_3_half": ("StepLR", dict(step_size=3, gamma=0.5)),
    "step_4_default_gamma": ("StepLR", dict(step_size=4)),
    "step_1": ("StepLR", dict(step_size=1, gamma=0.8)),
    "cosine_10": ("CosineAnnealingLR", dict(T_max=10)),
    # 15 epochs run past T_max = 6 twice over: the lr rises again, as in PyTorch
    "cosine_6_eta_min": ("CosineAnnealingLR", dict(T_max=6, eta_min=0.01)),
    "cosine_15": ("CosineAnnealingLR", dict(T_max=15, eta_min=0.001)),
}


def _our_lrs(name, settings, epochs=EPOCHS):
    """[lr at epoch 0, lr after 1 step, ...] as minicnn sets it on the optimizer."""
    optimizer = _optimizer()
    schedule = getattr(optim, name)(optimizer, **settings)
    lrs = [optimizer.lr]
    for _ in range(epochs):
        schedule.step()
        assert schedule.get_last_lr() == pytest.approx(optimizer.lr, rel=1e-15)
        lrs.append(optimizer.lr)
    return lrs


@pytest.mark.parametrize("name, settings", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_lr_sequence_matches_torch(name, settings):
    torch = pytest.importorskip("torch")
    parameter = torch.zeros(2, requires_grad=True)
    their_optimizer = torch.optim.SGD([parameter], lr=BASE_LR, momentum=0.9)
    theirs = getattr(torch.optim.lr_scheduler, name)(their_optimizer, **settings)
    their_lrs = [their_optimizer.param_groups[0]["lr"]]
    for _ in range(EPOCHS):
        their_optimizer.step()  # torch warns if the schedule steps before the optimizer
        theirs.step()
        their_lrs.append(their_optimizer.param_groups[0]["lr"])
    # torch computes cosine annealing recursively, minicnn in closed form: equal to rounding
    np.testing.assert_allclose(_our_lrs(name, settings), their_lrs, rtol=1e-12, atol=1e-15)


def test_step_lr_by_hand():
    assert _our_lrs("StepLR", dict(step_size=2, gamma=0.5), epochs=6) == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125], rel=1e-15
    )


def test_cosine_by_hand():
    lrs = _our_lrs("CosineAnnealingLR", dict(T_max=4, eta_min=0.02), epochs=8)
    middle = 0.02 + (0.1 - 0.02) / 2
    assert lrs[0] == pytest.approx(0.1, rel=1e-15)
    assert lrs[2] == pytest.approx(middle, rel=1e-12)
    assert lrs[4] == pytest.approx(0.02, rel=1e-12)  # the floor at T_max
    assert lrs[6] == pytest.approx(middle, rel=1e-12)  # rising again past T_max
    assert lrs[8] == pytest.approx(0.1, rel=1e-12)
    assert lrs[1] == pytest.approx(0.02 + 0.08 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)


@pytest.mark.parametrize("name, settings", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_construction_sets_epoch_zero(name, settings):
    optimizer = _optimizer(lr=0.3)
    schedule = getattr(optim, name)(optimizer, **settings)
    assert schedule.last_epoch == 0
    assert schedule.base_lr == 0.3
    assert optimizer.lr == pytest.approx(0.3, rel=1e-15)
    assert isinstance(schedule.get_last_lr(), float)
    schedule.step()
    assert schedule.last_epoch == 1


@pytest.mark.parametrize("name, settings", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_state_round_trip_continues_the_sequence(name, settings):
    first_optimizer = _optimizer()
    first = getattr(optim, name)(first_optimizer, **settings)
    for _ in range(5):
        first.step()
    state = json.loads(json.dumps(first.state_dict()))  # JSON-able, and survives the trip
    assert state["type"] == name and state["last_epoch"] == 5 and state["base_lr"] == BASE_LR
    assert all(state[key] == value for key, value in settings.items())

    # a second schedule made with another lr and settings takes everything from the state
    second_optimizer = _optimizer(lr=7.0)
    other_settings = dict(step_size=9, gamma=0.9) if name == "StepLR" else dict(T_max=99, eta_min=0.5)
    second = getattr(optim, name)(second_optimizer, **other_settings)
    second.load_state_dict(state)
    assert second_optimizer.lr == first_optimizer.lr
    assert second.last_epoch == 5
    for _ in range(6):
        first.step()
        second.step()
        assert second_optimizer.lr == first_optimizer.lr
        assert second.get_last_lr() == first.get_last_lr()


def test_load_state_of_another_schedule_type_raises():
    step = optim.StepLR(_optimizer(), step_size=2)
    cosine = optim.CosineAnnealingLR(_optimizer(), T_max=5)
    with pytest.raises(CheckpointError, match="'StepLR' schedule, not 'CosineAnnealingLR'"):
        cosine.load_state_dict(step.state_dict())


def test_load_state_with_missing_entries_raises_and_changes_nothing():
    optimizer = _optimizer()
    schedule = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    schedule.step()
    schedule.step()
    state = schedule.state_dict()
    del state["gamma"]
    with pytest.raises(CheckpointError, match=r"lacks \['gamma'\]"):
        schedule.load_state_dict(state)
    assert schedule.last_epoch == 2 and optimizer.lr == pytest.approx(0.05)


@pytest.mark.parametrize(
    "make",
    [
        lambda o: optim.StepLR(o, step_size=0),
        lambda o: optim.StepLR(o, step_size=1.5),
        lambda o: optim.CosineAnnealingLR(o, T_max=0),
    ],
    ids=["step_size_0", "step_size_float", "t_max_0"],
)
def test_bad_settings_raise_value_error(make):
    with pytest.raises(ValueError, match="step_size|T_max"):
        make(_optimizer())


def test_schedule_needs_an_optimizer():
    with pytest.raises(TypeError, match="optim.Optimizer"):
        optim.StepLR([0.1], step_size=2)
