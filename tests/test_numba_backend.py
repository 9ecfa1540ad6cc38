"""The Numba backend against the NumPy reference: each entry point per dtype, then whole fits.

Tolerances (docs/kernel_contract.md): one call agrees to rtol 1e-10 in float64 and 1e-4 in
float32; whole fits (loss_curve_, loss_, weights) to 1e-6 and 2e-3. Arrays are compared with
an absolute floor of ``rtol * max|expected|``, so that entries that are zero up to rounding
(a relu gradient, a cancelling sum) do not demand a relative precision no algorithm has.

The backend is imported directly: if Numba were missing this module fails, it is not skipped.
"""

import itertools
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_classification, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning

from fastmlp import MLPClassifier, MLPRegressor
from fastmlp.activations import HIDDEN_ACTIVATIONS, rrelu_uniform
from fastmlp.backends import _numba as nb
from fastmlp.backends import _numpy as ref
from fastmlp.kernels import numba_kernels

from _kernel_problems import close as _close, data as _data, network as _network
from _kernel_problems import theta as _theta

DTYPES = [np.float64, np.float32]
CALL_RTOL = {np.float64: 1e-10, np.float32: 1e-4}
FIT_RTOL = {np.float64: 1e-6, np.float32: 2e-3}
HIDDEN = list(HIDDEN_ACTIVATIONS)
OUT_BY_LOSS = {0: "identity", 1: "exp", 2: "logistic", 3: "softmax"}
LOSS_NAMES = {0: "squared_error", 1: "poisson", 2: "binary_log_loss", 3: "log_loss"}
SEED = 987654321  # a large RReLU seed exercises every bit of the uint64 arithmetic


def _counters(loss_code, solver=0, nesterov=0, adam_t=0, step=5, serial=0):
    return np.array([solver, nesterov, adam_t, step, SEED, loss_code, serial], dtype=np.int64)


def _work(backend, net, rows, dtype):
    return np.full(backend.workspace_size(net.layout, rows), np.nan, dtype=dtype)


def _loss_grad(backend, net, theta, X, Y, sw, alpha, counters):
    grad = np.full_like(theta, np.nan)
    loss = backend.loss_grad(theta, grad, net.layout, net.act_params, X, Y, sw, alpha,
                             counters.copy(), _work(backend, net, X.shape[0], theta.dtype))
    return loss, grad


def _forward(backend, net, theta, X, apply_output, chunk):
    out = np.full((X.shape[0], net.layer_units[-1]), np.nan, dtype=theta.dtype)
    backend.forward(theta, net.layout, net.act_params, X, out, apply_output, chunk,
                    _work(backend, net, chunk, theta.dtype))
    return out


# ------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN)
def test_forward_every_hidden_activation(dtype, act):
    net = _network([7, 6], [act, act], "softmax")
    theta = _theta(net, dtype)
    X, _, _ = _data(3, 23, 5, 3, dtype)
    for apply_output in (True, False):
        # chunks of 7 rows: 23 = 3 * 7 + 2 exercises a short last chunk
        got = _forward(nb, net, theta, X, apply_output, 7)
        want = _forward(ref, net, theta, X, apply_output, 7)
        assert np.isfinite(got).all()
        _close(got, want, CALL_RTOL[dtype], f"{act} apply_output={apply_output}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", ["identity", "logistic", "softmax", "exp"])
def test_forward_every_output_activation(dtype, out):
    net = _network([8], ["tanh"], out, n_out=4)
    theta = _theta(net, dtype)
    X, _, _ = _data(0, 30, 5, 4, dtype)
    for apply_output in (True, False):
        got = _forward(nb, net, theta, X, apply_output, 64)
        _close(got, _forward(ref, net, theta, X, apply_output, 64), CALL_RTOL[dtype], out)
    if out == "softmax":
        _close(_forward(nb, net, theta, X, True, 64).sum(axis=1), np.ones(30), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 64])
def test_forward_chunk_sizes_cross_the_gemm_paths(dtype, chunk):
    # the products switch between plain loops and BLAS with the number of rows
    net = _network([40, 30], ["relu", "tanh"], "softmax", n_in=20, n_out=5)
    theta = _theta(net, dtype) * dtype(0.3)
    rng = np.random.default_rng(8)
    X = rng.normal(size=(11, 20)).astype(dtype)
    got = _forward(nb, net, theta, X, True, chunk)
    _close(got, _forward(ref, net, theta, X, True, 64), CALL_RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_sparse_input_is_densified_by_chunks(dtype):
    net = _network([6], ["relu"], "logistic", n_in=12, n_out=2)
    theta = _theta(net, dtype)
    rng = np.random.default_rng(3)
    X = sp.random(41, 12, density=0.3, format="csr", random_state=3, dtype=dtype)
    X.data = rng.normal(size=X.nnz).astype(dtype)
    got = _forward(nb, net, theta, X, True, 10)
    _close(got, _forward(ref, net, theta, X.toarray(), True, 10), CALL_RTOL[dtype])


def test_forward_exp_output_stays_finite():
    # the exp output is clipped at log(max) like the reference, instead of overflowing
    net = _network([3], ["identity"], "exp", n_in=1, n_out=1)
    theta = np.full(net.n_params, 30.0)
    X = np.array([[1.0], [100.0]])
    got = _forward(nb, net, theta, X, True, 2)
    _close(got, _forward(ref, net, theta, X, True, 2), 1e-12)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", ["logistic", "softmax", "exp"])
def test_forward_extreme_logits(dtype, out):
    # the kernels' own exp: saturation, underflow to zero, overflow clipped like the reference
    net = _network([2], ["identity"], out, n_in=1, n_out=3)
    theta = np.zeros(net.n_params, dtype=dtype)
    W0, W1 = net.coef_views(theta)
    W0[...] = 1.0
    W1[...] = np.array([[1.0, -1.0, 0.5], [0.0, 0.0, 0.0]], dtype=dtype)
    X = np.array([[-2000.0], [-800.0], [-720.0], [-30.0], [0.0], [1e-12], [30.0], [100.0],
                  [720.0], [800.0]], dtype=dtype)
    got = _forward(nb, net, theta, X, True, 4)
    with np.errstate(over="ignore", under="ignore"):
        want = _forward(ref, net, theta, X, True, 4)
    assert not np.isnan(got).any()
    if out == "exp":  # clipped to [log(2 tiny), log(max)]: a positive normal number
        assert (got >= np.finfo(dtype).tiny).all() and np.isfinite(got).all()
    # below the smallest normal number the float32 reference underflows to 0 where the
    # kernels (computing in float64) keep a subnormal: equal up to that
    np.testing.assert_allclose(got, want, rtol=CALL_RTOL[dtype], atol=np.finfo(dtype).tiny)


# ---------------------------------------------------------------------------- loss_grad
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_code", [0, 1, 2, 3])
@pytest.mark.parametrize("act", HIDDEN)
def test_loss_grad_every_loss_and_activation(dtype, loss_code, act):
    net = _network([7], [act], OUT_BY_LOSS[loss_code], n_out=1 if loss_code == 2 else 3)
    theta = _theta(net, dtype)
    if loss_code == 1:
        theta *= 0.3  # moderate rates
    X, Y, sw = _data(loss_code, 29, 5, net.layer_units[-1], dtype)
    counters = _counters(loss_code)
    for weights in (None, sw):
        got = _loss_grad(nb, net, theta, X, Y, weights, 0.25, counters)
        want = _loss_grad(ref, net, theta, X, Y, weights, 0.25, counters)
        what = f"{act} {LOSS_NAMES[loss_code]} weighted={weights is not None}"
        _close(got[0], want[0], CALL_RTOL[dtype], what + " loss")
        _close(got[1], want[1], CALL_RTOL[dtype], what + " grad")
        assert np.isfinite(got[1]).all()


MIXES = {
    "prelu-maxout-rrelu": ["prelu", "maxout", "rrelu"],
    "rrelu-prelu-tanh": ["rrelu", "prelu", "tanh"],
    "gelu-selu-hard_tanh": ["gelu", "selu", "hard_tanh"],
    "maxout-logistic-relu": ["maxout", "logistic", "relu"],
    "swish-elu-softplus": ["swish", "elu", "softplus"],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("loss_code", [0, 3])
def test_loss_grad_per_layer_mixes(dtype, mix, loss_code):
    net = _network([9, 6, 8], MIXES[mix], OUT_BY_LOSS[loss_code], n_in=4, n_out=3)
    theta = _theta(net, dtype, seed=4)
    X, Y, sw = _data(loss_code, 37, 4, 3, dtype, seed=5)
    counters = _counters(loss_code)
    got = _loss_grad(nb, net, theta, X, Y, sw, 0.1, counters)
    want = _loss_grad(ref, net, theta, X, Y, sw, 0.1, counters)
    _close(got[0], want[0], CALL_RTOL[dtype], "loss")
    # every block of the flat gradient: weights, intercepts, PReLU slopes
    for name, views in (("coef", net.coef_views), ("intercept", net.intercept_views),
                        ("slopes", net.slope_views)):
        for l, (g, w) in enumerate(zip(views(got[1]), views(want[1]))):
            if w is not None:
                _close(g, w, CALL_RTOL[dtype], f"{name} {l}")


def test_loss_grad_rrelu_depends_on_seed_and_step():
    # the random slopes change with the step and the seed, in both backends alike: the
    # agreement above is not that of two constant draws
    net = _network([8], ["rrelu"], "identity")
    theta = _theta(net, np.float64)
    X, Y, _ = _data(0, 20, 5, 3, np.float64)
    base = _loss_grad(nb, net, theta, X, Y, None, 0.0, _counters(0, step=5))[0]
    for counters in (_counters(0, step=6), _counters(0, step=5) + [0, 0, 0, 0, 1, 0, 0]):
        got = _loss_grad(nb, net, theta, X, Y, None, 0.0, counters)[0]
        assert got != base
        _close(got, _loss_grad(ref, net, theta, X, Y, None, 0.0, counters)[0], 1e-10)


def test_loss_grad_accepts_read_only_input():
    # joblib hands memory-mapped, read-only arrays to workers
    net = _network([5], ["relu"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, sw = _data(3, 15, 5, 3, np.float64)
    for a in (X, Y, sw):
        a.flags.writeable = False
    got = _loss_grad(nb, net, theta, X, Y, sw, 0.1, _counters(3))
    want = _loss_grad(ref, net, theta, X, Y, sw, 0.1, _counters(3))
    _close(got[1], want[1], 1e-10)


# --------------------------------------------------------------------------- train_epoch
SOLVERS = {"sgd": (0, 0), "sgd-nesterov": (0, 1), "adam": (1, 0)}
EPOCH_NETS = {
    "relu-softmax": (["relu", "relu"], 3),
    "tanh-logistic": (["tanh", "logistic"], 2),
    "prelu-rrelu-maxout-identity": (["prelu", "rrelu", "maxout"], 0),
    "softplus-exp": (["softplus", "gelu_tanh"], 1),
}


def _epoch(backend, net, theta, X, Y, sw, order, batch_size, hyper, counters):
    theta = theta.copy()
    grad = np.full_like(theta, np.nan)
    state = np.random.default_rng(9).normal(0, 0.01, (2, theta.size)).astype(theta.dtype)
    state[1] = np.abs(state[1])  # Adam's second moment is non-negative
    counters = counters.copy()
    loss = backend.train_epoch(theta, grad, state, net.layout, net.act_params, X, Y, sw,
                               order, batch_size, hyper, counters,
                               _work(backend, net, batch_size, theta.dtype))
    return loss, theta, state, counters


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("net_name", list(EPOCH_NETS))
def test_train_epoch(dtype, solver, net_name):
    acts, loss_code = EPOCH_NETS[net_name]
    hidden = [7, 5, 6][: len(acts)]
    net = _network(hidden, acts, OUT_BY_LOSS[loss_code], n_out=1 if loss_code == 2 else 3)
    theta = _theta(net, dtype, seed=2) * dtype(0.5)
    X, Y, sw = _data(loss_code, 31, 5, net.layer_units[-1], dtype, seed=6)
    order = np.random.default_rng(7).permutation(31).astype(np.int64)
    solver_code, nesterov = SOLVERS[solver]
    hyper = np.array([0.005, 0.85, 0.9, 0.995, 1e-7, 0.05])
    counters = _counters(loss_code, solver_code, nesterov, adam_t=4, step=11)
    for weights, batch_size in ((None, 6), (sw, 8), (None, 31), (sw, 1)):
        got = _epoch(nb, net, theta, X, Y, weights, order, batch_size, hyper, counters)
        want = _epoch(ref, net, theta, X, Y, weights, order, batch_size, hyper, counters)
        what = f"weighted={weights is not None} batch_size={batch_size}"
        rtol = CALL_RTOL[dtype]
        _close(got[0], want[0], rtol, what + " loss")
        _close(got[1], want[1], rtol, what + " theta")
        _close(got[2], want[2], rtol, what + " opt_state")
        np.testing.assert_array_equal(got[3], want[3], err_msg=what + " counters")
        n_batches = -(-31 // batch_size)
        assert got[3][3] == 11 + n_batches
        assert got[3][2] == (4 + n_batches if solver == "adam" else 4)
        assert not np.array_equal(got[1], theta)  # the epoch did train


def test_train_epoch_sequence_of_calls_matches():
    # two epochs in a row carry theta, the moments and the counters across calls
    net = _network([6], ["rrelu"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, sw = _data(3, 25, 5, 3, np.float64)
    hyper = np.array([0.01, 0.9, 0.9, 0.999, 1e-8, 1e-4])
    runs = []
    for backend in (nb, ref):
        th, g = theta.copy(), np.empty_like(theta)
        state = np.zeros((2, theta.size))
        counters = _counters(3, solver=1)
        work = _work(backend, net, 4, np.float64)
        losses = []
        for epoch in range(3):
            order = np.random.default_rng(epoch).permutation(25).astype(np.int64)
            losses.append(backend.train_epoch(th, g, state, net.layout, net.act_params, X, Y,
                                              sw, order, 4, hyper, counters, work))
        runs.append((losses, th, state, counters))
    for got, want in zip(runs[0], runs[1]):
        _close(got, want, 1e-10)


def test_train_epoch_order_subset():
    # order may visit a subset of the rows (or repeat some); only those rows count
    net = _network([4], ["tanh"], "identity", n_out=2)
    theta = _theta(net, np.float64)
    X, Y, _ = _data(0, 20, 5, 2, np.float64)
    order = np.array([3, 3, 17, 0, 5, 9, 12], dtype=np.int64)
    hyper = np.array([0.05, 0.9, 0.9, 0.999, 1e-8, 0.01])
    got = _epoch(nb, net, theta, X, Y, None, order, 3, hyper, _counters(0))
    want = _epoch(ref, net, theta, X, Y, None, order, 3, hyper, _counters(0))
    _close(got[0], want[0], 1e-10)
    _close(got[1], want[1], 1e-10)


# ------------------------------------------------------------------------------- RReLU
@pytest.mark.parametrize(
    "seed, step, layer",
    [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (SEED, 12345, 2),
     (2**31 - 2, 2**40 + 7, 5), (2**62, 2**62 + 1, 3)],
)
def test_rrelu_draws_identical_to_reference(seed, step, layer):
    out = np.empty((9, 13))
    numba_kernels.rrelu_uniform_kernel(seed, step, layer, out)
    want = rrelu_uniform(seed, step, layer, 9, 13)
    np.testing.assert_array_equal(out, want)
    assert (out >= 0).all() and (out < 1).all()
    assert len(np.unique(out)) == out.size


# --------------------------------------------------------------------- argument checks
def test_workspace_too_small_is_an_error():
    net = _network([4], ["relu"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, _ = _data(3, 10, 5, 3, np.float64)
    work = np.empty(nb.workspace_size(net.layout, 10) - 1)
    with pytest.raises(ValueError, match="workspace_size"):
        nb.loss_grad(theta, np.empty_like(theta), net.layout, net.act_params, X, Y, None, 0.0,
                     _counters(3), work)


@pytest.mark.parametrize("serial", [-1, 3])
def test_serial_mode_outside_0_to_2_is_an_error(serial):
    net = _network([4], ["relu"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, _ = _data(3, 10, 5, 3, np.float64)
    order, hyper = np.arange(10, dtype=np.int64), np.array([0.005, 0.85, 0.9, 0.995, 1e-7, 0.05])
    counters = _counters(3, serial=serial)
    with pytest.raises(ValueError, match=r"counters\[SERIAL\] must be 0"):
        nb.loss_grad(theta, np.empty_like(theta), net.layout, net.act_params, X, Y, None, 0.0,
                     counters, _work(nb, net, 10, np.float64))
    with pytest.raises(ValueError, match=r"counters\[SERIAL\] must be 0"):
        _epoch(nb, net, theta, X, Y, None, order, 4, hyper, counters)
    _epoch(nb, net, theta, X, Y, None, order, 4, hyper, _counters(3, serial=2))  # a valid mode


def test_written_arrays_must_have_the_dtype_of_theta():
    net = _network([4], ["relu"], "softmax")
    theta = _theta(net, np.float32)
    X, _, _ = _data(3, 10, 5, 3, np.float32)
    out = np.empty((10, 3), dtype=np.float64)
    with pytest.raises(ValueError, match="out must be"):
        nb.forward(theta, net.layout, net.act_params, X, out, True, 10,
                   _work(nb, net, 10, np.float32))


def test_backend_identity():
    assert nb.name == "numba"
    net = _network([4, 3], ["relu", "maxout"], "softmax")
    assert nb.workspace_size(net.layout, 10) >= nb.workspace_size(net.layout, 1) > 0


def test_kernels_release_the_gil_and_are_reentrant():
    # every public kernel is compiled nogil; epochs run concurrently in threads give exactly
    # the results of the same epochs run one after the other
    for kernel in (numba_kernels.train_epoch_kernel, numba_kernels.loss_grad_kernel,
                   numba_kernels.forward_kernel, numba_kernels.plan):
        assert kernel.targetoptions["nogil"] is True
    net = _network([16, 8], ["relu", "tanh"], "softmax")
    X, Y, _ = _data(3, 200, 5, 3, np.float64)
    hyper = np.array([0.01, 0.9, 0.9, 0.999, 1e-8, 1e-4])
    order = np.random.default_rng(0).permutation(200).astype(np.int64)
    thetas = [_theta(net, np.float64, seed=s) for s in range(4)]
    sequential = [_epoch(nb, net, th, X, Y, None, order, 10, hyper, _counters(3, 1))
                  for th in thetas]
    results = [None] * 4

    def run(i):
        results[i] = _epoch(nb, net, thetas[i], X, Y, None, order, 10, hyper, _counters(3, 1))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential):
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])


# ---------------------------------------------------------------------- whole fits
def _tasks():
    rng = np.random.RandomState(0)
    X, y_bin = make_classification(70, 6, n_informative=4, random_state=0)
    _, y_3 = make_classification(70, 6, n_informative=4, n_classes=3, random_state=1)
    Xm, Ym = make_multilabel_classification(70, 6, n_classes=3, random_state=2)
    Xm = (Xm - Xm.mean(0)) / Xm.std(0)
    Yr = np.c_[X[:, 0] + X[:, 1] ** 2, X[:, 2] - X[:, 3]]
    Yr = (Yr - Yr.mean(0)) / Yr.std(0)
    y_pois = rng.poisson(np.exp(0.4 * X[:, 0] - 0.3 * X[:, 1]))
    return {
        "binary": (MLPClassifier, {}, X, y_bin),
        "3-class": (MLPClassifier, {}, X, y_3),
        "multilabel": (MLPClassifier, {}, Xm, Ym),
        "regression-2": (MLPRegressor, {}, X, Yr),
        "poisson": (MLPRegressor, {"loss": "poisson"}, X, y_pois),
    }


TASKS = _tasks()
FIT_ACTS = ["identity", "logistic", "tanh", "relu"]
FIT_SOLVERS = {
    "adam": dict(solver="adam"),
    "sgd-nesterov": dict(solver="sgd", nesterovs_momentum=True),
    "sgd-momentum-invscaling": dict(solver="sgd", nesterovs_momentum=False,
                                    learning_rate="invscaling"),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=2),
    "lbfgs": dict(solver="lbfgs"),
}
FIT_EXTRAS = {
    "defaults": {},
    "batch7": dict(batch_size=7),
    "early-stopping": dict(early_stopping=True),
    "alpha0.3-(9,5)": dict(alpha=0.3, hidden_layer_sizes=(9, 5)),
}


def _fit_grid():
    # every task with every solver (25 pairs); the activation and the extra setting rotate so
    # that each task meets every activation and every extra, and each solver every extra
    cases = []
    for i, (task, solver) in enumerate(itertools.product(TASKS, FIT_SOLVERS)):
        act = FIT_ACTS[(i + i // 5) % 4]
        extra = list(FIT_EXTRAS)[(i + 2 * (i // 5)) % 4]
        dtype = np.float64 if i % 3 else np.float32
        cases.append((task, act, solver, extra, dtype))
    # float64 and float32 both see every solver
    for solver in FIT_SOLVERS:
        cases.append(("3-class", "relu", solver, "batch7", np.float32))
        cases.append(("binary", "tanh", solver, "alpha0.3-(9,5)", np.float64))
    return cases


FIT_CASES = _fit_grid()


def _fit(task, act, solver, extra, dtype, backend):
    cls, base, X, y = TASKS[task]
    kw = dict(base, max_iter=12, random_state=3, activation=act, hidden_layer_sizes=(10,),
              learning_rate_init=0.01, backend=backend)
    kw.update(FIT_SOLVERS[solver])
    kw.update(FIT_EXTRAS[extra])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(**kw).fit(X.astype(dtype), y)


@pytest.mark.parametrize(
    "task, act, solver, extra, dtype", FIT_CASES,
    ids=["-".join([t, a, s, e, np.dtype(d).name]) for t, a, s, e, d in FIT_CASES],
)
def test_whole_fit_agrees_with_numpy_backend(task, act, solver, extra, dtype):
    got = _fit(task, act, solver, extra, dtype, "numba")
    want = _fit(task, act, solver, extra, dtype, "numpy")
    rtol = FIT_RTOL[dtype]
    assert got.backend_ == "numba" and want.backend_ == "numpy"
    assert got.n_iter_ == want.n_iter_
    assert got.coefs_[0].dtype == dtype
    _close(got.loss_, want.loss_, rtol, "loss_")
    if solver != "lbfgs":
        _close(got.loss_curve_, want.loss_curve_, rtol, "loss_curve_")
    if extra == "early-stopping" and solver != "lbfgs":
        _close(got.validation_scores_, want.validation_scores_, rtol, "validation_scores_")
    for l, (g, w) in enumerate(zip(got.coefs_, want.coefs_)):
        _close(g, w, rtol, f"coefs_[{l}]")
    for l, (g, w) in enumerate(zip(got.intercepts_, want.intercepts_)):
        _close(g, w, rtol, f"intercepts_[{l}]")
    X = TASKS[task][2].astype(dtype)
    if hasattr(got, "predict_proba"):
        _close(got.predict_proba(X), want.predict_proba(X), rtol, "predict_proba")
    else:
        _close(got.predict(X), want.predict(X), rtol, "predict")


_ONE_DTYPE_SCRIPT = """
import numpy as np
from sklearn.datasets import load_digits
from fastmlp import MLPClassifier
from fastmlp.kernels import numba_kernels as nk
X, y = load_digits(return_X_y=True)
MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, backend="numba").fit(X, y).predict(X[:1])
kernels = ("train_epoch_kernel", "train_epoch_parallel_kernel", "loss_grad_kernel",
           "forward_kernel")
print({k: sorted(str(d) for d in getattr(nk, k)._by_dtype) for k in kernels})
"""


def test_a_process_loads_only_the_kernels_of_the_dtype_it_runs():
    # a float64 fit and predict make (load or compile) float64 dispatchers only: the cold
    # start loads 2-3 epoch/forward kernels instead of 8
    import ast
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _ONE_DTYPE_SCRIPT], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    made = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert made["forward_kernel"] == ["float64"]
    assert made["loss_grad_kernel"] == []
    epoch = made["train_epoch_kernel"] + made["train_epoch_parallel_kernel"]
    assert epoch == ["float64"]


_CACHE_SCRIPT = """
import sys, warnings
import numpy as np
from sklearn.datasets import make_classification
from fastmlp import MLPClassifier, MLPRegressor
warnings.simplefilter("ignore")
X, y = make_classification(n_samples=600, n_features=20, n_informative=8, n_classes=3,
                           random_state=0)
r = X[:, 0] * 2.0 - X[:, 1]
out = {}
fits = [  # (name, estimator, target): split and whole batches, both solvers, L-BFGS
    ("adam", MLPClassifier(hidden_layer_sizes=(64, 64), alpha=1e-3, max_iter=3), y),
    ("adam_large", MLPClassifier(hidden_layer_sizes=(600, 512), activation="tanh",
                                 max_iter=2), y),
    ("adam_whole", MLPClassifier(hidden_layer_sizes=(32,), batch_size=32, max_iter=2), y),
    ("nesterov", MLPRegressor(hidden_layer_sizes=(48,), solver="sgd", momentum=0.9,
                              learning_rate_init=0.01, max_iter=3), r),
    ("lbfgs", MLPRegressor(hidden_layer_sizes=(24,), solver="lbfgs", max_iter=15), r),
]
for dtype in (np.float64, np.float32):
    Xd = X.astype(dtype)
    for name, est, target in fits:
        est.set_params(backend="numba", random_state=1).fit(Xd, target)
        key = name + "-" + np.dtype(dtype).name
        for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
            out[key + "-W%d" % l], out[key + "-b%d" % l] = W, b
        if hasattr(est, "loss_curve_"):
            out[key + "-loss_curve"] = np.array(est.loss_curve_)
        out[key + "-loss"] = np.array(est.loss_)
        out[key + "-predict"] = (est.predict_proba(Xd) if hasattr(est, "predict_proba")
                                 else est.predict(Xd))
np.savez(sys.argv[1], **out)
"""


def test_cached_kernels_give_the_numbers_of_freshly_compiled_ones(tmp_path):
    # The first process compiles the kernels into an empty cache; the second loads them.
    # Both must give the same fits bit for bit. Re-association or contraction with a choice
    # of operands let LLVM compile an optimizer loop differently inside the cached epoch than
    # in the callee that a fresh process runs: weights differed by an ulp between the first
    # process after an install and every later one.
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1")
    runs = []
    for i in range(2):
        path = tmp_path / f"run{i}.npz"
        proc = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(path)], env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        runs.append((proc.stdout, np.load(path)))
    (log0, fresh), (log1, cached) = runs
    assert "data saved" in log0 and "data loaded" not in log0  # compiled everything
    assert "data loaded" in log1 and "data saved" not in log1  # compiled nothing
    assert sorted(fresh.files) == sorted(cached.files)
    differ = [k for k in fresh.files if not np.array_equal(fresh[k], cached[k])]
    assert not differ, f"cached kernels changed {len(differ)} of {len(fresh.files)}: {differ}"


def test_per_dtype_kernels_never_compile_new_types():
    net = _network([6], ["relu"], "softmax", n_in=4)
    theta = _theta(net, np.float64)
    X = np.ones((5, 4), np.float32)  # float32 rows with float64 weights: no signature
    out = np.empty((5, 3))
    work = _work(nb, net, 5, np.float64)
    k = numba_kernels.forward_kernel
    with pytest.raises(TypeError):
        k(theta, net.layout, net.act_params, X, out, True, 5, work)
    with pytest.raises(TypeError, match="float32 or float64"):
        k(theta.astype(np.int64), net.layout, net.act_params, X, out, True, 5, work)
    with pytest.raises(TypeError, match="ndarray"):
        k(list(theta), net.layout, net.act_params, X, out, True, 5, work)
    assert k(theta, net.layout, net.act_params, X.astype(np.float64), out, True, 5, work) == 0
    assert len(k.dispatcher(np.float64).signatures) == 1
    assert np.dtype(np.int64) not in k._by_dtype


@pytest.mark.parametrize("parallel", [False, True])
def test_warm_blas_kernel_computes_each_product(parallel):
    # the one-time product per BLAS-calling thread (see _warm_blas): a real product, in
    # each slot of bufs
    rng = np.random.default_rng(0)
    bufs = np.zeros((2, 3, 24, 24), dtype=np.float32)
    bufs[:, :2] = rng.standard_normal((2, 2, 24, 24))
    numba_kernels.warm_blas_kernel(parallel)(bufs)
    for w in range(2):
        np.testing.assert_allclose(bufs[w, 2], bufs[w, 0] @ bufs[w, 1], rtol=1e-5, atol=1e-5)


def test_training_warms_blas_once(monkeypatch):
    # a fresh process's state, and a recorder in place of the warm kernel: two fits of
    # several epochs warm once (per thread count), before their first epoch
    monkeypatch.setattr(nb, "_warm_threads", [0])
    calls = []
    real = numba_kernels.warm_blas_kernel
    monkeypatch.setattr(numba_kernels, "warm_blas_kernel",
                        lambda parallel: calls.append(parallel) or real(parallel))
    X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(2):
            MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, backend="numba",
                          random_state=0).fit(X, y)
    assert nb._warm_threads[0] in (1, 2)
    assert calls and len(calls) == len(set(calls))   # once per thread count
