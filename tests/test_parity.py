"""Drop-in parity: the NumPy backend reproduces scikit-learn, the compiled backends the NumPy one.

The grid of the foundation issue, in full: {binary, 3-class, multilabel, 2-output regression}
x {identity, logistic, tanh, relu} x {adam, sgd+Nesterov, sgd momentum+invscaling,
sgd adaptive, lbfgs} x {defaults, batch_size=7, early_stopping, alpha=0.3 with (9, 5)},
max_iter=12 (320 configurations).
"""

import itertools
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from fastmlp import MLPClassifier, MLPRegressor

_rng = np.random.RandomState(0)
X = _rng.randn(60, 5)
TARGETS = {
    "binary": (X[:, 0] > 0).astype(int),
    "3-class": np.digitize(X[:, 1], [-0.5, 0.5]),
    "multilabel": np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(int),
    "regression-2": np.c_[X[:, 0] + X[:, 1] ** 2, X[:, 2]],
}
ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
SOLVERS = {
    "adam": dict(solver="adam"),
    "sgd-nesterov": dict(solver="sgd", nesterovs_momentum=True),
    "sgd-momentum-invscaling": dict(solver="sgd", nesterovs_momentum=False,
                                    learning_rate="invscaling"),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive"),
    "lbfgs": dict(solver="lbfgs"),
}
EXTRAS = {
    "defaults": {},
    "batch7": dict(batch_size=7),
    "early-stopping": dict(early_stopping=True),
    "alpha0.3-(9,5)": dict(alpha=0.3, hidden_layer_sizes=(9, 5)),
}
GRID = list(itertools.product(TARGETS, ACTIVATIONS, SOLVERS, EXTRAS))
IDS = ["-".join(c) for c in GRID]


def _config(target, activation, solver, extra):
    kw = dict(max_iter=12, random_state=1, activation=activation, hidden_layer_sizes=(10,))
    kw.update(SOLVERS[solver])
    kw.update(EXTRAS[extra])
    regression = target.startswith("regression")
    return kw, (SkMLPRegressor if regression else SkMLPClassifier), (
        MLPRegressor if regression else MLPClassifier)


def _fit(cls, kw, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(**kw).fit(X, y)


def _max_rel_diff(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf
    scale = np.maximum(np.abs(a), np.abs(b))
    diff = np.abs(a - b)
    return float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0), initial=0))


def _fitted_state(est):
    state = [("loss_", est.loss_)]
    if hasattr(est, "loss_curve_"):
        state.append(("loss_curve_", est.loss_curve_))
    state += [(f"coefs_[{i}]", c) for i, c in enumerate(est.coefs_)]
    state += [(f"intercepts_[{i}]", c) for i, c in enumerate(est.intercepts_)]
    return state


def assert_same_fit(ours, ref, rtol):
    assert ours.n_iter_ == ref.n_iter_
    for (name, a), (_, b) in zip(_fitted_state(ours), _fitted_state(ref)):
        diff = _max_rel_diff(a, b)
        assert diff <= rtol, f"{name} differs by a relative {diff:.3g} (> {rtol})"


@pytest.mark.parametrize("target, activation, solver, extra", GRID, ids=IDS)
def test_numpy_backend_reproduces_sklearn(target, activation, solver, extra):
    kw, sk_cls, our_cls = _config(target, activation, solver, extra)
    y = TARGETS[target]
    try:
        ref = _fit(sk_cls, kw, X, y)
    except Exception as exc:  # where scikit-learn raises, we raise the same type
        with pytest.raises(type(exc)):
            _fit(our_cls, dict(kw, backend="numpy"), X, y)
        return
    ours = _fit(our_cls, dict(kw, backend="numpy"), X, y)
    assert ours.backend_ == "numpy"
    assert_same_fit(ours, ref, rtol=1e-7)
    if extra == "early-stopping" and solver != "lbfgs":
        assert ours.validation_scores_ == ref.validation_scores_
        assert ours.best_validation_score_ == ref.best_validation_score_


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("target, activation, solver, extra", GRID, ids=IDS)
def test_compiled_backend_reproduces_numpy_float64(backend, target, activation, solver, extra):
    kw, _, cls = _config(target, activation, solver, extra)
    y = TARGETS[target]
    ref = _fit(cls, dict(kw, backend="numpy"), X, y)
    ours = _fit(cls, dict(kw, backend=backend), X, y)
    assert ours.backend_ == backend
    assert_same_fit(ours, ref, rtol=1e-6)


# float32: the defaults of each target and solver (rounding differs between a fused kernel
# and NumPy's separate passes, so the comparison is to float32 precision)
GRID32 = [c for c in GRID if c[3] == "defaults" and c[1] in ("tanh", "relu")]


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("target, activation, solver, extra", GRID32,
                         ids=["-".join(c) for c in GRID32])
def test_compiled_backend_reproduces_numpy_float32(backend, target, activation, solver, extra):
    kw, _, cls = _config(target, activation, solver, extra)
    y = TARGETS[target]
    X32 = X.astype(np.float32)
    ref = _fit(cls, dict(kw, backend="numpy"), X32, y)
    ours = _fit(cls, dict(kw, backend=backend), X32, y)
    assert ours.coefs_[0].dtype == np.float32
    assert_same_fit(ours, ref, rtol=2e-3)


def test_float32_trains_in_float32():
    y = TARGETS["3-class"]
    est = _fit(MLPClassifier, dict(max_iter=5, random_state=0, backend="numpy"),
               X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in est.coefs_ + est.intercepts_)
    assert est.predict_proba(X.astype(np.float32)).dtype == np.float32


def test_partial_fit_matches_sklearn():
    y = TARGETS["3-class"]
    ours = MLPClassifier(random_state=0, backend="numpy")
    ref = SkMLPClassifier(random_state=0)
    for _ in range(3):
        ours.partial_fit(X, y, classes=np.unique(y))
        ref.partial_fit(X, y, classes=np.unique(y))
    assert_same_fit(ours, ref, rtol=1e-7)


def test_warm_start_matches_sklearn():
    y = TARGETS["binary"]
    kw = dict(max_iter=4, random_state=0, warm_start=True)
    ours = _fit(MLPClassifier, dict(kw, backend="numpy"), X, y)
    ref = _fit(SkMLPClassifier, kw, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        ref.fit(X, y)
    assert_same_fit(ours, ref, rtol=1e-7)


def test_sample_weight_matches_sklearn():
    y = TARGETS["3-class"]
    w = np.random.RandomState(3).uniform(0.1, 2, X.shape[0])
    kw = dict(max_iter=6, random_state=0, batch_size=16)
    ours = MLPClassifier(**kw, backend="numpy")
    ref = SkMLPClassifier(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y, sample_weight=w)
        ref.fit(X, y, sample_weight=w)
    assert_same_fit(ours, ref, rtol=1e-7)


def test_poisson_matches_sklearn():
    y = np.exp(0.3 * X[:, 0])
    kw = dict(loss="poisson", max_iter=8, random_state=0)
    ours = _fit(MLPRegressor, dict(kw, backend="numpy"), X, y)
    ref = _fit(SkMLPRegressor, kw, X, y)
    assert_same_fit(ours, ref, rtol=1e-7)


def test_learning_rate_set_between_partial_fit_calls_takes_effect():
    y = TARGETS["binary"]
    a = MLPClassifier(random_state=0, solver="sgd", backend="numpy")
    b = MLPClassifier(random_state=0, solver="sgd", backend="numpy")
    a.partial_fit(X, y, classes=[0, 1])
    b.partial_fit(X, y, classes=[0, 1])
    b.set_params(learning_rate_init=0.5)
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    assert _max_rel_diff(a.coefs_[0], b.coefs_[0]) > 1e-3
    assert b._optimizer.learning_rate == 0.5
    assert a._optimizer.learning_rate == 0.001


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("target", ["binary", "3-class", "multilabel"])
def test_labels_follow_label_binarizer_thresholds(target, dtype):
    """``predict`` turns probabilities into labels as scikit-learn's LabelBinarizer does,
    including probabilities at and next to the 0.5 threshold."""
    y = TARGETS[target]
    est = _fit(MLPClassifier, dict(max_iter=2, random_state=0, hidden_layer_sizes=(4,)),
               X.astype(dtype), np.where(y == 1, "yes", "no") if target == "binary" else y)
    half = dtype(0.5)
    edge = [0.0, half, np.nextafter(half, dtype(1)), np.nextafter(half, dtype(0)), 1.0,
            0.25, 0.75]
    n_out = est.n_outputs_
    proba = np.array([[p] * n_out for p in edge], dtype=dtype)
    if target == "3-class":  # rows that are not all ties: each class wins somewhere
        proba = np.random.default_rng(0).dirichlet(np.ones(n_out), 50).astype(dtype)
    expected = est._label_binarizer.inverse_transform(
        proba.ravel() if n_out == 1 else proba)
    np.testing.assert_array_equal(est._labels(proba), expected)
