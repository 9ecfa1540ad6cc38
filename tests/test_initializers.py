"""Initialisation schemes: documented variances (seed 002), sklearn parity, zeros, callables."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.utils import check_random_state

from fastmlp import MLPClassifier, MLPRegressor
from fastmlp.initializers import INITIALIZERS, initialize_layer

BACKENDS = ["numpy", "numba", "cython"]

FAN_IN, FAN_OUT = 400, 300


# The documented Var(W) of each scheme (fastmlp/initializers.py), and how the intercepts
# start: 'same' (drawn like W), 'uniform' (U(-1, 1)) or 'zero'.
def _sklearn_var(activation):
    factor = 2.0 if activation == "logistic" else 6.0
    return factor / (3.0 * (FAN_IN + FAN_OUT))  # U(-r, r) has variance r^2 / 3


EXPECTED = {
    "sklearn": (_sklearn_var, "same", "uniform"),
    "glorot_uniform": (lambda act: 2.0 / (FAN_IN + FAN_OUT), "zero", "uniform"),
    "glorot_normal": (lambda act: 2.0 / (FAN_IN + FAN_OUT), "zero", "normal"),
    "he_uniform": (lambda act: 2.0 / FAN_IN, "zero", "uniform"),
    "he_normal": (lambda act: 2.0 / FAN_IN, "zero", "normal"),
    "lecun_normal": (lambda act: 1.0 / FAN_IN, "zero", "normal"),
    "normal": (lambda act: 1e-4, "zero", "normal"),
    "uniform": (lambda act: 1.0 / 3.0, "uniform", "uniform"),
    "zeros": (lambda act: 0.0, "zero", "zero"),
}


def test_every_scheme_has_an_expected_variance():
    assert set(EXPECTED) == set(INITIALIZERS)


def _check_distribution(W, var, shape):
    assert W.shape == (FAN_IN, FAN_OUT)
    if shape == "zero":
        assert_array_equal(W, 0.0)
        return
    assert abs(W.mean()) < 4 * np.sqrt(var / W.size)  # 4 standard errors
    assert W.var() == pytest.approx(var, rel=0.03)
    kurtosis = np.mean((W - W.mean()) ** 4) / W.var() ** 2
    if shape == "uniform":  # bounded by sqrt(3 var), kurtosis 1.8
        assert np.abs(W).max() <= np.sqrt(3 * var) * (1 + 1e-12)
        assert kurtosis == pytest.approx(1.8, abs=0.1)
    else:  # normal: kurtosis 3
        assert kurtosis == pytest.approx(3.0, abs=0.15)


@pytest.mark.parametrize("activation", ["relu", "logistic"])
@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_registry_variance_matches_formula(name, activation):
    var_of, intercepts, shape = EXPECTED[name]
    W, b = initialize_layer(name, check_random_state(0), FAN_IN, FAN_OUT, np.float64,
                            activation)
    assert W.dtype == b.dtype == np.float64
    _check_distribution(W, var_of(activation), shape)
    assert b.shape == (FAN_OUT,)
    if intercepts == "zero":
        assert_array_equal(b, 0.0)
    elif intercepts == "uniform":
        assert -1 <= b.min() and b.max() <= 1 and b.var() == pytest.approx(1 / 3, rel=0.2)
    else:  # drawn from the same range as W
        assert np.abs(b).max() <= np.sqrt(3 * var_of(activation)) * (1 + 1e-12)


def _initialised(**kw):
    """An estimator whose weights are initialised by fit's own code path, untrained."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, FAN_IN), rng.randn(20)
    est = MLPRegressor(hidden_layer_sizes=(FAN_OUT,), random_state=0, backend="numpy", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # init='zeros' warns (tested below)
        est._prepare_fit(X, y)
    return est


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_estimator_init_parameter_reaches_the_weights(name):
    var_of, _, shape = EXPECTED[name]
    est = _initialised(init=name, activation="tanh")
    _check_distribution(est.coefs_[0], var_of("tanh"), shape)


def test_init_float32_weights_have_float32_dtype():
    W, b = initialize_layer("he_normal", check_random_state(0), 5, 4, np.float32, "relu")
    assert W.dtype == b.dtype == np.float32


# ----------------------------------------------------------------- scikit-learn parity
X_CLF, Y_CLF = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)


@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh"])
def test_sklearn_init_draws_what_sklearn_draws(activation):
    ours = MLPClassifier(hidden_layer_sizes=(7, 5), activation=activation, random_state=3,
                         backend="numpy")
    ours._prepare_fit(X_CLF, Y_CLF)
    # scikit-learn's own initialisation, without training (private API of scikit-learn 1.x)
    sk = SkMLPClassifier(hidden_layer_sizes=(7, 5), activation=activation, random_state=3)
    sk._random_state = check_random_state(3)
    sk._label_binarizer = ours._label_binarizer
    sk._initialize(np.zeros((1, 3)), [4, 7, 5, 3], np.float64)
    for W_ours, W_sk in zip(ours.coefs_, sk.coefs_):
        assert_array_equal(W_ours, W_sk)
    for b_ours, b_sk in zip(ours.intercepts_, sk.intercepts_):
        assert_array_equal(b_ours, b_sk)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_sklearn_init_reproduces_sklearn_coefs_after_one_epoch(activation, backend):
    kw = dict(hidden_layer_sizes=(7, 5), activation=activation, random_state=3, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkMLPClassifier(**kw).fit(X_CLF, Y_CLF)
        ours = MLPClassifier(init="sklearn", backend=backend, **kw).fit(X_CLF, Y_CLF)
    # the NumPy backend follows scikit-learn's order of operations: equal to rounding;
    # compiled backends within the kernel contract's float64 tolerance
    rtol = 1e-12 if backend == "numpy" else 1e-6
    for W_ours, W_sk in zip(ours.coefs_, sk.coefs_):
        assert_allclose(W_ours, W_sk, rtol=rtol, atol=rtol * 1e-3)
    for b_ours, b_sk in zip(ours.intercepts_, sk.intercepts_):
        assert_allclose(b_ours, b_sk, rtol=rtol, atol=rtol * 1e-3)


def test_sklearn_is_the_default_init():
    assert MLPClassifier().init == "sklearn"
    assert MLPRegressor().init == "sklearn"


# ------------------------------------------------------------------------ zeros
def test_zeros_warns():
    with pytest.warns(UserWarning, match="identical"):
        MLPClassifier(hidden_layer_sizes=(4,), init="zeros", max_iter=1,
                      backend="numpy")._prepare_fit(X_CLF, Y_CLF)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zeros_keeps_units_identical(backend):
    # the warning's claim (seed 000): gradient descent cannot break the symmetry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", init="zeros",
                            max_iter=20, backend=backend, random_state=0).fit(X_CLF, Y_CLF)
    W0, b0 = est.coefs_[0], est.intercepts_[0]
    assert_allclose(W0, W0[:, :1].repeat(W0.shape[1], axis=1))
    assert_allclose(b0, b0[0])


# --------------------------------------------------------------------- callables
def test_callable_init_is_used_with_the_estimator_rng():
    calls = []

    def init(rng, fan_in, fan_out, dtype):
        calls.append((fan_in, fan_out, dtype))
        return rng.uniform(-0.5, 0.5, (fan_in, fan_out))

    a = MLPClassifier(hidden_layer_sizes=(6,), init=init, random_state=1, backend="numpy")
    a._prepare_fit(X_CLF, Y_CLF)
    assert [c[:2] for c in calls] == [(4, 6), (6, 3)]
    assert all(np.dtype(c[2]) == np.float64 for c in calls)
    assert all(np.abs(W).max() <= 0.5 for W in a.coefs_)
    assert all(np.all(b == 0) for b in a.intercepts_)
    b = MLPClassifier(hidden_layer_sizes=(6,), init=init, random_state=1, backend="numpy")
    b._prepare_fit(X_CLF, Y_CLF)
    assert_array_equal(a._theta, b._theta)  # reproducible through random_state


@pytest.mark.parametrize("backend", BACKENDS)
def test_callable_init_trains(backend):
    def init(rng, fan_in, fan_out, dtype):
        return rng.normal(0, np.sqrt(1.0 / fan_in), (fan_in, fan_out)).astype(dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(8,), init=init, max_iter=100,
                            learning_rate_init=0.02, random_state=0,
                            backend=backend).fit(X_CLF, Y_CLF)
    assert est.score(X_CLF, Y_CLF) > 0.9


def test_callable_init_with_wrong_shape_raises():
    def init(rng, fan_in, fan_out, dtype):
        return np.zeros((fan_out, fan_in))

    with pytest.raises(ValueError, match="shape"):
        MLPClassifier(hidden_layer_sizes=(6,), init=init, backend="numpy").fit(X_CLF, Y_CLF)


def test_unknown_init_raises():
    with pytest.raises(ValueError, match="init"):
        MLPClassifier(init="nope", backend="numpy").fit(X_CLF, Y_CLF)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(set(INITIALIZERS) - {"zeros"}))
def test_every_init_trains_on_every_backend(name, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", init=name,
                            max_iter=100, learning_rate_init=0.02, random_state=0,
                            backend=backend).fit(X_CLF, Y_CLF)
    assert np.isfinite(est._theta).all()
    assert est.score(X_CLF, Y_CLF) > 0.9  # three classes: chance is 1/3
