"""minicnn.distributed in one process: the 'single' backend, the gradient packing, the architecture check,
the DataLoader's shards and the Trainer's DataParallel (with made-up ranks). The runs under mpiexec are in
test_distributed_mpi.py."""

import numpy as np
import pytest

from minicnn import distributed, nn, optim
from minicnn.data import DataLoader
from minicnn.data.loader import shard_bounds
from minicnn.distributed import DataParallel, RanksDisagreeError, SingleCommunicator, SingleProcess
from minicnn.training import Trainer


def small_model():
    return nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 4 * 4, 3))


# ----- shards: every sample once per epoch, the same number of batches on every rank -----------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_the_shards_cover_every_sample_once_in_equal_batch_counts(size):
    for num_samples in [4, 5, 7, 31, 64, 65, 66, 67, 130]:
        for batch_size in [1, 3, 16]:
            shards = [shard_bounds(num_samples, batch_size, rank, size) for rank in range(size)]
            assert len({len(bounds) for bounds in shards}) == 1  # no rank waits on a collective the others skip
            served = sorted(index for bounds in shards for start, stop in bounds for index in range(start, stop))
            assert served == list(range(num_samples)), (num_samples, batch_size)
            for step in range(len(shards[0])):
                lengths = [shards[rank][step][1] - shards[rank][step][0] for rank in range(size)]
                assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1


def test_drop_last_leaves_out_the_short_last_global_batch_on_every_rank():
    shards = [shard_bounds(70, 8, rank, 4, drop_last=True) for rank in range(4)]
    assert [len(bounds) for bounds in shards] == [2, 2, 2, 2]
    served = sorted(index for bounds in shards for start, stop in bounds for index in range(start, stop))
    assert served == list(range(64))


def test_a_short_last_global_batch_joins_the_one_before():
    # 66 samples, 4 ranks of 8: global batches of 32, 32 and 2; the 2 (fewer than 4 ranks) join the second.
    assert shard_bounds(66, 8, 0, 4) == [(0, 8), (32, 41)]
    assert shard_bounds(66, 8, 3, 4) == [(24, 32), (58, 66)]


@pytest.mark.parametrize("size", [2, 3])
def test_sharded_loaders_serve_together_what_one_loader_with_the_global_batch_serves(size):
    images = np.arange(23, dtype=np.float32).reshape(23, 1)
    labels = np.arange(23)
    whole = DataLoader(images, labels, batch_size=2 * size, shuffle=True, seed=5)
    shards = [DataLoader(images, labels, batch_size=2, shuffle=True, seed=5, shard=(rank, size))
              for rank in range(size)]
    for epoch in range(2):
        parts = [[y.data for _, y in loader.batches(epoch)] for loader in shards]
        joined = [np.concatenate(step) for step in zip(*parts)]
        expected = [y.data for _, y in whole.batches(epoch)]
        assert len(joined) == len(expected) == len(shards[0])
        for mine, theirs in zip(joined, expected):
            np.testing.assert_array_equal(mine, theirs)


def test_shard_arguments_are_checked():
    images = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="rank 2 of size 2"):
        DataLoader(images, shard=(2, 2))
    with pytest.raises(ValueError, match="shard must be"):
        DataLoader(images, shard=(0,))
    with pytest.raises(ValueError, match="3 samples cannot be shared among 4"):
        DataLoader(images, shard=(0, 4))


# ----- the single backend --------------------------------------------------------------------------------------

def test_init_outside_a_launcher_is_a_single_process(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    comm = distributed.init()
    assert isinstance(comm, SingleCommunicator) and (comm.rank, comm.size) == (0, 1)
    assert isinstance(distributed.init("single"), SingleCommunicator)
    with pytest.raises(ValueError, match="backend must be one of"):
        distributed.init("gloo")


def test_the_single_backend_changes_nothing():
    comm = SingleCommunicator()
    model = small_model()
    before = model.state_dict()
    comm.broadcast_parameters(model)
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])
    for parameter in model.parameters():
        parameter.grad = np.full_like(parameter.data, 2.0)
    comm.allreduce_gradients(model)
    assert all((parameter.grad == 2.0).all() for parameter in model.parameters())
    values = np.array([1, 5, 3])
    for op in distributed.OPS:
        result = comm.allreduce(values, op=op)
        np.testing.assert_array_equal(result, values)
        assert result is not values
    assert comm.allreduce(2.5, op="mean") == 2.5
    assert comm.allreduce(values, op="mean").dtype == np.float64
    with pytest.raises(ValueError, match="op must be one of"):
        comm.allreduce(values, op="min")
    comm.barrier()
    assert comm.check_agreement("anything", [1, 2]) == [1, 2]


# ----- packing and checks, with a made-up second rank ------------------------------------------------------------

class TwoRanksOnePeer(SingleCommunicator):
    """Rank 0 of 2, whose peer's arrays and objects are given: its collectives combine with them here."""

    def __init__(self, peer_flat=None, peer_object=None):
        super().__init__()
        self.size = 2
        self.peer_flat, self.peer_object, self.collectives = peer_flat, peer_object, 0

    def _allreduce_in_place(self, array, op):
        self.collectives += 1
        array += self.peer_flat.astype(array.dtype)
        return array

    def allgather_object(self, value):
        return [value, value if self.peer_object is None else self.peer_object]


def test_gradients_travel_in_one_flat_buffer_and_come_back_as_the_mean():
    model = small_model().to(dtype=np.float64)
    parameters = model.parameters()
    rng = np.random.default_rng(0)
    mine = [rng.standard_normal(parameter.shape) for parameter in parameters]
    theirs = [rng.standard_normal(parameter.shape) for parameter in parameters]
    for parameter, grad in zip(parameters, mine):
        parameter.grad = grad.copy()
    parameters[1].grad = None  # no gradient counts as zeros
    comm = TwoRanksOnePeer(peer_flat=np.concatenate([grad.ravel() for grad in theirs]))
    comm.allreduce_gradients(model)
    assert comm.collectives == 1
    mine[1][...] = 0
    for parameter, a, b in zip(parameters, mine, theirs):
        assert parameter.grad.shape == parameter.shape
        np.testing.assert_array_equal(parameter.grad, (a + b) / 2)


def test_a_different_model_on_another_rank_is_named_with_both_sides():
    model = small_model()
    other = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 4 * 4, 4))
    arrays = [["parameter", name, list(p.shape), str(p.dtype)] for name, p in other.named_parameters()]
    comm = TwoRanksOnePeer(peer_object=arrays)
    with pytest.raises(RanksDisagreeError, match=r"rank 0 has parameter '3.weight' \(32, 3\) float32, "
                                                  r"rank 1 has parameter '3.weight' \(32, 4\) float32"):
        comm.broadcast_parameters(model)
    with pytest.raises(RanksDisagreeError, match="rank 0 has 120, rank 1 has 119"):
        TwoRanksOnePeer(peer_object=119).check_agreement("the number of training images", 120)


@pytest.mark.parametrize("make_optimizer", [lambda params: optim.SGD(params, 0.1, momentum=0.9, weight_decay=0.01),
                                            lambda params: optim.Adam(params, 0.1, weight_decay=0.01)],
                         ids=["sgd", "adam"])
def test_frozen_parameters_stay_out_of_the_reduction_and_the_step(make_optimizer):
    # Fine-tuning a frozen backbone on two ranks: the frozen weights keep .grad None, as in one process,
    # so weight decay does not move them and Adam does not count a step for them.
    model = small_model().to(dtype=np.float64)
    model[0].requires_grad_(False)
    frozen = [parameter.data.copy() for parameter in model[0].parameters()]
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in trained:
        parameter.grad = np.ones(parameter.shape)
    comm = TwoRanksOnePeer(peer_flat=np.full(sum(parameter.data.size for parameter in trained), 3.0))
    optimizer = make_optimizer(model.parameters())
    comm.allreduce_gradients(model)
    optimizer.step()
    assert all(parameter.grad is None for parameter in model[0].parameters())
    assert all((parameter.grad == 2.0).all() for parameter in trained)
    for parameter, before in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(parameter.data, before)


# ----- the Trainer's side: DataParallel, with a made-up second rank ---------------------------------------------

class MirroredRanks(SingleCommunicator):
    """Rank `rank` of 2 whose peer holds and does exactly what this process does (its twin)."""

    def __init__(self, rank=0, peer_requests=None):
        super().__init__()
        self.rank, self.size, self.peer_requests = rank, 2, peer_requests

    def _allreduce_in_place(self, array, op):
        if op == "sum":
            array += array  # the twin's equal part: exact, so the mean is this rank's own value
        elif self.peer_requests is not None:
            array[...] = np.maximum(array, self.peer_requests)
        return array

    def allgather_object(self, value):
        return [value, value]


def test_trainer_picks_one_process_or_data_parallel_from_comm():
    assert isinstance(distributed.data_parallel(None), SingleProcess)
    assert isinstance(distributed.data_parallel(SingleCommunicator()), SingleProcess)
    assert not isinstance(distributed.data_parallel(SingleCommunicator()), DataParallel)
    assert isinstance(Trainer(small_model(), comm=MirroredRanks()).parallel, DataParallel)


def test_a_stop_request_on_any_rank_stops_every_rank():
    assert DataParallel(MirroredRanks(peer_requests=2)).agreed_stop(None) == "SIGTERM"  # the other rank's request
    assert DataParallel(MirroredRanks(peer_requests=0)).agreed_stop("SIGINT") == "SIGINT"
    assert DataParallel(MirroredRanks(peer_requests=0)).agreed_stop(None) is None
    assert DataParallel(MirroredRanks()).total((1.5, 3, 4)) == (3.0, 6, 8)
    assert DataParallel(MirroredRanks(rank=1)).resumed_sums((1.5, 3, 4)) is None  # rank 0 carries them on


def _bars():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    return images, rng.integers(0, 3, 40)


def test_two_twin_ranks_train_as_one_process_on_its_shard(tmp_path, capsys):
    images, labels = _bars()
    fit = dict(epochs=2, batch_size=4, seed=1, verbose=2)
    alone = Trainer(small_model(), "sgd", lr=0.1)
    DataParallel(MirroredRanks()).start(alone.model, DataLoader(images, labels, 4, shard=(0, 2)))  # no-op checks
    state = alone.model.state_dict()
    history = alone.fit(DataLoader(images, labels, 4, shuffle=True, seed=1, shard=(0, 2)), **fit)
    result = alone.evaluate(DataLoader(images, labels, 8, shard=(0, 2)))
    alone_said = capsys.readouterr().out

    twin = Trainer(small_model(), "sgd", lr=0.1, comm=MirroredRanks())
    twin.model.load_state_dict(state)
    twin_history = twin.fit(images, labels, checkpoint_dir=tmp_path / "rank0", **fit)
    twin_result = twin.evaluate(images, labels, batch_size=8)
    assert capsys.readouterr().out.count("epoch 2/2") == alone_said.count("epoch 2/2") == 1
    for key in ("loss", "accuracy"):
        assert twin_history[key] == history[key]
    assert twin_result["loss"] == result["loss"] and twin_result["accuracy"] == result["accuracy"]
    np.testing.assert_array_equal(twin_result["confusion_matrix"], 2 * result["confusion_matrix"])
    for name, array in alone.model.state_dict().items():
        np.testing.assert_array_equal(twin.model.state_dict()[name], array, err_msg=name)
    assert sorted(path.name for path in (tmp_path / "rank0").iterdir()) == ["best.npz", "last.npz"]

    other = Trainer(small_model(), "sgd", lr=0.1, comm=MirroredRanks(rank=1))
    other.fit(images, labels, checkpoint_dir=tmp_path / "rank1", **fit)
    assert not (tmp_path / "rank1").exists() and capsys.readouterr().out == ""  # rank 0 alone writes and prints


def test_data_parallel_refuses_a_loader_that_serves_another_shard():
    images, labels = _bars()
    trainer = Trainer(small_model(), comm=MirroredRanks(rank=1))
    with pytest.raises(SystemExit):  # on several ranks an error ends every rank (here: the made-up abort)
        trainer.fit(DataLoader(images, labels, 4, shard=(0, 2)), verbose=0)


# ----- ranks that disagree: refused in one line, said once ---------------------------------------------------------

class RanksWithAnotherSeed(MirroredRanks):
    """Rank `rank` of 2 whose twin was started with another --seed: it sends `peer_seed` where this rank sends
    `seed` (and the same as this rank for everything else)."""

    def __init__(self, rank, seed, peer_seed):
        super().__init__(rank)
        self.seed, self.peer_seed = seed, peer_seed

    def allgather_object(self, value):
        theirs = self.peer_seed if value == self.seed else value
        return [value, theirs] if self.rank == 0 else [theirs, value]


@pytest.mark.parametrize("rank", [0, 1])
def test_another_seed_on_one_rank_is_refused_in_one_line_said_by_rank_0_alone(rank, capsys):
    images, labels = _bars()
    comm = RanksWithAnotherSeed(rank, seed=12345, peer_seed=54321)
    trainer = Trainer(small_model(), comm=comm)
    with pytest.raises(SystemExit) as exit_info:  # the stand-in comm's abort: the job ends, status 1
        trainer.fit(DataLoader(images, labels, 4, shuffle=True, seed=12345, shard=(rank, 2)), verbose=0)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    if rank == 0:
        assert error.count("\n") == 1 and "Traceback" not in error, error
        assert ("RanksDisagreeError: ranks disagree on the data order's seed (the DataLoader's seed): "
                "rank 0 has 12345, rank 1 has 54321") in error
    else:
        assert error == ""  # rank 0 says it for both


def test_a_disagreement_met_by_every_rank_ends_the_job_once_and_other_errors_still_name_their_rank(capsys):
    with pytest.raises(SystemExit):
        with DataParallel(MirroredRanks(rank=1)).failing_together():
            raise RanksDisagreeError("ranks disagree on the batches per epoch: rank 0 has 3, rank 1 has 4")
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        with DataParallel(MirroredRanks(rank=1)).failing_together():
            raise MemoryError("pretend the batch did not fit")
    error = capsys.readouterr().err
    assert "Traceback" in error and "MemoryError: pretend the batch did not fit" in error  # only this rank knows
