"""Numerical extremes: huge inputs, saturated logits, absurd learning rates.

Training either ends with finite weights or stops with a clear ValueError (keeping the last
finite weights, so the model stays usable); predictions of a classifier are always finite,
predict_log_proba is never -inf, and no floating-point RuntimeWarning escapes, on every
backend.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

from fastmlp import MLPClassifier, MLPRegressor
from fastmlp.backends import get_backend

BACKENDS = ["numpy", "numba", "cython"]
SOLVERS = ["adam", "sgd", "lbfgs"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_DIVERGED = r"(?i)(diverged|non-finite)"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _data(n=40, seed=0, dtype=np.float64):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 3).astype(dtype)
    return X


_TASKS = {
    "binary": lambda X: (MLPClassifier, (X[:, 0] > 0).astype(int)),
    "multiclass": lambda X: (MLPClassifier, np.arange(len(X)) % 3),
    "multilabel": lambda X: (MLPClassifier, np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(int)),
    "regression": lambda X: (MLPRegressor, X[:, 0] + 1.0),
    "poisson": lambda X: (MLPRegressor, np.abs(X[:, 0])),
}


def _make(task, X, backend, **kw):
    cls, y = _TASKS[task](X)
    kw.setdefault("hidden_layer_sizes", (5,))
    kw.setdefault("max_iter", 5)
    kw.setdefault("random_state", 0)
    if task == "poisson":
        kw["loss"] = "poisson"
    return cls(backend=backend, **kw), y


def _check_outputs(est, X):
    """Every prediction finite; probabilities valid; log-probabilities finite and <= 0."""
    pred = est.predict(X)
    if pred.dtype.kind == "f":
        assert np.isfinite(pred).all()
    if isinstance(est, MLPClassifier):
        proba = est.predict_proba(X)
        log_proba = est.predict_log_proba(X)
        assert np.isfinite(proba).all() and np.isfinite(log_proba).all()
        assert ((proba >= 0) & (proba <= 1)).all()
        assert (log_proba <= 0).all()
        assert_allclose(np.exp(log_proba), proba, atol=1e-6)
        if est.out_activation_ == "softmax" or est.n_outputs_ == 1:
            assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def _fit_or_diverge(est, X, y):
    """Fit; a divergence must be a clear ValueError that leaves finite, usable weights."""
    try:
        est.fit(X, y)
    except ValueError as exc:
        assert __import__("re").search(_DIVERGED, str(exc)), str(exc)
        assert "learning_rate_init" in str(exc) or "scale" in str(exc), str(exc)
        diverged = True
    else:
        diverged = False
    assert np.isfinite(est._theta).all()
    for a in est.coefs_ + est.intercepts_:
        assert np.isfinite(a).all()
    return diverged


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", list(_TASKS))
def test_inputs_scaled_by_1e150(backend, task, solver, dtype):
    if dtype == np.float32:
        scale = 1e30  # 1e150 is not a float32; the float32 analogue is near its range
    else:
        scale = 1e150
    X = _data(dtype=dtype) * dtype(scale)
    est, y = _make(task, X, backend, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _fit_or_diverge(est, X, y)
        if isinstance(est, MLPClassifier):
            _check_outputs(est, X)
            _check_outputs(est, X[:5] / dtype(scale))
        else:
            _check_outputs(est, X / dtype(scale))


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("task", list(_TASKS))
def test_learning_rate_1e8(backend, task, solver):
    X = _data()
    est, y = _make(task, X, backend, solver=solver, learning_rate_init=1e8, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        diverged = _fit_or_diverge(est, X, y)
        if diverged:
            # stopped at the epoch the weights became non-finite, with the last finite ones
            assert len(est.loss_curve_) == est.n_iter_ - 1
            assert all(np.isfinite(est.loss_curve_))
        if isinstance(est, MLPClassifier) or not diverged:
            _check_outputs(est, X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_saturated_logits(backend, task, dtype):
    X = _data(dtype=dtype)
    est, y = _make(task, X, backend, activation="identity")
    est.fit(X, y)
    # blow the output layer up so that every logit is thousands of units away from 0
    est.coefs_[-1][...] *= dtype(1e6)
    est.intercepts_[-1][...] *= dtype(1e6)
    assert np.shares_memory(est.coefs_[-1], est._theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        logits = est._forward_pass_fast(X, apply_output=False)
        assert np.abs(logits).max() > 1e3
        _check_outputs(est, X)
        _check_outputs(est, X * dtype(1e20))
        log_proba = est.predict_log_proba(X)
        # the log of a probability that rounds to 0 is about -|logit|, not -inf
        assert log_proba.min() < -100
        # and keeps training from there without a warning leaking
        est.set_params(warm_start=True, max_iter=2)
        _fit_or_diverge(est, X, y)
        _check_outputs(est, X)


@pytest.mark.parametrize("task", list(_TASKS))
def test_predict_on_extreme_inputs_of_a_normal_model(backend, task):
    X = _data()
    est, y = _make(task, X, backend, activation="tanh")
    est.fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        if isinstance(est, MLPClassifier):
            for scale in (1e150, 1e300, -1e300):
                _check_outputs(est, X * scale)
        else:
            # tanh saturates: the regressor's output stays bounded however large X is
            _check_outputs(est, X * 1e300)


@pytest.mark.parametrize("activation", ["logistic", "softplus", "elu", "selu", "swish",
                                        "gelu", "gelu_tanh", "tanh"])
def test_activations_with_huge_preactivations(backend, activation):
    X = _data()
    est, y = _make("multiclass", X, backend, activation=activation, max_iter=3)
    est.fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for scale in (1e3, 1e150, -1e150):
            _check_outputs(est, X * scale)


def test_poisson_training_with_large_targets(backend):
    X = _data()
    y = np.exp(3 * np.abs(X[:, 0])) * 1e3
    est = MLPRegressor(hidden_layer_sizes=(5,), loss="poisson", max_iter=5, random_state=0,
                       backend=backend, learning_rate_init=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        if not _fit_or_diverge(est, X, y):
            assert np.isfinite(est.predict(X)).all()


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_inf_minus_inf_in_the_network_is_a_clear_error(backend, cls):
    """A hidden layer that overflows to +inf in two units whose output weights cancel gives
    the output inf - inf: predict raises a ValueError that says so instead of returning NaN
    (or labels cast from NaN); so does score, and the validation score of early stopping is
    NaN."""
    X = _data()
    y = (X[:, 0] > 0).astype(int) if cls is MLPClassifier else X[:, 0]
    est = cls(hidden_layer_sizes=(2,), activation="relu", max_iter=2, random_state=0,
              backend=backend).fit(X, y)
    est.coefs_[0][...] = 1e300
    est.coefs_[1][...] = np.array([[1.0], [-1.0]])
    est.intercepts_[0][...] = 0.0
    rows = np.array([[0.0, 0.0, 0.0], [1e10, 0.0, 0.0]])  # the second overflows
    methods = [est.predict] + ([est.predict_proba, est.predict_log_proba]
                               if cls is MLPClassifier else [])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for method in methods:
            assert np.isfinite(method(rows[:1])).all()
            with pytest.raises(ValueError, match="overflowed on 1 of these 2 rows"):
                method(rows)
        with pytest.raises(ValueError, match="overflowed on 1 of these 2 rows"):
            est.score(rows, y[:2])
        assert np.isnan(est._score(rows, y[:2]))


def test_score_of_predictions_too_large_to_square(backend):
    """r2 of finite predictions whose squares overflow: -inf, with no overflow warning (an
    early-stopping fit scores its validation rows this way)."""
    X = _data()
    reg = MLPRegressor(hidden_layer_sizes=(2,), max_iter=2, random_state=0,
                       backend=backend).fit(X, X[:, 0])
    reg.intercepts_[-1][...] = 1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert reg.score(X, X[:, 0]) == -np.inf
        assert reg._score(X, X[:, 0]) == -np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poisson_logits_below_the_smallest_normal(backend, dtype):
    """exp of a logit far below log(tiny) would be 0: the prediction stays a positive normal
    number, and the deviance y log(y / p), whose y / p would overflow, is finite and equals
    y (log y - log p) - y + p of that prediction."""
    X = _data(n=8, dtype=dtype)
    y = np.array([0.0, 1.0, 3.0, 50.0, 0.0, 2.0, 1e3, 5.0])
    est = MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=1, random_state=0,
                       backend=backend).fit(X, y)
    est.intercepts_[-1][:] = -1e4  # every logit far below log(tiny) of either dtype
    tiny = np.finfo(dtype).tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pred = est.predict(X)
        assert pred.dtype == dtype
        assert (pred >= tiny).all() and (pred < 4 * tiny).all()
        p = pred.astype(np.float64)
        squares = sum(float((c.astype(np.float64) ** 2).sum()) for c in est.coefs_)
        est.partial_fit(X, y)  # one batch: its loss is taken at the weights above
    deviance = np.where(y > 0, y * (np.log(np.maximum(y, 1)) - np.log(p)), 0.0) - y + p
    expected = deviance.mean() + 0.5 * est.alpha * squares / len(y)
    assert np.isfinite(est.loss_)
    assert_allclose(est.loss_, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True])
def test_forward_reports_non_finite_input_and_output(backend, dtype, sparse):
    # the contract's status: 0 finite, 1 NaN/inf in X (the fast path of predict then takes
    # the validating path), 2 finite X but an output overflowed
    X = _data(n=30, dtype=dtype)
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, backend=backend,
                       random_state=0).fit(X, X[:, 0])
    be, net, theta = get_backend(est.backend_), est._network, est._theta
    work = np.empty(be.workspace_size(net.layout, 8), dtype=dtype)

    def status(A, th=theta):
        out = np.empty((A.shape[0], 1), dtype=dtype)
        A = sp.csr_matrix(A) if sparse else A
        with np.errstate(all="ignore"):
            code = be.forward(th, net.layout, net.act_params, A, out, True, 8, work)
        if code != 1:
            assert code == (0 if np.isfinite(out).all() else 2)
        return code

    assert status(X) == 0
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[17, 2] = bad
        assert status(Xb) == 1
    # weights and inputs so large that the products overflow even where a backend
    # accumulates float32 products in float64
    huge = np.full_like(X, np.finfo(dtype).max)
    assert status(huge, theta * dtype(1e30 if dtype == np.float32 else 1e300)) == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fast_predict_path_rejects_non_finite_rows(backend, bad):
    X = _data()
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, backend=backend,
                        random_state=0).fit(X, X[:, 0] > 0)
    row = X[:1].copy()  # C-contiguous, right dtype and width: the fast path
    row[0, 1] = bad
    for method in (est.predict, est.predict_proba, est.predict_log_proba):
        with pytest.raises(ValueError, match="(?i)(NaN|infinity)"):
            method(row)
