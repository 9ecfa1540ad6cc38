"""Grid search over activations, initialisations and activation parameters in a Pipeline."""

import itertools
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fastmlp import MLPClassifier

BACKENDS = ["numpy", "numba", "cython"]
X, Y = make_moons(n_samples=150, noise=0.15, random_state=0)
X = X * [10.0, 0.1] + [5.0, -3.0]  # badly scaled on purpose: the scaler matters

ACTIVATIONS = ["relu", "tanh", "leaky_relu", "gelu"]
INITS = ["sklearn", "he_normal", "glorot_uniform"]


def _pipe(backend, **kw):
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=60, random_state=0,
                  backend=backend)
    params.update(kw)
    return Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(**params))])


def _search(pipe, grid, **kw):
    search = GridSearchCV(pipe, grid, cv=3, error_score="raise", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return search.fit(X, Y)


def _combinations(grid):
    keys = sorted(grid)
    return {tuple((k, repr(v)) for k, v in zip(keys, values))
            for values in itertools.product(*(grid[k] for k in keys))}


def _tried(search):
    return {tuple((k, repr(p[k])) for k in sorted(p)) for p in search.cv_results_["params"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_grid_search_over_activation_and_init(backend):
    grid = {"mlp__activation": ACTIVATIONS, "mlp__init": INITS}
    search = _search(_pipe(backend), grid)
    assert _tried(search) == _combinations(grid)
    assert len(search.cv_results_["params"]) == len(ACTIVATIONS) * len(INITS)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["mlp__activation"] in ACTIVATIONS
    assert search.best_params_["mlp__init"] in INITS
    best = search.best_estimator_
    assert isinstance(best, Pipeline)
    mlp = best.named_steps["mlp"]
    assert mlp.activation == search.best_params_["mlp__activation"]
    assert mlp.init == search.best_params_["mlp__init"]
    assert mlp.backend_ == backend
    assert search.best_score_ > 0.85  # two moons, chance 0.5
    # the refit is the model those parameters give on all the data
    again = clone(_pipe(backend)).set_params(**search.best_params_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again.fit(X, Y)
    assert_allclose(best.predict_proba(X), again.predict_proba(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grid_search_over_activation_params(backend):
    grid = [
        {"mlp__activation": ["leaky_relu"],
         "mlp__activation_params": [{"negative_slope": 0.01}, {"negative_slope": 0.3}]},
        {"mlp__activation": ["elu"], "mlp__activation_params": [{"alpha": 0.5}, {"alpha": 1.5}]},
        {"mlp__activation": ["swish"], "mlp__activation_params": [None, {"beta": 2.0}]},
    ]
    search = _search(_pipe(backend), grid)
    tried = _tried(search)
    expected = set().union(*(_combinations(g) for g in grid))
    assert tried == expected and len(tried) == 6
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # the parameters are used: different values give different fits
    scores = search.cv_results_["mean_test_score"]
    losses = []
    for params in search.cv_results_["params"][:2]:
        est = clone(_pipe(backend)).set_params(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            losses.append(est.fit(X, Y).named_steps["mlp"].loss_)
    assert losses[0] != losses[1]
    assert search.best_score_ == scores.max()
    best = search.best_estimator_.named_steps["mlp"]
    assert best.activation_params == search.best_params_["mlp__activation_params"]


def test_grid_search_over_per_layer_activations_in_parallel():
    grid = {"mlp__activation": [["tanh", "relu"], ["relu", "tanh"], "selu"],
            "mlp__init": ["sklearn", "lecun_normal"]}
    pipe = _pipe("numpy", hidden_layer_sizes=(8, 6))
    search = _search(pipe, grid, n_jobs=2)  # estimators travel to worker processes
    assert _tried(search) == _combinations(grid)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_score_ > 0.85


def test_invalid_grid_value_raises():
    with pytest.raises(ValueError):
        _search(_pipe("numpy"), {"mlp__activation": ["relu", "nope"]})
