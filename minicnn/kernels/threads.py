"""A small thread pool for the memory-bound passes: copies and elementwise loops split along one axis.

NumPy lets go of the GIL inside a copy or a ufunc loop over a large array, so
two Python threads copying two halves of an array run on two cores at once.
The fast paths use `for_each_part(work, count, elements)`: it cuts range(count)
(batch items, channels, ...) into one part per thread and calls work(start, stop)
on each, the caller's thread taking the first part. Each part writes its own
slice of the output, so nothing is summed in another order: a threaded result
equals the one-thread result bit for bit.

How many threads: `num_threads()`, which is MINICNN_NUM_THREADS when set, else 1;
`set_num_threads(n)` changes it, and `set_num_threads("cores")` takes the cores this
process may run on (os.sched_getaffinity). One is the default because it measured
fastest on the project's 2-core machine: NumPy's BLAS already runs its products on
every core, and its threads spin between products, so a second pool thread there
competed with them and made a `cnn` step 7-8% and a `lenet` step 9-35% slower than
one thread (benchmarks/NOTES.md, "Threads, measured on a quiet machine"). A
machine with cores to spare beyond the BLAS pool is where more threads can pay. A pass is split only when
each part gets at least `min_elements()` elements (64Ki by default,
`set_min_elements`): a hand-over to the pool costs tens of microseconds, the
time to copy about that many floats. NumPy arrays only; CuPy arrays run on one
host thread, their device does the rest.

Sharing the cores with BLAS: by default the BLAS pool is left as it is, and the
matrix products run on it between the threaded passes. `share_cores_with_blas()`,
a process-wide setting for entry points, limits BLAS to one thread (threadpoolctl,
the `threads` extra) and cuts the convolutions' products over this pool instead,
one BLAS call per part (`matmul`). OpenBLAS's threads spin between calls and wait
for each other at barriers: on a machine with more runnable threads than cores a
step then ran 3-10 times slower (benchmarks/NOTES.md, "Threads in the
memory-bound passes"); the pool's parts wait by sleeping. `blas_threads()`
reports the BLAS pool.
"""

import concurrent.futures
import contextlib
import os
import threading

from ..backend import get_array_module, is_cupy_array

DEFAULT_MIN_ELEMENTS = 1 << 16


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def _from_environment():
    text = os.environ.get("MINICNN_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"MINICNN_NUM_THREADS must be a whole number >= 1, got {text!r}") from None
    if count < 1:
        raise ValueError(f"MINICNN_NUM_THREADS must be a whole number >= 1, got {text!r}")
    return count


_num_threads = None  # None: follow MINICNN_NUM_THREADS (else 1), read on first use
_min_elements = DEFAULT_MIN_ELEMENTS
_pool, _pool_workers = None, 0
_pool_lock = threading.Lock()
_inside_pool = threading.local()  # a part that starts parts of its own runs them itself: no pool deadlock


def num_threads():
    """The threads a memory-bound pass may use: set_num_threads's n, else MINICNN_NUM_THREADS, else 1."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _from_environment() or 1
    return _num_threads


def set_num_threads(count):
    """Use `count` threads (>= 1, or "cores": as many as this process may run on) in the memory-bound
    passes; None goes back to MINICNN_NUM_THREADS, or 1.

    A process-wide setting, like torch.set_num_threads; it leaves the BLAS pool alone.
    """
    global _num_threads
    if count == "cores":
        count = _cores()
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"set_num_threads: expected a whole number >= 1 or None, got {count!r}")
    _num_threads = count  # the pool stays; a pass uses at most num_threads() - 1 of its workers


def min_elements():
    """The fewest elements a part of a split pass gets; smaller passes run on one thread."""
    return _min_elements


def set_min_elements(count):
    """Split a pass only where each part gets at least `count` elements (>= 1); None restores the default."""
    global _min_elements
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"set_min_elements: expected a whole number >= 1 or None, got {count!r}")
    _min_elements = DEFAULT_MIN_ELEMENTS if count is None else count


@contextlib.contextmanager
def settings(threads=None, min_elements=None):
    """Within the block, `threads` threads and parts of at least `min_elements` elements (None: unchanged)."""
    saved = _num_threads, _min_elements
    try:
        if threads is not None:
            set_num_threads(threads)
        if min_elements is not None:
            set_min_elements(min_elements)
        yield
    finally:
        set_num_threads(saved[0])
        set_min_elements(saved[1])


def _get_pool(workers):
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            # The smaller pool is dropped, not shut down: another thread may have just been handed it and
            # not yet submitted its parts. Its idle threads end once the last pass using it lets it go.
            _pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="minicnn",
                                                          initializer=_mark_pool_thread)
            _pool_workers = workers
        return _pool


def _mark_pool_thread():
    _inside_pool.active = True


def _forget_pool_after_fork():
    # A forked child (a data-loader worker) has none of the parent's threads: start a new pool on demand.
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def parts(count, elements):
    """[(start, stop), ...]: range(count) cut into near-equal parts, one per thread, each >= min_elements().

    elements: the elements the whole pass touches (so elements / count per index).
    """
    wanted = max(1, min(num_threads(), count, elements // _min_elements))  # an empty range is one empty part
    if getattr(_inside_pool, "active", False):
        wanted = 1
    bounds = [count * index // wanted for index in range(wanted + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def for_each_part(work, count, elements, array=None):
    """Call work(start, stop) over `parts(count, elements)`, the first part on this thread; wait for all.

    array: any array of the pass; a CuPy array keeps the pass on one thread. work must write
    disjoint outputs for disjoint ranges. An exception in any part is raised here, once every
    part has ended (none is left writing into the outputs).
    """
    ranges = [(0, count)] if array is not None and is_cupy_array(array) else parts(count, elements)
    if len(ranges) == 1:
        work(*ranges[0])
        return
    pool = _get_pool(len(ranges) - 1)
    futures = [pool.submit(work, start, stop) for start, stop in ranges[1:]]
    try:
        work(*ranges[0])
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()


def blas_threads():
    """{library prefix: threads} of the BLAS pools loaded in this process (threadpoolctl), {} without it."""
    try:
        import threadpoolctl
    except ImportError:
        return {}
    return {info["prefix"]: info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"}


# ----- sharing the cores with BLAS -------------------------------------------------------------

_split_products = False
_blas_limit = None  # threadpoolctl's record of the BLAS pool before share_cores_with_blas, to restore it


def share_cores_with_blas(enabled=True):
    """On: BLAS on one thread, the convolutions' matrix products cut over this pool. Off: both as they were.

    A process-wide setting (call it from an entry point, as torch.set_num_threads). Needs threadpoolctl
    to reach the BLAS library loaded by NumPy; without it, raises ImportError naming the extra.
    """
    global _split_products, _blas_limit
    if enabled:
        try:
            import threadpoolctl
        except ImportError:
            raise ImportError('share_cores_with_blas needs threadpoolctl: pip install "minicnn[threads]"') from None
        if _blas_limit is None:
            _blas_limit = threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        _split_products = True
    else:
        if _blas_limit is not None:
            _blas_limit.restore_original_limits()
            _blas_limit = None
        _split_products = False


def sharing_cores_with_blas():
    """True between share_cores_with_blas() and share_cores_with_blas(False)."""
    return _split_products


# A part of a product gets at least this many multiply-adds per min_elements(): about the time of the hand-off.
MULTIPLY_ADDS_PER_ELEMENT = 32


def matmul(a, b):
    """a: (M, K) @ b: (K, N) -> (M, N): one BLAS call, or, sharing the cores with BLAS, one per part.

    Cut along N (b's columns) when N >= M, else along M; each part is a whole product of its slice
    (the same K-long sums as one call makes, though BLAS may block them differently: the same
    numbers within float32 rounding).
    """
    on_host = not (is_cupy_array(a) or is_cupy_array(b))
    if not (_split_products and on_host and a.ndim == 2 and b.ndim == 2):
        return a @ b
    xp = get_array_module(a)
    (M, K), N = a.shape, b.shape[1]
    out = xp.empty((M, N), dtype=xp.result_type(a, b))
    if N >= M:
        def product(start, stop):
            xp.matmul(a, b[:, start:stop], out=out[:, start:stop])

        for_each_part(product, N, M * N * K // MULTIPLY_ADDS_PER_ELEMENT)
    else:
        def product(start, stop):
            xp.matmul(a[start:stop], b, out=out[start:stop])

        for_each_part(product, M, M * N * K // MULTIPLY_ADDS_PER_ELEMENT)
    return out
