"""minicnn.kernels.threads and the threaded fast paths: the same numbers on one thread and on several.

Every threaded pass cuts its output into disjoint slices and runs, on each, the loop one thread
runs over the whole, so threaded and one-thread results must agree bit for bit (assert_array_equal,
not allclose). The thresholds are lowered (`threads.settings(min_elements=1)`) so small arrays are
split too, and 3 threads are asked for so parts are uneven whatever the machine has.
"""

import os
import threading

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import kernels, optim
from minicnn.windows import output_shape
from minicnn.kernels import cpu_layout, cpu_windows, threads

# (x shape, kernel, stride, padding): the models' layers, a strided padded one and an overlapping pool.
WINDOW_CASES = [
    ((5, 3, 13, 13), (3, 3), (1, 1), (0, 0)),
    ((4, 2, 12, 11), (5, 5), (1, 1), (2, 2)),
    ((3, 5, 9, 10), (3, 2), (2, 3), (1, 1)),
    ((2, 1, 8, 8), (2, 2), (2, 2), (0, 0)),
]


def one_and_many(function):
    """function() on one thread and on three threads with every pass split: (one, many)."""
    with threads.settings(threads=1):
        one = function()
    with threads.settings(threads=3, min_elements=1):
        many = function()
    return one, many


def assert_same(one, many):
    for a, b in zip(one if isinstance(one, tuple) else (one,), many if isinstance(many, tuple) else (many,)):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", WINDOW_CASES)
def test_threaded_window_passes_equal_one_thread_bit_for_bit(case):
    shape, kernel_size, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    out_size = output_shape(shape, kernel_size, stride, padding)
    assert_same(*one_and_many(lambda: cpu_windows.columns_by_channel(x, kernel_size, stride, padding, out_size)))

    filters = 4
    grad_matrix = rng.standard_normal((filters, shape[0] * out_size[0] * out_size[1])).astype(np.float32)
    weight_matrix = rng.standard_normal((filters, shape[1] * kernel_size[0] * kernel_size[1])).astype(np.float32)
    settings = shape, kernel_size, stride, padding, out_size
    assert_same(*one_and_many(lambda: cpu_windows.conv2d_input_grad(grad_matrix, weight_matrix, *settings)))
    col = np.ascontiguousarray((grad_matrix.T @ weight_matrix).T)
    assert_same(*one_and_many(lambda: cpu_windows.add_columns_by_channel(col, *settings)))

    x[rng.random(shape) < 0.05] = np.nan  # the NaN fix-up runs per part
    x[rng.random(shape) < 0.05] = -np.inf
    pool_padding = (min(padding[0], kernel_size[0] // 2), min(padding[1], kernel_size[1] // 2))
    pool_size = output_shape(shape, kernel_size, stride, pool_padding)
    one, many = one_and_many(lambda: cpu_windows.max_pool_forward(x, kernel_size, stride, pool_padding, pool_size))
    assert_same(one, many)
    grad = rng.standard_normal(one[0].shape).astype(np.float32)
    assert_same(*one_and_many(lambda: cpu_windows.max_pool_backward(grad, one[1], shape, kernel_size, stride,
                                                                     pool_padding)))


def test_threaded_layout_passes_equal_one_thread_and_the_reference_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5, 7, 7)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    one, many = one_and_many(lambda: cpu_layout.relu_forward(x))
    assert_same(one, many)
    assert_same(one, (np.maximum(x, 0), x > 0))
    grad = rng.standard_normal(x.shape).astype(np.float32)
    assert_same(*one_and_many(lambda: cpu_layout.relu_backward(grad, one[1])))

    filters, batch, out_size = 5, 6, (4, 3)
    out_matrix = rng.standard_normal((filters, batch * 12)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    for b in (bias, None):
        # the bias is added in place: each call gets its own copy of the product
        one, many = one_and_many(lambda: cpu_layout.conv2d_output(out_matrix.copy(), b, batch, out_size))
        assert_same(one, many)
        expected = out_matrix + (0 if b is None else b[:, None])  # the reference's order: add, then transpose
        assert_same(one, np.ascontiguousarray(expected.reshape(filters, batch, *out_size).transpose(1, 0, 2, 3)))

    grad = rng.standard_normal((batch, filters, *out_size)).astype(np.float32)
    one, many = one_and_many(lambda: cpu_layout.conv2d_grad_matrix(grad, True))
    assert_same(one, many)
    reference = grad.transpose(1, 0, 2, 3).reshape(filters, -1)
    assert_same(one, (reference, reference.sum(axis=1)))  # each row summed alone, as sum(axis=1) sums it
    assert one_and_many(lambda: cpu_layout.conv2d_grad_matrix(grad, False))[1][1] is None
    channel_major = np.ascontiguousarray(grad.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    one_major, many_major = one_and_many(lambda: cpu_layout.conv2d_grad_matrix(channel_major, True))
    assert_same(one_major, many_major)
    assert_same(one_major, one)


def test_a_threaded_training_step_equals_the_one_thread_step_bit_for_bit():
    """The dispatch points through a whole cnn step: forward, backward and Adam."""
    rng = np.random.default_rng(2)
    images, labels = rng.random((2, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 2)

    def two_steps():
        minicnn.manual_seed(0)
        model = minicnn.models.cnn()
        optimizer = optim.Adam(model.parameters())
        for _ in range(2):  # the second step reads Adam's moments
            loss = F.cross_entropy(model(minicnn.tensor(images)), minicnn.tensor(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return tuple(parameter.data.copy() for parameter in model.parameters())

    assert_same(*one_and_many(two_steps))


def test_parts_cover_the_range_once_and_keep_small_passes_on_one_thread():
    with threads.settings(threads=3, min_elements=10):
        assert threads.parts(7, 1000) == [(0, 2), (2, 4), (4, 7)]
        assert threads.parts(2, 1000) == [(0, 1), (1, 2)]  # no more parts than indices
        assert threads.parts(100, 25) == [(0, 50), (50, 100)]  # each part gets >= 10 elements
        assert threads.parts(100, 9) == [(0, 100)]
    with threads.settings(threads=1, min_elements=1):
        assert threads.parts(100, 10**9) == [(0, 100)]
        assert threads.parts(0, 0) == [(0, 0)]
    with threads.settings(threads=3, min_elements=1):
        out, positive = cpu_layout.relu_forward(np.zeros((0, 3), dtype=np.float32))  # an empty batch
        assert out.shape == positive.shape == (0, 3)


def test_for_each_part_runs_every_part_and_raises_a_failing_parts_error():
    seen = []
    with threads.settings(threads=3, min_elements=1):
        threads.for_each_part(lambda start, stop: seen.append((start, stop)), 9, 9)
        assert sorted(seen) == [(0, 3), (3, 6), (6, 9)]

        def fail_late(start, stop):
            if start > 0:
                raise ZeroDivisionError(f"part {start}")

        with pytest.raises(ZeroDivisionError, match="part"):
            threads.for_each_part(fail_late, 9, 9)


def test_a_failing_part_is_raised_only_after_the_other_parts_have_ended():
    finished = []

    def work(start, stop):
        if start == 3:
            raise ZeroDivisionError("part 3")
        if start == 6:
            threading.Event().wait(0.2)  # still writing when part 3 fails
            finished.append(start)

    with threads.settings(threads=3, min_elements=1), pytest.raises(ZeroDivisionError, match="part 3"):
        threads.for_each_part(work, 9, 9)
    assert finished == [6]


def test_a_pool_handed_to_one_pass_still_takes_its_parts_after_another_pass_grows_it(monkeypatch):
    # Two Python threads (serve's handlers, a user's threads): one is handed the pool, then, before it
    # submits, the other asks for more workers. The first must still be able to submit.
    get_pool = threads._get_pool

    def grown_in_between(workers):
        handed = get_pool(workers)
        get_pool(threads.num_threads() + 2)  # the other thread's bigger pass
        return handed

    monkeypatch.setattr(threads, "_get_pool", grown_in_between)
    seen = []
    with threads.settings(threads=3, min_elements=1):
        threads.for_each_part(lambda start, stop: seen.append(start), 9, 9)
    assert sorted(seen) == [0, 3, 6]


def test_thread_count_follows_the_environment_and_the_setter(monkeypatch):
    with threads.settings():
        monkeypatch.setenv("MINICNN_NUM_THREADS", "3")
        threads.set_num_threads(None)  # None: follow the environment again
        assert threads.num_threads() == 3
        kernels.set_num_threads(2)
        assert kernels.num_threads() == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="set_num_threads"):
                threads.set_num_threads(bad)
        monkeypatch.setenv("MINICNN_NUM_THREADS", "many")
        threads.set_num_threads(None)
        with pytest.raises(ValueError, match="MINICNN_NUM_THREADS must be a whole number >= 1, got 'many'"):
            threads.num_threads()
        monkeypatch.delenv("MINICNN_NUM_THREADS")
        threads.set_num_threads(None)
        assert threads.num_threads() == 1  # the measured-faster default (see threads.py)
        threads.set_num_threads("cores")
        assert threads.num_threads() == len(os.sched_getaffinity(0))


def test_blas_threads_reports_the_blas_pools_or_nothing():
    found = threads.blas_threads()
    assert isinstance(found, dict) and all(isinstance(count, int) and count >= 1 for count in found.values())


def test_adam_in_place_gives_the_numbers_of_the_formula_written_out():
    """optim.Adam updates in place with scratch arrays; the same float32 operations in the same order."""
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((4, 5)).astype(np.float32)
    gradients = [rng.standard_normal((4, 5)).astype(np.float32) for _ in range(3)]
    parameter = minicnn.nn.Parameter(p0.copy())
    optimizer = optim.Adam([parameter], lr=0.01, weight_decay=0.1)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(gradients, start=1):
        parameter.grad = g
        optimizer.step()
        g = g + 0.1 * p
        m = 0.9 * m + (1 - 0.9) * g
        v = 0.999 * v + (1 - 0.999) * g * g
        p -= (0.01 / (1 - 0.9**t)) * m / (np.sqrt(v) / (1 - 0.999**t) ** 0.5 + 1e-8)
        np.testing.assert_array_equal(parameter.data, p)
    np.testing.assert_array_equal(optimizer.first_moments[0], m)
    np.testing.assert_array_equal(optimizer.second_moments[0], v)


def test_the_layout_dispatch_points_give_the_references_numbers_within_rounding():
    """Through functional, threaded fast paths against the references. Within float32 rounding, not bit for bit:
    the references multiply im2col's rows through a transposed view (BLAS then runs another kernel) and
    col2im sums overlaps in another order; test_threaded_layout_passes_... checks the layouts bit for bit."""
    rng = np.random.default_rng(4)
    x_host = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    weight_host = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    bias_host = rng.standard_normal(5).astype(np.float32)
    grad = rng.standard_normal((3, 5, 9, 9)).astype(np.float32)
    results = []
    for context in (threads.settings(threads=3, min_elements=1), kernels.reference_only()):
        with context:
            x, weight, bias = (minicnn.tensor(a, requires_grad=True) for a in (x_host, weight_host, bias_host))
            out = F.relu(F.conv2d(x, weight, bias, padding=1))
            out.backward(grad)
            results.append((out.data, weight.grad, bias.grad, x.grad))
    for fast, reference in zip(*results):
        assert fast.dtype == reference.dtype == np.float32
        np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-5)


def test_sharing_the_cores_with_blas_cuts_the_products_and_gives_the_blas_pool_back():
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(5)
    before = threads.blas_threads()
    wide = rng.standard_normal((3, 40)).astype(np.float32), rng.standard_normal((40, 50)).astype(np.float32)
    tall = rng.standard_normal((50, 40)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    x_host = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    weight_host = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    try:
        kernels.share_cores_with_blas()
        assert threads.sharing_cores_with_blas() and set(threads.blas_threads().values()) <= {1}
        with threads.settings(threads=3, min_elements=1):
            for a, b in (wide, tall):  # cut along the columns, then along the rows
                product = threads.matmul(a, b)
                assert product.shape == (a.shape[0], b.shape[1]) and product.dtype == np.float32
                np.testing.assert_allclose(product, a @ b, rtol=1e-5, atol=1e-5)
            x, weight = minicnn.tensor(x_host, requires_grad=True), minicnn.tensor(weight_host, requires_grad=True)
            F.conv2d(x, weight, padding=1).sum().backward()
            shared = x.grad, weight.grad
    finally:
        kernels.share_cores_with_blas(False)
    assert not threads.sharing_cores_with_blas() and threads.blas_threads() == before
    x, weight = minicnn.tensor(x_host, requires_grad=True), minicnn.tensor(weight_host, requires_grad=True)
    F.conv2d(x, weight, padding=1).sum().backward()
    for a, b in zip(shared, (x.grad, weight.grad)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
