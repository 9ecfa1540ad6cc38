"""Threads: fits running on several threads give exactly the results of the same fits run one
after another, and one fitted model predicts safely and identically from several threads."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fastmlp import MLPClassifier, MLPRegressor

BACKENDS = ["numpy", "numba", "cython"]
N_THREADS = 4

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rs = np.random.RandomState(3)
X = _rs.randn(120, 5)
Y_CLS = np.digitize(X[:, 0] + X[:, 1], [-0.7, 0.7])
Y_REG = np.c_[np.sin(X[:, 0]), X[:, 1] * X[:, 2]]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _configs(backend):
    out = []
    for i, (solver, act, dtype) in enumerate([
        ("adam", "relu", np.float64), ("sgd", "tanh", np.float64),
        ("lbfgs", "logistic", np.float64), ("adam", "rrelu", np.float32),
        ("sgd", "prelu", np.float32), ("adam", "maxout", np.float64),
        ("lbfgs", "gelu", np.float32), ("adam", "elu", np.float64),
    ]):
        cls = MLPClassifier if i % 2 == 0 else MLPRegressor
        y = Y_CLS if cls is MLPClassifier else Y_REG
        est = cls(hidden_layer_sizes=(16, 8), activation=act, solver=solver, max_iter=15,
                  random_state=i, backend=backend, batch_size=32, learning_rate_init=0.01)
        out.append((est, X.astype(dtype), y))
    return out


def _result(est, Xd):
    return est._theta.copy(), est.predict(Xd), list(getattr(est, "loss_curve_", [])), \
        est.n_iter_


def _assert_same(a, b):
    assert_array_equal(a[0], b[0], strict=True)
    assert_array_equal(a[1], b[1], strict=True)
    assert a[2] == b[2]
    assert a[3] == b[3]


def test_fits_in_threads_equal_sequential_fits(backend):
    sequential = []
    for est, Xd, y in _configs(backend):
        sequential.append(_result(est.fit(Xd, y), Xd))

    configs = _configs(backend)
    barrier = threading.Barrier(N_THREADS)

    def job(i):
        est, Xd, y = configs[i]
        if i < N_THREADS:
            barrier.wait()  # the first wave starts together
        return _result(est.fit(Xd, y), Xd)

    with ThreadPoolExecutor(N_THREADS) as pool:
        threaded = list(pool.map(job, range(len(configs))))
    for a, b in zip(sequential, threaded):
        _assert_same(a, b)


def test_same_configuration_fitted_in_many_threads(backend):
    def make():
        return MLPClassifier(hidden_layer_sizes=(32,), max_iter=10, random_state=0,
                             backend=backend, batch_size=16, activation="rrelu")

    expected = _result(make().fit(X, Y_CLS), X)
    barrier = threading.Barrier(N_THREADS)

    def job(_):
        est = make()
        barrier.wait()
        return _result(est.fit(X, Y_CLS), X)

    with ThreadPoolExecutor(N_THREADS) as pool:
        for got in pool.map(job, range(N_THREADS)):
            _assert_same(expected, got)


def test_partial_fit_in_threads(backend):
    def run(seed):
        est = MLPRegressor(hidden_layer_sizes=(8,), random_state=seed, backend=backend,
                           learning_rate_init=0.01)
        for start in range(0, 120, 30):
            est.partial_fit(X[start:start + 30], Y_REG[start:start + 30])
        return _result(est, X)

    expected = [run(s) for s in range(N_THREADS)]
    with ThreadPoolExecutor(N_THREADS) as pool:
        got = list(pool.map(run, range(N_THREADS)))
    for a, b in zip(expected, got):
        _assert_same(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_from_many_threads(backend, dtype):
    Xd = X.astype(dtype)
    clf = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=10, random_state=0,
                        backend=backend).fit(Xd, Y_CLS)
    # expected results computed one after another, slice by slice (BLAS may round a
    # 1-row product differently from a 120-row one, so each slice is its own reference)
    slices = [slice(None)] + [slice(t, t + 1) for t in range(N_THREADS)] + \
        [slice(t * 7, t * 7 + 33) for t in range(N_THREADS)]
    expected = {(s.start, s.stop): (clf.predict_proba(Xd[s]), clf.predict_log_proba(Xd[s]),
                                     clf.predict(Xd[s])) for s in slices}
    theta_before = clf._theta.copy()
    barrier = threading.Barrier(N_THREADS)

    def job(t):
        barrier.wait()
        out = []
        for rep in range(20):
            if (t + rep) % 3 == 0:
                rows = slice(None)
            elif (t + rep) % 3 == 1:
                rows = slice(t, t + 1)  # one-row predictions use a cached buffer size
            else:
                rows = slice(t * 7, t * 7 + 33)
            out.append((rows, clf.predict_proba(Xd[rows]), clf.predict_log_proba(Xd[rows]),
                        clf.predict(Xd[rows])))
        return out

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(job, range(N_THREADS)))
    for out in results:
        for rows, proba, log_proba, pred in out:
            ref = expected[(rows.start, rows.stop)]
            assert_array_equal(proba, ref[0], strict=True)
            assert_array_equal(log_proba, ref[1], strict=True)
            assert_array_equal(pred, ref[2], strict=True)
    assert_array_equal(clf._theta, theta_before)


def test_predict_while_other_models_fit(backend):
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=10, random_state=0,
                       backend=backend).fit(X, Y_REG)
    expected = reg.predict(X)
    sequential = [_result(est.fit(Xd, y), Xd) for est, Xd, y in _configs(backend)[:3]]
    configs = _configs(backend)[:3]

    def fit_job(i):
        est, Xd, y = configs[i]
        return _result(est.fit(Xd, y), Xd)

    def predict_job(_):
        return [reg.predict(X) for _ in range(10)]

    with ThreadPoolExecutor(N_THREADS + 2) as pool:
        fits = [pool.submit(fit_job, i) for i in range(3)]
        preds = [pool.submit(predict_job, i) for i in range(3)]
        for f, ref in zip(fits, sequential):
            _assert_same(ref, f.result())
        for p in preds:
            for got in p.result():
                assert_array_equal(got, expected, strict=True)
