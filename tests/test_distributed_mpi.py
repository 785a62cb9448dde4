"""minicnn.distributed under a real `mpiexec -n 2` (the dist extra: mpi4py and the mpich wheel).

Every test here starts processes, so all are slow; they are skipped, saying why, where mpi4py or
mpiexec is missing. The NCCL test needs a GPU per rank.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from minicnn import backend
from minicnn.checkpoint import load_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _mpiexec():
    """The mpiexec beside this Python (where the mpich wheel puts it), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@pytest.fixture(scope="module")
def mpiexec():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[dist]')")
    command = _mpiexec()
    if command is None:
        pytest.skip("no mpiexec beside this Python or on PATH (pip install -e '.[dist]' brings MPICH's)")
    return command


def _run(mpiexec, script, *arguments, ranks=2, timeout=120, tmp_path=None):
    """Run a Python script under `mpiexec -n ranks`; returns the CompletedProcess."""
    file = tmp_path / "script.py"
    file.write_text(textwrap.dedent(script))
    return subprocess.run([mpiexec, "-n", str(ranks), sys.executable, str(file), *map(str, arguments)],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPOSITORY)})


# ----- equivalence: 2 ranks with half a batch each = 1 process with the whole batch ---------------------------

_EQUIVALENCE = """
import json, sys
import numpy as np
from minicnn import backend, distributed, nn, optim
from minicnn import functional as F
from minicnn.tensor import Tensor
from minicnn.training import Trainer

comm = distributed.init("mpi")
distributed.abort_on_uncaught_exception(comm)


def build(dtype):
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(4 * 3 * 3, 3))
    return model.to(dtype=dtype)


results = {}
for dtype in (np.float64, np.float32):
    for name, make in (("sgd", lambda p: optim.SGD(p, lr=0.05, momentum=0.9)), ("adam", lambda p: optim.Adam(p, lr=0.01))):
        backend.manual_seed(comm.rank + 1)  # different weights on each rank: broadcast_parameters fixes that
        model = build(dtype)
        comm.broadcast_parameters(model)
        reference = build(dtype)  # the single process, run by every rank on the whole batch
        reference.load_state_dict(model.state_dict())
        optimizer, reference_optimizer = make(model.parameters()), make(reference.parameters())
        rng = np.random.default_rng(7)
        worst, identical = 0.0, True
        for step in range(5):
            x = rng.standard_normal((16, 1, 8, 8)).astype(dtype)
            y = rng.integers(0, 3, 16)
            half = slice(8 * comm.rank, 8 * comm.rank + 8)
            loss = F.cross_entropy(model(Tensor(x[half])), Tensor(y[half]))
            optimizer.zero_grad()
            loss.backward()
            comm.allreduce_gradients(model)
            optimizer.step()
            loss = F.cross_entropy(reference(Tensor(x)), Tensor(y))
            reference_optimizer.zero_grad()
            loss.backward()
            reference_optimizer.step()
            weights = np.concatenate([p.data.ravel() for p in model.parameters()])
            identical &= len(set(comm.allgather_object(weights.tobytes()))) == 1
            for p, q in zip(model.parameters(), reference.parameters()):
                worst = max(worst, float(np.linalg.norm(p.data - q.data) / np.linalg.norm(q.data)))
        results[f"{np.dtype(dtype).name} {name}"] = {"worst_relative": worst, "identical": bool(identical)}

# Evaluation reduced over the ranks equals one process evaluating everything (37 images: uneven shards).
model = build(np.float32)
comm.broadcast_parameters(model)
rng = np.random.default_rng(3)
images, labels = rng.standard_normal((37, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 37)
shared = Trainer(model, comm=comm).evaluate(images, labels, batch_size=4)
alone = Trainer(model).evaluate(images, labels, batch_size=4)
results["evaluate"] = {
    "confusion_equal": bool((shared["confusion_matrix"] == alone["confusion_matrix"]).all()),
    "count": int(shared["confusion_matrix"].sum()), "accuracy": [shared["accuracy"], alone["accuracy"]],
    "loss": [shared["loss"], alone["loss"]],
}
if comm.rank == 0:
    with open(sys.argv[1], "w") as file:
        json.dump(results, file)
"""


def test_two_ranks_with_half_a_batch_each_take_the_steps_of_one_process_with_the_whole_batch(mpiexec, tmp_path):
    result = _run(mpiexec, _EQUIVALENCE, tmp_path / "results.json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    for key, tolerance in (("float64 sgd", 1e-12), ("float64 adam", 1e-12), ("float32 sgd", 1e-6),
                           ("float32 adam", 1e-6)):
        assert results[key]["identical"], f"{key}: the ranks' weights differ after a step"
        assert results[key]["worst_relative"] <= tolerance, (key, results[key])
    evaluation = results["evaluate"]
    assert evaluation["confusion_equal"] and evaluation["count"] == 37
    assert evaluation["accuracy"][0] == evaluation["accuracy"][1]
    assert evaluation["loss"][0] == pytest.approx(evaluation["loss"][1], rel=1e-6)


# ----- ranks that disagree, and a rank that fails -----------------------------------------------------------------

_DISAGREEING = """
import sys
import numpy as np
from minicnn import distributed, nn
from minicnn.training import Trainer

comm = distributed.init("mpi")
distributed.abort_on_uncaught_exception(comm)
if sys.argv[1] == "model":
    width = 3 if comm.rank == 0 else 4
    comm.broadcast_parameters(nn.Sequential(nn.Flatten(), nn.Dense(16, width)))
else:
    model = nn.Sequential(nn.Flatten(), nn.Dense(16, 3))
    count = 40 if comm.rank == 0 else 39
    Trainer(model, comm=comm).fit(np.zeros((count, 4, 4), np.float32), np.zeros(count, np.int64), batch_size=4,
                                  verbose=0)
"""


@pytest.mark.parametrize("what, message", [
    ("model", "rank 0 has parameter '1.weight' (16, 3) float32, rank 1 has parameter '1.weight' (16, 4) float32"),
    ("data", "ranks disagree on the number of training images: rank 0 has 40, rank 1 has 39"),
])
def test_ranks_that_disagree_stop_with_an_error_naming_both_sides(mpiexec, tmp_path, what, message):
    result = _run(mpiexec, _DISAGREEING, what, tmp_path=tmp_path, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr and "ending all 2 ranks" in result.stderr
    # Every rank met it at once: rank 0 says it, in one line, once.
    assert result.stderr.count(message) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "rank 0 of 2: RanksDisagreeError: " in result.stderr


_FAILING_IN_FIT = """
import numpy as np
from minicnn import distributed, nn
from minicnn.training import Trainer

comm = distributed.init("mpi")  # no excepthook: a library user's script
model = nn.Sequential(nn.Flatten(), nn.Dense(16, 3))


class FailOnRankOne:
    def on_batch_end(self, trainer, epoch, step):
        if comm.rank == 1 and step == 3:
            raise MemoryError("pretend the batch did not fit")


Trainer(model, comm=comm).fit(np.zeros((64, 4, 4), np.float32), np.zeros(64, np.int64), batch_size=4, epochs=3,
                              verbose=0, callbacks=[FailOnRankOne()])
"""


def test_an_exception_in_fit_on_one_rank_ends_every_rank(mpiexec, tmp_path):
    result = _run(mpiexec, _FAILING_IN_FIT, tmp_path=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "rank 1 of 2: MemoryError: pretend the batch did not fit" in result.stderr and "ending all 2 ranks" in result.stderr


_FAILING = """
import time
import numpy as np
from minicnn import distributed

comm = distributed.init("mpi")
distributed.abort_on_uncaught_exception(comm)
for step in range(1000000):
    if comm.rank == 1 and step == 20:
        raise MemoryError("pretend the batch did not fit")
    comm.allreduce(np.ones(10))
"""


def test_an_exception_on_one_rank_ends_the_job_with_a_message_naming_that_rank(mpiexec, tmp_path):
    started = time.monotonic()
    result = _run(mpiexec, _FAILING, tmp_path=tmp_path, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert "rank 1 of 2: MemoryError: pretend the batch did not fit; ending all 2 ranks" in result.stderr


# ----- minicnn train --distributed: files, kill, resume ---------------------------------------------------------

# The command line with MNIST cut to 1280 training and 300 test images, so that a run takes seconds.
_SMALL_MNIST_CLI = """
import sys
from minicnn import cli, recipe

def small(loader, sizes):
    def load(split):
        images, labels = loader(split)
        return images[: sizes[split]], labels[: sizes[split]]
    return load

recipe.LOADERS["mnist"] = small(recipe.LOADERS["mnist"], {"train": 1280, "test": 300})
sys.exit(cli.main(sys.argv[1:]))
"""
TRAIN = ["train", "--distributed", "--backend", "mpi", "--limit", "1280", "--validation", "128",
         "--batch-size", "16", "--quiet", "--seed", "3"]


def _cli(tmp_path):
    script = tmp_path / "small_mnist_cli.py"
    script.write_text(_SMALL_MNIST_CLI)
    return script


def _train(mpiexec, tmp_path, *arguments, ranks=2):
    return subprocess.run([mpiexec, "-n", str(ranks), sys.executable, str(_cli(tmp_path)), *TRAIN, *arguments],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPOSITORY)})


def _same_results(first, second):
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (first, second))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert a["history"][key] == b["history"][key], key
    assert a["test_accuracy"] == b["test_accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    weights = [load_checkpoint(folder / "last.npz").model.state_dict() for folder in (first, second)]
    for name, array in weights[0].items():
        np.testing.assert_array_equal(array, weights[1][name], err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(mpiexec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist") / "uninterrupted"
    result = _train(mpiexec, folder.parent, "--epochs", "2", "--out", folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_a_two_rank_run_writes_one_set_of_files_and_rank_0_alone_prints(uninterrupted):
    folder, result = uninterrupted
    assert sorted(path.name for path in folder.iterdir()) == ["best.npz", "last.npz", "metrics.json"]
    assert result.stdout.count("training cnn on mnist") == 1
    assert "batch 16 per process x 2 processes (mpi)" in result.stdout
    assert result.stdout.count("epoch 2/2") == 1 and result.stdout.count("last.npz") == 1
    summary = json.loads((folder / "metrics.json").read_text())
    assert sum(map(sum, summary["confusion_matrix"])) == 300  # every test image once, over both ranks
    assert sum(map(sum, summary["best"]["confusion_matrix"])) == 300  # best.npz's weights too
    assert len(summary["history"]["loss"]) == 2


def test_another_seed_on_one_rank_is_refused_in_one_line_said_once(mpiexec, tmp_path):
    script = str(_cli(tmp_path))
    command = [mpiexec, "-n", "1", sys.executable, script, *TRAIN, "--seed", "3", "--out", str(tmp_path / "run"),
               ":", "-n", "1", sys.executable, script, *TRAIN, "--seed", "4", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert result.returncode != 0
    message = "ranks disagree on the data order's seed (the DataLoader's seed): rank 0 has 3, " \
              "rank 1 has 4"
    assert result.stderr.count(message) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "run" / "last.npz").exists()


def test_killing_a_rank_ends_the_job_and_a_resume_gives_the_uninterrupted_result(mpiexec, uninterrupted, tmp_path):
    folder = tmp_path / "killed"
    command = [mpiexec, "-n", "2", sys.executable, str(_cli(tmp_path)), *TRAIN, "--epochs", "2", "--out", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    lines = [process.stdout.readline() for _ in range(3)]  # "2 processes (mpi):", then each rank's process id
    assert lines[2].startswith("rank 1: process "), lines
    rank_1 = int(lines[2].split()[3])
    deadline = time.monotonic() + 240
    while not (folder / "last.npz").exists():  # written when epoch 1 is complete
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.05)
    os.kill(rank_1, signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and time.monotonic() - killed < 60
    assert f"PID {rank_1}" in stdout + stderr  # MPICH's mpiexec names the dead process; the first lines said it is rank 1
    loaded = load_checkpoint(folder / "last.npz")  # the last complete checkpoint, in this single process
    assert loaded.state["epoch"] in (1, 2)
    resumed = _train(mpiexec, tmp_path, "--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    _same_results(uninterrupted[0], folder)


def test_ctrl_c_stops_every_rank_after_the_same_step_and_a_resume_gives_the_uninterrupted_result(
        mpiexec, uninterrupted, tmp_path):
    folder = tmp_path / "stopped"
    command = [mpiexec, "-n", "2", sys.executable, str(_cli(tmp_path)), *TRAIN, "--epochs", "2", "--out", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    lines = [process.stdout.readline() for _ in range(4)]
    assert lines[3].startswith("training cnn"), lines
    time.sleep(3)
    process.send_signal(signal.SIGINT)  # mpiexec passes it to both ranks
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.count("SIGINT: saved") == 1  # rank 0 alone saved, and said so
    resumed = _train(mpiexec, tmp_path, "--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    _same_results(uninterrupted[0], folder)


def test_a_distributed_checkpoint_resumes_in_one_process_and_a_single_one_under_mpiexec(mpiexec, uninterrupted,
                                                                                          tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(uninterrupted[0], alone)
    result = subprocess.run([sys.executable, str(_cli(tmp_path)), "train", "--resume", str(alone), "--epochs", "3",
                             "--quiet"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert result.returncode == 0, result.stderr
    assert len(json.loads((alone / "metrics.json").read_text())["history"]["loss"]) == 3
    result = _train(mpiexec, tmp_path, "--resume", alone, "--epochs", "4")  # and back to two ranks
    assert result.returncode == 0, result.stderr
    assert len(json.loads((alone / "metrics.json").read_text())["history"]["loss"]) == 4


# ----- NCCL: one GPU per rank ---------------------------------------------------------------------------------

_NCCL = """
import numpy as np
from minicnn import backend, distributed

comm = distributed.init("nccl")
distributed.abort_on_uncaught_exception(comm)
xp = backend.array_module_for("gpu")
total = comm.allreduce(xp.arange(4, dtype=xp.float32) * (comm.rank + 1))
assert backend.is_cupy_array(total)
expected = np.arange(4) * sum(range(1, comm.size + 1))
assert np.array_equal(backend.to_numpy(total), expected), total
assert float(comm.allreduce(np.float64(comm.rank), op="max")) == comm.size - 1  # NumPy goes over MPI
print("nccl ok", comm.size)
"""


@pytest.mark.gpu
def test_nccl_sums_gpu_arrays_with_one_gpu_per_rank(mpiexec, tmp_path):
    if not backend.gpu_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    pytest.importorskip("cupy.cuda.nccl", reason="CuPy was built without NCCL")
    result = _run(mpiexec, _NCCL, ranks=1, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nccl ok 1" in result.stdout


_MPI_GPU = """
import numpy as np
from minicnn import backend, distributed, nn

comm = distributed.init("mpi")
distributed.abort_on_uncaught_exception(comm)
backend.set_default_device("gpu")
model = nn.Sequential(nn.Flatten(), nn.Dense(4, 3))
for parameter in model.parameters():
    parameter.grad = parameter.data * 0 + (comm.rank + 1)
comm.allreduce_gradients(model)  # CuPy gradients through host memory (the MPI is not CUDA-aware)
for parameter in model.parameters():
    assert backend.is_cupy_array(parameter.grad)
    assert np.allclose(backend.to_numpy(parameter.grad), 1.5), parameter.grad
print("mpi gpu ok")
"""


@pytest.mark.gpu
def test_mpi_averages_gpu_gradients_through_host_memory(mpiexec, tmp_path):
    if not backend.gpu_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    result = _run(mpiexec, _MPI_GPU, ranks=2, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mpi gpu ok" in result.stdout
