"""check_gradients: every activation and loss passes on every backend; wrong gradients fail.

The data are continuous random draws, so no pre-activation lands within the central
difference step of a kink (relu at 0, hard_tanh at +-1, maxout ties): the check runs "at
points away from kinks".
"""

import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor, check_gradients
from fastmlp.activations import ALIASES, HIDDEN_ACTIVATIONS
from fastmlp.backends import get_backend

BACKENDS = ["numpy", "numba", "cython"]
TOL = 1e-5

RNG = np.random.RandomState(0)
X = RNG.randn(30, 4)
SW = RNG.uniform(0.5, 2.0, 30)
Y_BINARY = RNG.randint(0, 2, 30)
Y_MULTICLASS = RNG.randint(0, 3, 30)
Y_MULTILABEL = RNG.randint(0, 2, (30, 3))
Y_REG = RNG.randn(30)
Y_REG2 = RNG.randn(30, 2)
Y_COUNTS = RNG.poisson(2.0, 30)
Y_COUNTS2 = RNG.poisson(2.0, (30, 2))

# non-default activation parameters, so that a kernel ignoring them fails the check
CUSTOM = {"leaky_relu": {"negative_slope": 0.2}, "prelu": {"init": 0.1},
          "rrelu": {"lower": 0.1, "upper": 0.6}, "elu": {"alpha": 0.7},
          "swish": {"beta": 1.5}, "maxout": {"k": 3}}


def _clf(activation, backend, **kw):
    params = dict(hidden_layer_sizes=(5, 4), activation=activation, backend=backend,
                  random_state=0, alpha=1e-3)
    params.update(kw)
    return MLPClassifier(**params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(HIDDEN_ACTIVATIONS) + sorted(ALIASES))
def test_every_activation_passes(name, backend):
    err = check_gradients(_clf(name, backend), X, Y_MULTICLASS)
    assert err < TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_every_activation_passes_with_custom_params(name, backend):
    est = _clf(name, backend, activation_params=CUSTOM[name])
    assert check_gradients(est, X, Y_BINARY) < TOL


MIXES = [
    ["prelu", "maxout", "rrelu"],
    ["gelu", "hard_tanh", "selu"],
    ["swish", "softplus", "leaky_relu"],
    ["maxout", "prelu", "hard_sigmoid"],
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mix", MIXES, ids=["-".join(m) for m in MIXES])
def test_per_layer_mixes_pass(mix, backend):
    est = _clf(mix, backend, hidden_layer_sizes=(5, 4, 3))
    assert check_gradients(est, X, Y_MULTICLASS) < TOL


LOSSES = {
    "binary": (MLPClassifier, {}, Y_BINARY),
    "multiclass": (MLPClassifier, {}, Y_MULTICLASS),
    "multilabel": (MLPClassifier, {}, Y_MULTILABEL),
    "squared_error": (MLPRegressor, {}, Y_REG),
    "poisson": (MLPRegressor, {"loss": "poisson"}, Y_COUNTS),
    "poisson-2-outputs": (MLPRegressor, {"loss": "poisson"}, Y_COUNTS2),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_passes(loss, weighted, backend):
    cls, kw, y = LOSSES[loss]
    est = cls(hidden_layer_sizes=(5,), activation="tanh", backend=backend, random_state=0,
              alpha=1e-3, **kw)
    err = check_gradients(est, X, y, sample_weight=SW if weighted else None)
    assert err < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_squared_error_multioutput_checks_the_training_objective(backend):
    """With several targets, backprop follows the sum over outputs (scikit-learn's delta
    p - y) while loss_ reports their mean (scikit-learn's squared_loss, issue #8349); the
    checker checks the objective training follows, and the gap is exactly n_outputs."""
    est = MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", backend=backend,
                       random_state=0, alpha=0.1)
    assert check_gradients(est, X, Y_REG2) < TOL


# ------------------------------------------------------------- fitted estimators
def _fitted(activation, backend, dtype=np.float64, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _clf(activation, backend, max_iter=30, learning_rate_init=0.01,
                    **kw).fit(X.astype(dtype), Y_MULTICLASS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["tanh", "prelu", "rrelu", "maxout"])
def test_fitted_estimator_passes_and_is_not_modified(name, backend):
    est = _fitted(name, backend)
    if name == "rrelu":
        assert est._step > 0  # the check runs at the current step of the random slopes
    before = copy.deepcopy(est.__dict__)
    views = [id(W) for W in est.coefs_]
    assert check_gradients(est, X, Y_MULTICLASS) < TOL
    assert_array_equal(est._theta, before["_theta"])
    assert [id(W) for W in est.coefs_] == views
    assert est._step == before["_step"]
    assert est.n_iter_ == before["n_iter_"]
    assert est.backend_ == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_fitted_float32_estimator_is_checked_in_float64(backend):
    est = _fitted("tanh", backend, dtype=np.float32)
    assert est._theta.dtype == np.float32
    assert check_gradients(est, X, Y_MULTICLASS) < TOL
    assert est._theta.dtype == np.float32


def test_fitted_estimator_rejects_unknown_classes():
    est = _fitted("tanh", "numpy")
    with pytest.raises(ValueError):
        check_gradients(est, X, Y_MULTICLASS + 5)


def test_unfitted_estimator_stays_unfitted():
    est = _clf("tanh", "numpy")
    check_gradients(est, X, Y_MULTICLASS)
    assert not hasattr(est, "coefs_") and not hasattr(est, "_theta")


def test_unfitted_check_uses_the_estimator_initialisation():
    # different random_state or init -> a different point theta -> different gradients
    _, a = check_gradients(_clf("tanh", "numpy"), X, Y_BINARY, return_details=True)
    _, b = check_gradients(_clf("tanh", "numpy", random_state=1), X, Y_BINARY,
                           return_details=True)
    _, c = check_gradients(_clf("tanh", "numpy", init="he_normal"), X, Y_BINARY,
                           return_details=True)
    assert not np.allclose(a["grad_backprop"], b["grad_backprop"])
    assert not np.allclose(a["grad_backprop"], c["grad_backprop"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_input(backend):
    est = _clf("relu", backend)
    assert check_gradients(est, sp.csr_matrix(X), Y_MULTICLASS) < TOL


# ---------------------------------------------------------------- the definition
def test_returned_value_is_the_documented_maximum():
    err, d = check_gradients(_clf("tanh", "numpy"), X, Y_MULTICLASS, return_details=True)
    g_bp, g_num = d["grad_backprop"], d["grad_numeric"]
    expected = np.abs(g_bp - g_num) / np.maximum(np.abs(g_bp) + np.abs(g_num), d["tiny"])
    assert err == pytest.approx(expected.max(), rel=1e-12)
    assert d["tiny"] == pytest.approx(1e6 * np.finfo(float).eps * max(d["loss"], 1) / 2e-6)
    # every parameter is checked by default, and the backprop gradient is the backend's
    net_params = len(d["indices"])
    assert_array_equal(d["indices"], np.arange(net_params))


def test_numeric_gradient_is_a_central_difference():
    # a quadratic loss (identity net, squared error) has an exact central difference
    est = MLPRegressor(hidden_layer_sizes=(), backend="numpy", random_state=0, alpha=0.0)
    _, d = check_gradients(est, X, Y_REG, eps=1e-3, return_details=True)
    assert np.allclose(d["grad_numeric"], d["grad_backprop"], rtol=1e-8, atol=1e-10)


def test_max_params_checks_a_reproducible_random_subset():
    est = _clf("tanh", "numpy")
    _, full = check_gradients(est, X, Y_MULTICLASS, return_details=True)
    _, a = check_gradients(est, X, Y_MULTICLASS, max_params=7, random_state=3,
                           return_details=True)
    _, b = check_gradients(est, X, Y_MULTICLASS, max_params=7, random_state=3,
                           return_details=True)
    assert len(a["indices"]) == 7 == len(set(a["indices"]))
    assert_array_equal(a["indices"], b["indices"])
    assert_array_equal(a["grad_numeric"], full["grad_numeric"][a["indices"]])
    _, c = check_gradients(est, X, Y_MULTICLASS, max_params=10 ** 6, return_details=True)
    assert len(c["indices"]) == len(full["indices"])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="eps"):
        check_gradients(_clf("tanh", "numpy"), X, Y_BINARY, eps=0.0)
    with pytest.raises(ValueError, match="max_params"):
        check_gradients(_clf("tanh", "numpy"), X, Y_BINARY, max_params=0)


# ------------------------------------------------------------- wrong gradients fail
def _patch_gradient(monkeypatch, backend, corrupt):
    module = get_backend(backend)
    original = module.loss_grad

    def wrong_loss_grad(theta, grad, *args):
        loss = original(theta, grad, *args)
        corrupt(grad)
        return loss

    monkeypatch.setattr(module, "loss_grad", wrong_loss_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scaled_gradient_is_detected(monkeypatch, backend):
    est = _clf("tanh", backend)
    assert check_gradients(est, X, Y_MULTICLASS) < TOL
    _patch_gradient(monkeypatch, backend, lambda g: g.__imul__(1.01))
    # |1.01 g - g| / (2.01 |g|) = 0.005
    assert check_gradients(est, X, Y_MULTICLASS) == pytest.approx(0.01 / 2.01, rel=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_wrong_component_is_detected(monkeypatch, backend):
    est = _clf("prelu", backend)
    # drop the gradient of the learnable PReLU slopes (stored last in theta)
    n_slopes = 5 + 4

    def corrupt(g):
        g[-n_slopes:] = 0.0

    _patch_gradient(monkeypatch, backend, corrupt)
    assert check_gradients(est, X, Y_MULTICLASS) > 0.1


def test_public_entry_point_forwards_keywords():
    est = _clf("tanh", "numpy")
    err, d = fastmlp.check_gradients(est, X, Y_BINARY, eps=1e-5, max_params=5,
                                     return_details=True)
    assert len(d["indices"]) == 5 and err < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_fitted_estimator_is_checked_on_the_backend_that_fitted_it(backend, monkeypatch):
    est = _fitted("tanh", backend)
    est.set_params(backend="auto")  # 'auto' might resolve elsewhere (sparse X -> numpy)
    used = []
    for name in BACKENDS:
        module = get_backend(name)
        original = module.loss_grad

        def spy(*args, _name=name, _original=original):
            used.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, "loss_grad", spy)
    assert check_gradients(est, sp.csr_matrix(X), Y_MULTICLASS, max_params=3) < TOL
    assert set(used) == {backend}
