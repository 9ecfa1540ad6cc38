"""Determinism: the same random_state gives bitwise-identical fits on each backend, and the
backends agree with each other within the kernel contract's tolerances (whole fits: rtol 1e-6
in float64, 2e-3 in float32)."""

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastmlp import MLPClassifier, MLPRegressor

BACKENDS = ["numpy", "numba", "cython"]
RTOL = {np.float64: 1e-6, np.float32: 2e-3}

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rs = np.random.RandomState(7)
_X = _rs.randn(60, 4)
_TARGETS = {
    "binary": (MLPClassifier, (_X[:, 0] + _X[:, 1] > 0).astype(int), {}),
    "multiclass": (MLPClassifier, np.digitize(_X[:, 0], [-0.5, 0.5]), {}),
    "multilabel": (MLPClassifier, np.c_[_X[:, 0] > 0, _X[:, 2] > 0].astype(int), {}),
    "regression": (MLPRegressor, np.c_[_X[:, 0] * _X[:, 1], np.sin(_X[:, 2])], {}),
    "poisson": (MLPRegressor, np.exp(0.5 * _X[:, 0]), {"loss": "poisson"}),
}
_CONFIGS = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd-nesterov": dict(solver="sgd", learning_rate_init=0.05, momentum=0.9),
    "sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1,
                           nesterovs_momentum=False, batch_size=7),
    "adam-early-stopping": dict(solver="adam", early_stopping=True, learning_rate_init=0.01),
    "lbfgs": dict(solver="lbfgs"),
}


def _fit(task, config, backend, dtype=np.float64, **extra):
    cls, y, kw = _TARGETS[task]
    params = dict(hidden_layer_sizes=(6, 4), max_iter=10, random_state=3, backend=backend,
                  alpha=1e-3)
    params.update(kw)
    params.update(_CONFIGS[config])
    params.update(extra)
    return cls(**params).fit(_X.astype(dtype), y)


def _state(est):
    out = {"theta": est._theta.copy(), "n_iter_": est.n_iter_, "loss_": est.loss_,
           "pred": est.predict(_X.astype(est._theta.dtype))}
    if hasattr(est, "loss_curve_"):
        out["loss_curve_"] = np.asarray(est.loss_curve_)
    if getattr(est, "validation_scores_", None) is not None:
        out["validation_scores_"] = np.asarray(est.validation_scores_)
    return out


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert_array_equal(a[key], b[key], err_msg=key, strict=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(_CONFIGS))
@pytest.mark.parametrize("task", list(_TARGETS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_refit_is_bitwise_identical(backend, task, config, dtype):
    first = _state(_fit(task, config, backend, dtype))
    second = _state(_fit(task, config, backend, dtype))
    _assert_bitwise(first, second)


@pytest.mark.parametrize("activation", ["rrelu", "prelu", "maxout", "gelu", "selu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_refit_same_instance_is_bitwise_identical(backend, activation):
    cls, y, _ = _TARGETS["multiclass"]
    est = cls(hidden_layer_sizes=(6, 4), activation=activation, max_iter=8, random_state=11,
              backend=backend, learning_rate_init=0.01)
    a = _state(est.fit(_X, y))
    b = _state(est.fit(_X, y))  # the same instance, fitted again from scratch
    _assert_bitwise(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_different_random_state_differs(backend):
    # guards the tests above against a seed that is silently ignored
    a = _fit("binary", "adam", backend)
    b = _fit("binary", "adam", backend, random_state=4)
    assert not np.array_equal(a._theta, b._theta)


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_fit_sequence_is_bitwise_identical(backend):
    cls, y, _ = _TARGETS["multiclass"]

    def run():
        est = cls(hidden_layer_sizes=(5,), random_state=0, backend=backend,
                  activation="rrelu", learning_rate_init=0.01)
        for start in range(0, 60, 20):
            est.partial_fit(_X[start:start + 20], y[start:start + 20], classes=[0, 1, 2])
        return _state(est)

    _assert_bitwise(run(), run())


def _assert_close(a, b, dtype, what):
    rtol = RTOL[dtype]
    for key in ("theta", "loss_curve_", "validation_scores_"):
        if key in a:
            ref = np.asarray(b[key], dtype=np.float64)
            scale = np.abs(ref).max() if ref.size else 1.0
            assert_allclose(a[key], ref, rtol=rtol, atol=rtol * scale,
                            err_msg=f"{what}: {key}")
    assert a["n_iter_"] == b["n_iter_"], what
    assert_allclose(a["loss_"], b["loss_"], rtol=rtol, err_msg=what)
    if a["pred"].dtype.kind == "f":
        scale = np.abs(b["pred"]).max()
        assert_allclose(a["pred"], b["pred"], rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(_CONFIGS))
@pytest.mark.parametrize("task", list(_TARGETS))
@pytest.mark.parametrize("pair", list(itertools.combinations(BACKENDS, 2)),
                         ids=lambda p: "-vs-".join(p))
def test_backends_agree(pair, task, config, dtype):
    if dtype == np.float32 and config == "lbfgs":
        # L-BFGS line searches amplify float32 rounding; compare the first iterations only
        extra = {"max_iter": 3}
    else:
        extra = {}
    a = _state(_fit(task, config, pair[0], dtype, **extra))
    b = _state(_fit(task, config, pair[1], dtype, **extra))
    _assert_close(a, b, dtype, f"{pair[0]} vs {pair[1]}")


@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "leaky_relu", "prelu",
                                        "rrelu", "elu", "selu", "softplus", "swish", "gelu",
                                        "gelu_tanh", "hard_sigmoid", "hard_tanh", "maxout"])
@pytest.mark.parametrize("pair", list(itertools.combinations(BACKENDS, 2)),
                         ids=lambda p: "-vs-".join(p))
def test_backends_agree_per_activation(pair, activation):
    cls, y, _ = _TARGETS["multiclass"]
    states = []
    for backend in pair:
        est = cls(hidden_layer_sizes=(6, 4), activation=activation, max_iter=8,
                  random_state=5, backend=backend, learning_rate_init=0.01, batch_size=16)
        states.append(_state(est.fit(_X, y)))
    _assert_close(states[0], states[1], np.float64, f"{pair} {activation}")
