"""Data-parallel training across processes, machines and GPUs, on MPI (mpi4py) and NCCL (CuPy).

Every process ("rank") holds a whole copy of the model and trains on its own part of each
batch. One step on `size` ranks is the step of one process on the whole batch:

    comm = distributed.init()                 # under `mpiexec -n 2`: rank 0 and rank 1 of size 2
    comm.broadcast_parameters(model)          # everyone starts from rank 0's weights
    for x, y in DataLoader(..., shard=(comm.rank, comm.size)):   # each rank its part of the global batch
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        comm.allreduce_gradients(model)       # every .grad becomes the mean over the ranks
        optimizer.step()                      # the same update on every rank: weights stay identical

The mean of the ranks' mean-loss gradients is the gradient of the mean loss over the global
batch (the ranks' parts are equal, see DataLoader's `shard`), so the ranks stay bit-identical
without ever sending weights again. Metrics are summed with `comm.allreduce`.
`Trainer(model, comm=comm)` does all of this itself through a `DataParallel(comm)`
(data_parallel.py: the Trainer's side, from sharding its loaders to which rank writes).

Backends (`init(backend=...)`):
- "single": size 1, no dependency; every call is a no-op, so the same script runs alone.
- "mpi": mpi4py (the `dist` extra brings it and an MPICH). CuPy arrays go through host memory,
  unless MINICNN_CUDA_AWARE_MPI=1 says that the MPI library reads GPU memory itself.
- "nccl": cupy.cuda.nccl for CuPy arrays (NumPy arrays still travel over MPI); NCCL's unique id is
  broadcast over MPI and each rank uses the GPU numbered by its rank among the ranks of its machine.
- "auto": "nccl" when launched under MPI and every rank sees a GPU, "mpi" when launched under MPI,
  "single" otherwise.

Faults: an uncaught error on one rank must end the whole job, or the other ranks wait forever in
their next collective. `comm.abort(message)` prints the message naming the rank and ends every rank
(MPI_Abort); `abort_on_uncaught_exception(comm)` makes that the process's excepthook (the CLI
catches errors itself and calls abort). A RanksDisagreeError is met by every rank at once (each
compares what all of them sent): rank 0 alone says it, in one line, and ends the job
(`comm.abort_together`). A rank that is killed is noticed by MPICH's mpiexec, which
ends the others at once and names the dead process's PID; `describe()` lists which PID is which rank.
"""

import contextlib
import os
import socket
import sys
import time
import traceback

import numpy as np

from .. import backend
from .data_parallel import DataParallel, SingleProcess, data_parallel

BACKENDS = ("auto", "single", "mpi", "nccl")
OPS = ("sum", "mean", "max")
# Variables that MPI launchers (MPICH's hydra, Open MPI, PMIx, Slurm's srun) set in every rank.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class RanksDisagreeError(ValueError):
    """Ranks that should agree (model architecture, dataset size, batches per epoch, seed) do not.

    Every rank raises it at the same point (check_agreement compares the values all ranks sent), so one
    line from rank 0 says it for all (Communicator.abort_together)."""


def launched_under_mpi():
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def init(backend="auto"):
    """The communicator of this process: 'single', 'mpi', 'nccl' or 'auto' (see the module's docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"distributed.init: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "single" or (backend == "auto" and not launched_under_mpi()):
        return SingleCommunicator()
    mpi = _import_mpi()
    if backend == "mpi":
        return MPICommunicator(mpi.COMM_WORLD)
    if backend == "auto":
        has_gpu = backend_gpu_available()
        every_rank_has_gpu = mpi.COMM_WORLD.allreduce(int(has_gpu), op=mpi.MIN)
        if not every_rank_has_gpu:
            return MPICommunicator(mpi.COMM_WORLD)
    return NCCLCommunicator(mpi.COMM_WORLD)


def backend_gpu_available():
    """Whether this rank sees a GPU through CuPy (and CuPy has NCCL)."""
    if not backend.gpu_available():
        return False
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"minicnn.distributed: the 'mpi' and 'nccl' backends need mpi4py and an MPI library ({error}); "
            "install them with: pip install -e \".[dist]\" (mpi4py and the mpich wheel)"
        ) from None
    return MPI


def abort_on_uncaught_exception(comm):
    """Make an uncaught exception on this rank print its traceback and end every rank (not hang them).

    Sets sys.excepthook: a process-wide setting, so call it from an entry point (a script's main).
    """
    def hook(kind, value, trace):
        if isinstance(value, RanksDisagreeError):  # every rank has it: one line, from rank 0
            comm.abort_together(f"{kind.__name__}: {value}")
        traceback.print_exception(kind, value, trace)
        comm.abort(f"{kind.__name__}: {value}")

    sys.excepthook = hook


class Communicator:
    """rank, size and the model-level operations, built on four array primitives the backends define.

    A model is anything with named_parameters() and named_buffers() (an nn.Module); a list of
    Parameters also works for allreduce_gradients.
    """

    name = None

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # ----- primitives, one set per backend ------------------------------------------------------------
    def _allreduce_in_place(self, array, op):
        """array (contiguous NumPy or CuPy) becomes the elementwise `op` ('sum' or 'max') over the ranks."""
        raise NotImplementedError

    def _broadcast_in_place(self, array, root=0):
        """array (contiguous) becomes rank `root`'s array."""
        raise NotImplementedError

    def allgather_object(self, value):
        """[value of rank 0, value of rank 1, ...] on every rank (small JSON-like values)."""
        raise NotImplementedError

    def barrier(self):
        """Wait until every rank has arrived here."""
        raise NotImplementedError

    def abort(self, message, code=1):
        """Print `message` naming this rank, then end every rank of the job with exit status `code`."""
        raise NotImplementedError

    def abort_together(self, message, code=1):
        """End the job for an error every rank met at the same point (a RanksDisagreeError): rank 0 prints
        `message` once (abort) and ends every rank; the others print nothing and wait for that end."""
        if self.rank == 0:
            self.abort(message, code)
        self.barrier()  # rank 0 never comes: its abort ends this process here (a stand-in comm returns)
        raise SystemExit(code)

    # ----- metrics ----------------------------------------------------------------------------------
    def allreduce(self, array, op="sum"):
        """A new array: `op` ('sum', 'mean' or 'max') of `array` over the ranks, elementwise.

        array: a NumPy or CuPy array, or a number (then a 0-d NumPy array comes back). 'mean' of
        integers is a float64 array.
        """
        if op not in OPS:
            raise ValueError(f"allreduce: op must be one of {OPS}, got {op!r}")
        if not backend.is_array(array):
            array = np.asarray(array)
        xp = backend.get_array_module(array)
        result = xp.array(array, copy=True, order="C")
        if op == "mean" and result.dtype.kind != "f":
            result = result.astype(np.float64)
        if self.size > 1:
            self._allreduce_in_place(result.reshape(-1), "max" if op == "max" else "sum")
        if op == "mean":
            result /= self.size
        return result

    def check_agreement(self, what, value):
        """Raise RanksDisagreeError (on every rank) unless every rank passed the same `value`.

        value: a small JSON-like value (a number, a string, a list of them). `what` names it in the error.
        """
        values = self.allgather_object(value)
        for rank, other in enumerate(values):
            if other != values[0]:
                raise RanksDisagreeError(
                    f"ranks disagree on {what}: rank 0 has {_short(values[0])}, rank {rank} has {_short(other)}"
                )
        return value

    # ----- the model --------------------------------------------------------------------------------
    def broadcast_parameters(self, model):
        """Copy rank 0's parameters and buffers into every rank's model, in place.

        First checks that every rank's model has the same parameters and buffers (names, shapes,
        dtypes), raising RanksDisagreeError naming the first difference and both ranks otherwise.
        """
        arrays = [("parameter", name, parameter.data) for name, parameter in model.named_parameters()]
        arrays += [("buffer", name, array) for name, array in model.named_buffers()]
        signature = [[kind, name, list(array.shape), str(array.dtype)] for kind, name, array in arrays]
        signatures = self.allgather_object(signature)
        for rank, other in enumerate(signatures):
            if other != signatures[0]:
                raise RanksDisagreeError(_architecture_difference(signatures[0], rank, other))
        if self.size > 1:
            for group in _groups([array for _, _, array in arrays]):
                flat = _pack(group)
                self._broadcast_in_place(flat)
                _unpack_in_place(flat, group)

    def allreduce_gradients(self, model):
        """Every parameter's .grad becomes the mean of that gradient over the ranks.

        All gradients travel in one flat buffer per dtype and device: packed, one collective,
        unpacked (see benchmarks/NOTES.md for why not one call per parameter). A parameter
        without a gradient counts as zeros and gets the mean; a frozen one (requires_grad False,
        the same on every rank) is left out and keeps .grad None, so the optimizer skips it as
        in one process (a zero gradient would still move it through weight decay and Adam's count).
        """
        parameters = _trained_parameters(model)
        if self.size == 1 or not parameters:
            return
        for group in _groups([parameter.data for parameter in parameters], parameters):
            grads = [parameter.grad for parameter in group.owners]
            xp = backend.get_array_module(group.arrays[0])
            flat = xp.empty(group.total, dtype=group.arrays[0].dtype)
            offset = 0
            for array, grad in zip(group.arrays, grads):
                part = flat[offset:offset + array.size]
                part[...] = 0 if grad is None else grad.reshape(-1)
                offset += array.size
            self._allreduce_in_place(flat, "sum")
            flat /= self.size
            offset = 0
            for array, parameter in zip(group.arrays, group.owners):
                # Views into the one buffer: disjoint, so each .grad is its own array to the optimizer.
                parameter.grad = flat[offset:offset + array.size].reshape(array.shape)
                offset += array.size

    def describe(self):
        """One line per rank: its host and process id (to tell which rank a launcher's 'PID 1234' was)."""
        places = self.allgather_object([socket.gethostname(), os.getpid()])
        return "\n".join(f"rank {rank}: process {pid} on {host}" for rank, (host, pid) in enumerate(places))


class SingleCommunicator(Communicator):
    """One process, no dependency: reductions return their input, broadcasts change nothing."""

    name = "single"

    def __init__(self):
        super().__init__(rank=0, size=1)

    def _allreduce_in_place(self, array, op):
        return array

    def _broadcast_in_place(self, array, root=0):
        return array

    def allgather_object(self, value):
        return [value]

    def barrier(self):
        pass

    def abort(self, message, code=1):
        print(f"rank 0 of 1: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code)


class MPICommunicator(Communicator):
    """Ranks of an MPI communicator (mpi4py's MPI.COMM_WORLD by default)."""

    name = "mpi"

    def __init__(self, mpi_comm=None):
        MPI = _import_mpi()
        self.MPI = MPI
        self.mpi_comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        super().__init__(self.mpi_comm.Get_rank(), self.mpi_comm.Get_size())
        self.cuda_aware = os.environ.get("MINICNN_CUDA_AWARE_MPI") == "1"

    def _mpi_op(self, op):
        return {"sum": self.MPI.SUM, "max": self.MPI.MAX}[op]

    def _through_host(self, array):
        """The array MPI should read and write: `array` itself, or a host copy of a CuPy array."""
        if backend.is_cupy_array(array) and not self.cuda_aware:
            return backend.to_numpy(array)
        return array

    def _allreduce_in_place(self, array, op):
        buffer = self._through_host(array)
        if backend.is_cupy_array(buffer):
            backend.get_array_module(buffer).cuda.get_current_stream().synchronize()  # MPI reads the memory now
        self.mpi_comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self._mpi_op(op))
        if buffer is not array:
            array[...] = backend.to_device(buffer, "gpu")
        return array

    def _broadcast_in_place(self, array, root=0):
        buffer = self._through_host(array)
        if backend.is_cupy_array(buffer):
            backend.get_array_module(buffer).cuda.get_current_stream().synchronize()
        self.mpi_comm.Bcast(buffer, root=root)
        if buffer is not array:
            array[...] = backend.to_device(buffer, "gpu")
        return array

    def allgather_object(self, value):
        return self.mpi_comm.allgather(value)

    def barrier(self):
        self.mpi_comm.Barrier()

    def abort(self, message, code=1):
        print(f"rank {self.rank} of {self.size}: {message}; ending all {self.size} ranks", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # mpiexec forwards each rank's output through a proxy, and the abort tears the proxies down:
        # a moment first lets them pass on what this rank printed (without it the message was lost
        # in one of three CI runs of tests/test_distributed_mpi.py)
        time.sleep(0.5)
        self.mpi_comm.Abort(code)


class NCCLCommunicator(MPICommunicator):
    """CuPy arrays through NCCL, one GPU per rank; NumPy arrays and objects through MPI.

    The GPU is the rank's position among the ranks on its machine (its local rank), modulo the
    number of GPUs there; NCCL's unique id goes from rank 0 to the others over MPI.
    """

    name = "nccl"

    def __init__(self, mpi_comm=None):
        super().__init__(mpi_comm)
        if not backend.gpu_available():
            raise RuntimeError(f"rank {self.rank}: the 'nccl' backend needs a GPU on every rank; this rank sees none "
                               "(use --backend mpi)")
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        self.local_rank = self.mpi_comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        self.device_id = self.local_rank % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(self.device_id).use()
        unique_id = nccl.get_unique_id() if self.rank == 0 else None
        unique_id = self.mpi_comm.bcast(unique_id, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _nccl_type(self, dtype):
        types = {np.dtype(np.float16): self.nccl.NCCL_FLOAT16, np.dtype(np.float32): self.nccl.NCCL_FLOAT32,
                 np.dtype(np.float64): self.nccl.NCCL_FLOAT64, np.dtype(np.int32): self.nccl.NCCL_INT32,
                 np.dtype(np.int64): self.nccl.NCCL_INT64, np.dtype(np.uint8): self.nccl.NCCL_UINT8}
        if np.dtype(dtype) not in types:
            raise TypeError(f"NCCLCommunicator: NCCL has no type for {np.dtype(dtype)}")
        return types[np.dtype(dtype)]

    def _allreduce_in_place(self, array, op):
        if not backend.is_cupy_array(array):
            return super()._allreduce_in_place(array, op)
        nccl_op = {"sum": self.nccl.NCCL_SUM, "max": self.nccl.NCCL_MAX}[op]
        stream = self.cupy.cuda.get_current_stream()
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._nccl_type(array.dtype),
                                 nccl_op, stream.ptr)
        return array

    def _broadcast_in_place(self, array, root=0):
        if not backend.is_cupy_array(array):
            return super()._broadcast_in_place(array, root)
        stream = self.cupy.cuda.get_current_stream()
        self.nccl_comm.bcast(array.data.ptr, array.size, self._nccl_type(array.dtype), root, stream.ptr)
        return array


# ----- packing arrays into one flat buffer -------------------------------------------------------------
class _Group:
    """Arrays of one dtype and device (and the objects they belong to), packed together."""

    def __init__(self):
        self.arrays, self.owners, self.total = [], [], 0


def _groups(arrays, owners=None):
    """The arrays grouped by (dtype, device), in order; owners (e.g. Parameters) travel beside them."""
    groups = {}
    for index, array in enumerate(arrays):
        group = groups.setdefault((str(array.dtype), backend.device_of(array)), _Group())
        group.arrays.append(array)
        group.owners.append(None if owners is None else owners[index])
        group.total += array.size
    return list(groups.values())


def _pack(group):
    xp = backend.get_array_module(group.arrays[0])
    return xp.concatenate([array.reshape(-1) for array in group.arrays])


def _unpack_in_place(flat, group):
    offset = 0
    for array in group.arrays:
        array[...] = flat[offset:offset + array.size].reshape(array.shape)
        offset += array.size


def _trained_parameters(model):
    """The parameters of `model` (a Module or a list of Parameters) that are not frozen."""
    if hasattr(model, "named_parameters"):
        parameters = [parameter for _, parameter in model.named_parameters()]
    else:
        parameters = list(model)
    return [parameter for parameter in parameters if parameter.requires_grad]


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _architecture_difference(reference, rank, other):
    """Text naming the first parameter or buffer where rank `rank`'s model differs from rank 0's."""
    counts = (f"rank 0's model has {len(reference)} parameters and buffers "
              f"({sum(int(np.prod(shape)) for _, _, shape, _ in reference)} values), rank {rank}'s has {len(other)} "
              f"({sum(int(np.prod(shape)) for _, _, shape, _ in other)} values)")
    for index in range(max(len(reference), len(other))):
        mine = reference[index] if index < len(reference) else None
        theirs = other[index] if index < len(other) else None
        if mine != theirs:
            def text(entry):
                return "nothing" if entry is None else f"{entry[0]} '{entry[1]}' {tuple(entry[2])} {entry[3]}"
            return (f"ranks disagree on the model: {counts}; the first difference is entry {index}: "
                    f"rank 0 has {text(mine)}, rank {rank} has {text(theirs)}")
    return f"ranks disagree on the model: {counts}"

