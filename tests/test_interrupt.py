"""Ctrl-C (KeyboardInterrupt) during fit leaves a usable model with the weights reached so far
and a warning, on every backend.

The interrupt is raised deterministically (no real signals): from the backend's
``train_epoch`` on a given epoch, from the verbose print, or from ``loss_grad`` during L-BFGS.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastmlp._training as training
from fastmlp import MLPClassifier, MLPRegressor
from fastmlp.backends import get_backend

BACKENDS = ["numpy", "numba", "cython"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rs = np.random.RandomState(0)
X = _rs.randn(50, 4)
Y_CLS = (X[:, 0] * X[:, 1] > 0).astype(int)
Y_REG = X[:, 0] - X[:, 2]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _interrupt_on_call(monkeypatch, backend, entry, n, before=True):
    """Make the backend's ``entry`` raise KeyboardInterrupt on its n-th call (1-based),
    before running (``before``) or after running that call."""
    module = get_backend(backend)
    original = getattr(module, entry)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n and before:
            raise KeyboardInterrupt
        out = original(*args, **kwargs)
        if calls["n"] == n:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(module, entry, wrapper)
    return calls


def _fit_interrupted(est, X, y, **fit_kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = est.fit(X, y, **fit_kw)  # must not raise
    assert result is est
    messages = [str(w.message) for w in caught]
    assert any("interrupted" in m.lower() for m in messages), messages
    return est


def _assert_usable(est, X, y):
    assert np.isfinite(est._theta).all()
    for arr in est.coefs_ + est.intercepts_:
        assert np.shares_memory(arr, est._theta)
    pred = est.predict(X)
    assert pred.shape[0] == X.shape[0]
    if isinstance(est, MLPClassifier):
        proba = est.predict_proba(X)
        assert np.isfinite(proba).all()
        assert np.allclose(proba.sum(axis=1), 1)
    est.score(X, y)


def _make(cls, backend, **kw):
    kw.setdefault("hidden_layer_sizes", (6,))
    kw.setdefault("max_iter", 10)
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate_init", 0.01)
    return cls(backend=backend, **kw)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("cls, y", [(MLPClassifier, Y_CLS), (MLPRegressor, Y_REG)],
                         ids=["clf", "reg"])
def test_interrupt_in_third_epoch_keeps_two_epochs(backend, monkeypatch, cls, y, solver):
    reference = _make(cls, backend, solver=solver, max_iter=2).fit(X, y)
    calls = _interrupt_on_call(monkeypatch, backend, "train_epoch", 3)
    est = _fit_interrupted(_make(cls, backend, solver=solver), X, y)
    assert calls["n"] == 3  # it was interrupted, not finished early
    assert est.n_iter_ == 2
    assert est.loss_curve_ == reference.loss_curve_
    assert_array_equal(est._theta, reference._theta)  # the weights reached so far
    _assert_usable(est, X, y)
    monkeypatch.undo()
    # and it keeps training
    est.partial_fit(X, y)
    assert est.n_iter_ == 1
    est.set_params(warm_start=True, max_iter=2).fit(X, y)
    _assert_usable(est, X, y)


def test_interrupt_after_an_epoch_ran_keeps_its_weights(backend, monkeypatch):
    reference = _make(MLPClassifier, backend, max_iter=3).fit(X, Y_CLS)
    _interrupt_on_call(monkeypatch, backend, "train_epoch", 3, before=False)
    est = _fit_interrupted(_make(MLPClassifier, backend), X, Y_CLS)
    # the third epoch's updates happened before the interrupt: they are kept
    assert_array_equal(est._theta, reference._theta)
    _assert_usable(est, X, Y_CLS)


def test_interrupt_in_verbose_print(backend, monkeypatch, capsys):
    reference = _make(MLPRegressor, backend, max_iter=3).fit(X, Y_REG)
    printed = []

    def fake_print(*args, **kwargs):
        printed.append(args)
        if len(printed) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "print", fake_print, raising=False)
    est = _fit_interrupted(_make(MLPRegressor, backend, verbose=True), X, Y_REG)
    assert len(printed) == 3
    assert est.n_iter_ == 3
    assert_array_equal(est._theta, reference._theta)
    _assert_usable(est, X, Y_REG)


def test_interrupt_in_first_epoch_leaves_initial_weights(backend, monkeypatch):
    initial = _make(MLPClassifier, backend, max_iter=1)
    _interrupt_on_call(monkeypatch, backend, "train_epoch", 1)
    est = _fit_interrupted(initial, X, Y_CLS)
    assert est.n_iter_ == 0
    _assert_usable(est, X, Y_CLS)


def test_interrupt_with_early_stopping_restores_best(backend, monkeypatch):
    _interrupt_on_call(monkeypatch, backend, "train_epoch", 4)
    est = _fit_interrupted(
        _make(MLPClassifier, backend, early_stopping=True, validation_fraction=0.2), X, Y_CLS)
    assert est.n_iter_ == 3
    assert len(est.validation_scores_) == 3
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert_array_equal(est._theta, est._best_theta)
    _assert_usable(est, X, Y_CLS)


def test_interrupt_during_partial_fit(backend, monkeypatch):
    est = _make(MLPClassifier, backend)
    est.partial_fit(X, Y_CLS, classes=[0, 1])
    before = est._theta.copy()
    _interrupt_on_call(monkeypatch, backend, "train_epoch", 1)
    with pytest.warns(UserWarning, match="(?i)interrupted"):
        est.partial_fit(X, Y_CLS)
    assert_array_equal(est._theta, before)
    _assert_usable(est, X, Y_CLS)
    monkeypatch.undo()
    est.partial_fit(X, Y_CLS)
    assert not np.array_equal(est._theta, before)


@pytest.mark.parametrize("cls, y", [(MLPClassifier, Y_CLS), (MLPRegressor, Y_REG)],
                         ids=["clf", "reg"])
def test_interrupt_during_lbfgs(backend, monkeypatch, cls, y):
    calls = _interrupt_on_call(monkeypatch, backend, "loss_grad", 5)
    est = _fit_interrupted(_make(cls, backend, solver="lbfgs", max_iter=50), X, y)
    assert calls["n"] == 5
    _assert_usable(est, X, y)
    # the fitted attributes of a finished fit exist, describing where it stopped
    assert 0 <= est.n_iter_ <= 5
    assert np.isfinite(est.loss_)
    monkeypatch.undo()
    est.set_params(warm_start=True, max_iter=5).fit(X, y)
    _assert_usable(est, X, y)
