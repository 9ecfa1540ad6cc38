"""Serial mode: while fits overlap in threads, each keeps its matrix products on its own thread.

The kernels split a product larger than ``SERIAL_MNK`` multiply-adds into blocks that
scipy's OpenBLAS runs on the calling thread (``counters[SERIAL]``); prediction uses
correspondingly small chunks. This changes the numbers by rounding only: the Cython
kernels split the rows of ``C`` (the rows where OpenBLAS's edge kernels take over move, and
those round differently); Numba's weight gradient splits the summed batch rows. Which fits
use the mode is decided by ``_training.RUNNING_FITS``, tested here directly.
"""

import importlib
import os
import threading

import numpy as np
import pytest

from fastmlp import MLPClassifier, MLPRegressor, _training
from fastmlp._blas_threads import ONE_BLAS_THREAD
from fastmlp._network import Network
from fastmlp.backends import get_backend
from fastmlp.kernels import _cy
from fastmlp.kernels import numba_kernels as nk

from _kernel_problems import close, targets

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
BUILDS = [_cy]
if _cy.cpu_supports_avx2():
    BUILDS.append(importlib.import_module("fastmlp.kernels._cy_avx2"))

# (m, n, k) of C = op(A) op(B): the products of a 200-row batch through 64 x 64 and
# 64 x 32 layers (split), one too narrow to split (n k > SERIAL_MNK / SERIAL_MIN_ROWS),
# and one small enough to run whole
SHAPES = [(200, 64, 64), (64, 64, 200), (200, 32, 64), (300, 70, 50), (40, 130, 2100),
          (30, 20, 10)]


def _operands(ta, tb, m, n, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, k) if ta == "n" else (k, m)).astype(dtype)
    B = rng.normal(size=(k, n) if tb == "n" else (n, k)).astype(dtype)
    return A, B, (A if ta == "n" else A.T) @ (B if tb == "n" else B.T)


def _close(actual, expected, dtype):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def test_split_sizes_follow_the_blas_threshold():
    # blocks are equal, at most SERIAL_MNK multiply-adds, at least SERIAL_MIN_ROWS rows
    assert nk.SERIAL_MNK == _training.SERIAL_MNK == 262144
    assert nk._serial_rows(200, 64 * 64, True) == 50          # 4 blocks of 50 rows
    assert nk._serial_rows(64, 64 * 200, True) == 16          # 4 blocks of 16
    assert nk._serial_rows(200, 64 * 64, False) == 0          # not serial: whole
    assert nk._serial_rows(60, 64 * 64, True) == 0            # small enough: whole
    assert nk._serial_rows(500, 1024 * 1024, True) == 0       # blocks too thin: whole
    for m, nk_ in [(200, 4096), (64, 12800), (1000, 300), (777, 16384)]:
        mb = nk._serial_rows(m, nk_, True)
        assert mb * nk_ <= nk.SERIAL_MNK and mb >= nk.SERIAL_MIN_ROWS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [("n", "n"), ("t", "n"), ("n", "t")])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_cython_serial_gemm(dtype, ta, tb, m, n, k):
    A, B, product = _operands(ta, tb, m, n, k, dtype)
    C0 = np.random.default_rng(1).normal(size=(m, n)).astype(dtype)
    for kern in BUILDS:
        for alpha, beta in [(1.0, 0.0), (0.5, 1.0)]:
            whole = kern.row_major_gemm(ta, tb, alpha, A, B, beta, C0.copy())
            split = kern.row_major_gemm(ta, tb, alpha, A, B, beta, C0.copy(), serial=True)
            _close(split, alpha * product + beta * C0, dtype)
            _close(split, whole, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_numba_serial_products(dtype, m, n, k):
    # _mm_nn: C (m x n) = A B; _mm_nt: C (m x k) = A B^T; _mm_tn: C (k x n) = A^T B with
    # the summed dimension m split through the scratch buffer
    rng = np.random.default_rng(2)
    A = rng.normal(size=(m, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    C = np.full((m, n), np.nan, dtype)
    nk._mm_nn(A, B, C, True)
    _close(C, A @ B, dtype)
    Bt = np.ascontiguousarray(B.T)  # (n, k)
    C = np.full((m, n), np.nan, dtype)
    nk._mm_nt(A, Bt, C, True)
    _close(C, A @ B, dtype)
    D = rng.normal(size=(m, n)).astype(dtype)
    for scratch_size in (k * n, k * n - 1):  # too small a scratch: the product runs whole
        G = np.full((k, n), np.nan, dtype)
        nk._mm_tn(A, D, G, True, np.full(scratch_size, np.nan, dtype))
        _close(G, A.T @ D, dtype)


def _problem(dtype, hidden=(64, 64), n=450, n_in=64, n_out=10, seed=0):
    net = Network([n_in, *hidden, n_out], ["relu"] * len(hidden),
                  [{} for _ in hidden], "softmax")
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.1, net.n_params).astype(dtype)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    return net, theta, X, Y


def _epochs(backend, net, theta, X, Y, serial, batch_size=200, epochs=3):
    dtype = theta.dtype
    theta = theta.copy()
    state = np.zeros((2, net.n_params), dtype)
    grad = np.empty(net.n_params, dtype)
    work = np.empty(backend.workspace_size(net.layout, batch_size), dtype)
    counters = np.array([1, 0, 0, 0, 7, 3, int(serial)], dtype=np.int64)
    hyper = np.array([1e-3, 0.0, 0.9, 0.999, 1e-8, 1e-4])
    order = np.random.default_rng(3).permutation(X.shape[0]).astype(np.int64)
    losses = [backend.train_epoch(theta, grad, state, net.layout, net.act_params, X, Y,
                                  None, order, batch_size, hyper, counters, work)
              for _ in range(epochs)]
    return np.array(losses), theta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cython", "numba"])
def test_serial_epochs_agree(name, dtype):
    backend = get_backend(name)
    net, theta, X, Y = _problem(dtype)
    loss0, theta0 = _epochs(backend, net, theta, X, Y, serial=False)
    loss1, theta1 = _epochs(backend, net, theta, X, Y, serial=True)
    assert not np.array_equal(theta0, theta)  # training moved the weights
    _close(loss1, loss0, dtype)
    _close(theta1, theta0, dtype)
    # the full-batch gradient (L-BFGS) in serial mode
    grads = []
    for serial in (0, 1):
        grad = np.empty(net.n_params, dtype)
        work = np.empty(backend.workspace_size(net.layout, X.shape[0]), dtype)
        counters = np.array([0, 0, 0, 0, 7, 3, serial], dtype=np.int64)
        backend.loss_grad(theta, grad, net.layout, net.act_params, X, Y, None, 1e-4,
                          counters, work)
        grads.append(grad)
    _close(grads[1], grads[0], dtype)


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_counters_must_have_seven_entries(name):
    backend = get_backend(name)
    net, theta, X, Y = _problem(np.float64, n=20)
    work = np.empty(backend.workspace_size(net.layout, 20), np.float64)
    with pytest.raises(ValueError, match="7"):
        backend.loss_grad(theta, np.empty_like(theta), net.layout, net.act_params, X, Y,
                          None, 0.0, np.zeros(6, np.int64), work)


# ---------------------------------------------------------------- when the mode is used
def test_running_fits_counts_overlaps_and_holds():
    fits = _training._RunningFits()
    assert not fits.serial()
    with fits:
        assert not fits.serial()  # one fit alone: BLAS threads as usual
        with fits:
            assert fits.count == 2 and fits.serial()
        assert fits.count == 1
        assert fits.serial()  # held for HOLD seconds after the overlap
        fits.HOLD = 0.0
        assert not fits.serial()
    assert fits.count == 0


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_running_fits_is_released_when_a_fit_fails(solver, monkeypatch):
    backend = get_backend("cython")

    def fail(*args):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(backend, "train_epoch", fail)
    monkeypatch.setattr(backend, "loss_grad", fail)
    X = np.random.default_rng(0).normal(size=(60, 4))
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, backend="cython", solver=solver)
    with pytest.raises(RuntimeError, match="kernel failed"):
        est.fit(X, np.arange(60) % 2)
    assert _training.RUNNING_FITS.count == 0


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_overlapping_fits_run_serial_and_a_lone_fit_does_not(name, monkeypatch):
    backend = get_backend(name)
    seen = []
    barrier = threading.Barrier(2)
    real = backend.train_epoch

    def spy(*args):
        seen.append((threading.get_ident(), int(args[11][_training.SERIAL])))
        return real(*args)

    monkeypatch.setattr(backend, "train_epoch", spy)
    monkeypatch.setattr(_training.RUNNING_FITS, "HOLD", 0.0)
    X = np.random.default_rng(0).normal(size=(100, 5))
    y = np.arange(100) % 3

    def fit(epochs):
        return MLPClassifier(hidden_layer_sizes=(8,), max_iter=epochs, backend=name,
                             random_state=0, tol=0.0, n_iter_no_change=epochs + 1).fit(X, y)

    fit(3)
    assert [s for _, s in seen] == [0, 0, 0]
    seen.clear()
    # two fits inside one RUNNING_FITS overlap: every epoch of both is serial
    with _training.RUNNING_FITS:
        def job():
            barrier.wait()
            fit(4)
        threads = [threading.Thread(target=job) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(seen) == 8 and all(s == 1 for _, s in seen)
    assert len({ident for ident, _ in seen}) == 2
    assert _training.RUNNING_FITS.count == 0


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_small_networks_predict_in_single_threaded_chunks(name, monkeypatch):
    X = np.random.default_rng(0).normal(size=(3000, 64))
    y = np.arange(3000) % 4
    backend = get_backend(name)
    chunks = []
    real = backend.forward

    def spy(*args):
        chunks.append(args[6])
        return real(*args)

    monkeypatch.setattr(backend, "forward", spy)
    small = MLPClassifier(hidden_layer_sizes=(128,), max_iter=2, backend=name,
                          random_state=0).fit(X[:300], y[:300])
    large = MLPClassifier(hidden_layer_sizes=(1024,), max_iter=1, backend=name,
                          random_state=0).fit(X[:300], y[:300])
    chunks.clear()
    proba = small.predict_proba(X)
    large.predict_proba(X)
    assert chunks == [262144 // (64 * 128), 3000]
    assert _training.serial_chunk_rows(large._network.layout) is None
    # the same probabilities as predicting all rows at once, up to rounding
    monkeypatch.setattr(_training, "serial_chunk_rows", lambda layout: None)
    np.testing.assert_allclose(small.predict_proba(X), proba, rtol=1e-12, atol=1e-15)


# ------------------------------------------------- split batches: two halves, same numbers
def _split_cases():
    # (hidden, activations, output, loss code, batch size, n_samples, sample weights)
    return [
        ((64, 64), ["relu", "relu"], "identity", 0, 200, 450, False),   # W6's shape
        ((64,), ["tanh"], "softmax", 3, 201, 450, True),                # odd halves
        ((32, 16), ["prelu", "maxout"], "logistic", 2, 128, 300, True),  # slopes, routing
        ((48,), ["elu"], "exp", 1, 96, 250, False),                     # poisson
        # SPLIT_ONE_BLAS: a half's 100 x 128 x 256 product is one BLAS would thread
        ((256, 128), ["relu", "gelu"], "softmax", 3, 200, 450, True),
        # RReLU in two layers, odd halves (61 + 60 rows): the second half draws the slopes
        # of the whole batch's rows 61..120
        ((40, 24), ["rrelu", "rrelu"], "softmax", 3, 121, 300, True),
        # SPLIT_ONE_BLAS, and large enough (324 764 parameters >= OPT_PAR_MIN) for the Adam
        # step to run as two ranges, in two threads, summing the halves' gradients itself
        ((600, 512), ["relu", "tanh"], "softmax", 3, 200, 450, True),
    ]


def _split_problem(case, dtype, seed=0):
    hidden, acts, out, loss_code, bs, n, weighted = case
    n_in, n_out = 24, (1 if out in ("identity", "exp") else 4 if out == "softmax" else 2)
    params = [{"k": 2} if a == "maxout" else {} for a in acts]
    net = Network([n_in, *hidden, n_out], acts, params, out)
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.2, net.n_params).astype(dtype)
    for s in net.slope_views(theta):
        if s is not None:
            s[...] = rng.uniform(0.05, 0.4, s.shape)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    Y = targets(rng, loss_code, n, n_out, dtype)
    sw = rng.uniform(0.2, 3.0, n).astype(dtype) if weighted else None
    return net, theta, X, Y, sw, loss_code, bs


def _run_epochs(backend, net, theta, X, Y, sw, loss_code, bs, serial=0, epochs=2,
                kernel=None):
    dtype = theta.dtype
    theta = theta.copy()
    state = np.zeros((2, net.n_params), dtype)
    grad = np.empty(net.n_params, dtype)
    work = np.full(backend.workspace_size(net.layout, bs), np.nan, dtype)
    counters = np.array([1, 0, 0, 0, 7, loss_code, serial], dtype=np.int64)
    hyper = np.array([1e-3, 0.0, 0.9, 0.999, 1e-8, 1e-3])
    order = np.random.default_rng(3).permutation(X.shape[0]).astype(np.int64)
    train = backend.train_epoch if kernel is None else kernel
    losses = [train(theta, grad, state, net.layout, net.act_params, X, Y, sw, order, bs,
                    hyper, counters, work) for _ in range(epochs)]
    return np.array(losses), theta, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(_split_cases())))
@pytest.mark.parametrize("name", ["cython", "numba"])
def test_split_batches_agree_with_reference(name, case, dtype):
    net, theta, X, Y, sw, loss_code, bs = _split_problem(_split_cases()[case], dtype)
    assert _cy.split_batches(net.layout, net.act_params, bs, dtype)
    assert nk.split_kind(net.layout, bs, dtype == np.float32)
    want = _run_epochs(get_backend("numpy"), net, theta, X, Y, sw, loss_code, bs)
    got = _run_epochs(get_backend(name), net, theta, X, Y, sw, loss_code, bs)
    rtol = {np.float64: 1e-10, np.float32: 1e-4}[dtype]
    for g, w in zip(got, want):
        close(g, w, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(_split_cases())))
def test_split_batches_give_the_same_numbers_in_every_mode(case, dtype):
    # two threads or one, a fit alone or beside others: the same arithmetic, bit for bit.
    # A SPLIT_ONE_BLAS network's fits hold BLAS at one thread in every mode (overlapping
    # fits share the hold), so its runs here do too; a multithreaded GEMM rounds a few
    # entries differently (checked to a tolerance below)
    net, theta, X, Y, sw, loss_code, bs = _split_problem(_split_cases()[case], dtype)
    one_blas = _cy.split_batches(net.layout, net.act_params, bs, dtype) == 2
    assert one_blas == (case in (4, 6))
    with ONE_BLAS_THREAD.hold(one_blas):
        base, runs, nb_base, nb_runs = _runs_in_every_mode(
            net, theta, X, Y, sw, loss_code, bs, dtype)
    for expected, others in [(base, runs), (nb_base, nb_runs)]:
        for other in others:
            for a, b in zip(expected, other):
                np.testing.assert_array_equal(a, b, strict=True)
    if one_blas:  # BLAS not held (threadpoolctl could not): rounding only
        for name, expected in [("cython", base), ("numba", nb_base)]:
            got = _run_epochs(get_backend(name), net, theta, X, Y, sw, loss_code, bs)
            for g, w in zip(got, expected):
                close(g, w, RTOL[dtype])


def _runs_in_every_mode(net, theta, X, Y, sw, loss_code, bs, dtype):
    from threadpoolctl import threadpool_limits

    cy = get_backend("cython")
    nb = get_backend("numba")
    base = _run_epochs(cy, net, theta, X, Y, sw, loss_code, bs)
    runs = [_run_epochs(cy, net, theta, X, Y, sw, loss_code, bs, serial=1)]
    with threadpool_limits(1, user_api="openmp"):
        runs.append(_run_epochs(cy, net, theta, X, Y, sw, loss_code, bs))
    nb_base = _run_epochs(nb, net, theta, X, Y, sw, loss_code, bs)
    nb_runs = [_run_epochs(nb, net, theta, X, Y, sw, loss_code, bs, serial=1)]
    with ONE_BLAS_THREAD.hold(True) as limited:
        assert limited
        # the mode a lone fit of a SPLIT_ONE_BLAS network runs in: halves in threads
        runs.append(_run_epochs(cy, net, theta, X, Y, sw, loss_code, bs, serial=2))
        nb_runs.append(_run_epochs(nb, net, theta, X, Y, sw, loss_code, bs, serial=2))
    sw_k = np.empty(0, dtype) if sw is None else sw
    for kernel in (nk.train_epoch_kernel, nk.train_epoch_parallel_kernel):
        def call(th, g, st, layout, ap, X_, Y_, _sw, order, bs_, hy, co, wk, kernel=kernel):
            return kernel(th, g, st, layout, ap, X_, Y_, sw_k, sw is not None, order, bs_,
                          hy, co, wk)
        nb_runs.append(_run_epochs(nb, net, theta, X, Y, sw, loss_code, bs, kernel=call))
    return base, runs, nb_base, nb_runs


def test_which_networks_split():
    def split(sizes, acts=None, bs=200, dtype=np.float64):
        acts = acts or ["relu"] * (len(sizes) - 2)
        net = Network(sizes, acts, [{} for _ in acts], "softmax")
        a = _cy.split_batches(net.layout, net.act_params, bs, dtype)
        assert a == nk.split_kind(net.layout, bs, dtype == np.float32)  # both decide alike
        for name in ("cython", "numba"):
            assert get_backend(name).split_kind(net.layout, net.act_params, bs, dtype) == a
        return a

    for dt in (np.float64, np.float32):
        assert split([20, 64, 64, 1], dtype=dt) == 1  # W6: products stay on one thread
        assert split([64, 64, 10], dtype=dt)              # W1
        assert split([64, 32, 10], dtype=dt)   # the GridSearchCV benchmark's smaller net
        assert not split([64, 64, 10], bs=63, dtype=dt)   # too few rows to halve
        assert split([64, 64, 10], bs=64, dtype=dt)
        # W3: half-batch products BLAS would thread: halves in threads only with BLAS at 1
        assert split([100, 256, 128, 10], dtype=dt) == 2
        assert split([100, 256, 128, 10], bs=63, dtype=dt) == 0
        assert split([100, 512, 512, 10], dtype=dt) == 2  # 100 x 512 x 512 <= 2**26
        assert split([64, 64, 10], ["rrelu"], dtype=dt) == 1  # halves draw the batch's slopes
    # float64 splits networks whose layers have at most SPLIT_MAX_WEIGHTS_F64 weights,
    # float32 those whose half-batch products are at most SPLIT_MAX_MNK_F32 multiply-adds
    assert split([784, 1024, 1024, 10], bs=256) == 2   # W4
    assert split([100, 1024, 1024, 10], bs=64) == 2    # 1024 x 1024 = 2**20 weights
    assert split([100, 2048, 1024, 10], bs=128) == 0   # 2048 x 1024 > 2**20
    assert split([2048, 600, 10], bs=200) == 0         # the input layer counts too
    assert split([784, 1024, 1024, 10], bs=256, dtype=np.float32) == 0
    assert split([100, 1024, 1024, 10], dtype=np.float32) == 0   # 100 x 1024 x 1024 > 2**26
    assert split([100, 1024, 512, 10], dtype=np.float32) == 2    # 100 x 1024 x 512


@pytest.mark.parametrize("name", ["cython", "numba"])
@pytest.mark.parametrize("hidden, kind", [((64,), 1), ((256, 128), 2)])
def test_split_fits_in_threads_equal_sequential_fits(name, hidden, kind):
    # a search on threads gives the very models a loop gives (split batches always run the
    # same arithmetic; only whether the halves run in parallel changes; kind 2: the fits
    # share the hold of BLAS at one thread)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 30))
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)
    net = Network([30, *hidden, 3], ["relu"] * len(hidden), [{}] * len(hidden), "softmax")
    assert get_backend(name).split_kind(net.layout, net.act_params, 200) == kind

    def fit(seed):
        est = MLPClassifier(hidden_layer_sizes=hidden, max_iter=4, random_state=seed,
                            backend=name, batch_size=200)
        est.fit(X, y)
        return est._theta.copy()

    sequential = [fit(s) for s in range(4)]
    barrier = threading.Barrier(2)

    def job(seed):
        if seed < 2:
            barrier.wait()
        return fit(seed)

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(job, range(4)))
    for a, b in zip(sequential, threaded):
        np.testing.assert_array_equal(a, b, strict=True)


def _fit_loss(args):
    name, X, y = args
    est = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=3, backend=name, random_state=0)
    return est.fit(X, y).loss_


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform has no fork()")
@pytest.mark.parametrize("name", ["cython", "numba"])
def test_fits_in_forked_children_after_threaded_fits(name):
    # GNU OpenMP's (and Numba's) thread pools do not survive fork(): a child forked after
    # the parent trained with its halves in two threads must not enter them (it would
    # hang), and gives the parent's numbers
    import multiprocessing

    rng = np.random.default_rng(0)
    X = rng.random((2000, 20))
    y = X.sum(axis=1)
    net = Network([20, 64, 64, 1], ["relu"] * 2, [{}, {}], "identity")
    assert _cy.split_batches(net.layout, net.act_params, 200)  # the halves ran in threads
    parent = _fit_loss((name, X, y))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map_async(_fit_loss, [(name, X, y)] * 2).get(timeout=120)
    assert children == [parent, parent]
