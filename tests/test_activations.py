"""The activation registry: derivatives, formulas, numerics, codes, and training on every backend.

The NumPy functions of ``fastmlp.activations`` are the reference every kernel is tested
against, so they are checked here against their own documented formulas (hand-computed
points) and against central differences of themselves; then every activation trains on every
backend, and the compiled backends agree with the NumPy one.
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from fastmlp import MLPClassifier
from fastmlp.activations import (
    ALIASES,
    HIDDEN_ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    resolve_activation,
)

BACKENDS = ["numpy", "numba", "cython"]
NAMES = sorted(HIDDEN_ACTIVATIONS)
ALL_NAMES = NAMES + sorted(ALIASES)
DOCS = Path(__file__).resolve().parents[1] / "docs"

# Where each activation is not differentiable: central differences straddling these points
# disagree with the one-sided derivative, so test points within KINK_GAP of them are skipped.
# Every registry key must appear here (a new activation forces a decision).
KINKS = {
    "identity": [], "logistic": [], "tanh": [], "softplus": [], "swish": [], "gelu": [],
    "gelu_tanh": [],
    "relu": [0.0], "leaky_relu": [0.0], "prelu": [0.0], "rrelu": [0.0],
    "elu": [0.0],  # smooth only for alpha = 1; the test also uses other alphas
    "selu": [0.0],
    "hard_sigmoid": [-2.0, 2.0], "hard_tanh": [-1.0, 1.0],
    "maxout": [],  # kinks are ties between pieces, handled in its own test
}
KINK_GAP = 1e-3
H = 1e-6  # central-difference step

# parameters other than the defaults, so that a parameter that is ignored shows up
NON_DEFAULT = {"leaky_relu": [0.3], "elu": [0.7], "swish": [1.7], "rrelu": [0.2, 0.45],
               "prelu": [0.4]}


def _params(act, custom=False):
    """The ``act_params`` row (two floats) for ``act``: defaults or NON_DEFAULT."""
    values = NON_DEFAULT.get(act.name) if custom else None
    values = list(values if values is not None else act.defaults)
    return np.array((values + [0.0, 0.0])[:2], dtype=np.float64)


def _points(name):
    z = np.concatenate([np.linspace(-6, 6, 601), np.random.RandomState(0).uniform(-4, 4, 200)])
    for kink in KINKS[name]:
        z = z[np.abs(z - kink) > KINK_GAP]
    return z.reshape(-1, 1)  # one unit: (n_rows, n_units)


def _fwd(act, z, p):
    """f(z) for elementwise, prelu and rrelu (one unit; p holds the slope for the others)."""
    out = np.empty_like(z)
    if act.kind == "prelu":
        return act.forward(z, out, np.full(z.shape[1], p[0]))
    if act.kind == "rrelu":
        # training mode: one slope per entry; use a fixed slope for the derivative check
        return act.forward(z, out, np.full_like(z, (p[0] + p[1]) / 2))
    return act.forward(z, out, p)


def _deriv(act, z, p):
    a = _fwd(act, z.copy(), p)
    delta = np.ones_like(z)
    if act.kind == "prelu":
        return act.derivative(z, a, delta, np.full(z.shape[1], p[0]))
    if act.kind == "rrelu":
        return act.derivative(z, a, delta, np.full_like(z, (p[0] + p[1]) / 2))
    return act.derivative(z, a, delta, p)


def test_kink_table_covers_registry():
    assert set(KINKS) == set(HIDDEN_ACTIVATIONS)


@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
@pytest.mark.parametrize("name", [n for n in ALL_NAMES if resolve_activation(n).kind != "maxout"])
def test_derivative_matches_central_differences(name, custom):
    act = resolve_activation(name)
    p = _params(act, custom)
    z = _points(act.name)
    numeric = (_fwd(act, z + H, p) - _fwd(act, z - H, p)) / (2 * H)
    analytic = _deriv(act, z, p)
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [2, 3])
def test_maxout_derivative_matches_central_differences(k):
    act = HIDDEN_ACTIVATIONS["maxout"]
    rng = np.random.RandomState(k)
    n, units = 7, 4
    z = rng.uniform(-3, 3, (n, units * k))
    pieces = np.sort(z.reshape(n, units, k), axis=2)
    if k > 1:  # no near-ties, where the maximum switches piece within the step
        assert (pieces[:, :, -1] - pieces[:, :, -2]).min() > KINK_GAP
    w = rng.randn(n, units)  # dL/da: the objective is sum(w * maxout(z))

    def objective(zz):
        return np.sum(w * act.forward(zz, np.empty((n, units)), k))

    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += H
        zm[idx] -= H
        numeric[idx] = (objective(zp) - objective(zm)) / (2 * H)
    a = act.forward(z, np.empty((n, units)), k)
    delta_z = np.full_like(z, np.nan)  # must be overwritten everywhere
    act.derivative(z, a, w.copy(), delta_z, k)
    assert_allclose(delta_z, numeric, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- documented formulas
SELU_LAMBDA = 1.0507009873554804934193349852946  # seed 000 (torch's docstring)
SELU_ALPHA = 1.6732632423543772848170429916717

# (name, activation parameters, z, expected f(z)), each computed by hand from the formula
POINTS = [
    ("identity", None, 1.5, 1.5),
    ("logistic", None, 0.0, 0.5),
    ("logistic", None, 2.0, 1 / (1 + np.exp(-2.0))),
    ("sigmoid", None, 2.0, 1 / (1 + np.exp(-2.0))),
    ("tanh", None, 0.5, 0.46211715726000974),
    ("relu", None, -1.0, 0.0),
    ("relu", None, 2.0, 2.0),
    ("leaky_relu", None, -2.0, -0.02),
    ("leaky_relu", [0.3], -2.0, -0.6),
    ("leaky_relu", [0.3], 2.0, 2.0),
    ("prelu", [0.25], -2.0, -0.5),
    ("elu", None, -1.0, np.exp(-1.0) - 1),
    ("elu", [0.5], -1.0, 0.5 * (np.exp(-1.0) - 1)),
    ("elu", None, 3.0, 3.0),
    ("selu", None, 1.0, SELU_LAMBDA),
    ("selu", None, -1.0, SELU_LAMBDA * SELU_ALPHA * (np.exp(-1.0) - 1)),
    ("softplus", None, 0.0, np.log(2.0)),
    ("softplus", None, 1.0, np.log1p(np.e)),
    ("swish", None, 1.0, 0.7310585786300049),
    ("silu", None, 1.0, 0.7310585786300049),
    ("swish", [2.0], 1.0, 1 / (1 + np.exp(-2.0))),
    ("gelu", None, 1.0, 0.8413447460685429),  # Phi(1)
    ("gelu", None, 0.0, 0.0),
    ("gelu_tanh", None, 1.0, 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * 1.044715))),
    ("hard_sigmoid", None, 1.0, 0.75),
    ("hard_sigmoid", None, -1.0, 0.25),
    ("hard_sigmoid", None, 3.0, 1.0),
    ("hard_sigmoid", None, -3.0, 0.0),
    ("hard_tanh", None, 0.5, 0.5),
    ("hard_tanh", None, 3.0, 1.0),
    ("hard_tanh", None, -3.0, -1.0),
]


@pytest.mark.parametrize("name, params, z, expected", POINTS,
                         ids=[f"{p[0]}({p[2]})-{p[1]}" for p in POINTS])
def test_forward_matches_formula(name, params, z, expected):
    act = resolve_activation(name)
    p = np.array(((params or list(act.defaults)) + [0.0, 0.0])[:2], dtype=np.float64)
    got = _fwd(act, np.array([[z]]), p)
    assert_allclose(got[0, 0], expected, rtol=1e-12, atol=1e-15)


def test_every_activation_has_a_hand_computed_point():
    covered = {resolve_activation(p[0]).name for p in POINTS}
    assert covered | {"rrelu", "maxout"} == set(HIDDEN_ACTIVATIONS)


def test_selu_constants_are_those_of_seed_000():
    from fastmlp import activations

    assert activations.SELU_LAMBDA == pytest.approx(SELU_LAMBDA, rel=1e-15)
    assert activations.SELU_ALPHA == pytest.approx(SELU_ALPHA, rel=1e-15)


def test_rrelu_prediction_uses_mean_slope():
    act = HIDDEN_ACTIVATIONS["rrelu"]
    lower, upper = act.defaults
    out = act.forward(np.array([[-1.0, 2.0]]), np.empty((1, 2)), (lower + upper) / 2)
    assert_allclose(out, [[-(1 / 8 + 1 / 3) / 2, 2.0]])


def test_maxout_forward_takes_max_of_k_pieces():
    act = HIDDEN_ACTIVATIONS["maxout"]
    z = np.array([[1.0, 3.0, -2.0, -5.0], [0.0, -1.0, 4.0, 4.5]])
    assert_allclose(act.forward(z, np.empty((2, 2)), 2), [[3.0, -2.0], [0.0, 4.5]])
    assert_allclose(act.forward(z, np.empty((2, 1)), 4), [[3.0], [4.5]])


# ---------------------------------------------------------------------- numerics
EXTREMES = np.array([[-1e150, -700.0, -50.0, 50.0, 700.0, 1e150]])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_extreme_inputs_are_finite_without_warnings(name):
    act = resolve_activation(name)
    p = _params(act)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning (overflow, invalid) fails
        with np.errstate(all="warn", under="ignore"):
            if act.kind == "maxout":
                z = np.repeat(EXTREMES, 2, axis=1) + np.tile([0.0, 1.0], EXTREMES.shape[1])
                a = act.forward(z, np.empty(EXTREMES.shape), 2)
                d = np.empty_like(z)
                act.derivative(z, a, np.ones_like(a), d, 2)
            else:
                z = EXTREMES.T.copy()
                a = _fwd(act, z.copy(), p)
                d = _deriv(act, z.copy(), p)
    assert np.isfinite(a).all(), a
    assert np.isfinite(d).all(), d


# ------------------------------------------------------------------- codes and docs
def _documented_codes():
    text = (DOCS / "kernel_contract.md").read_text(encoding="utf-8")
    section = text.split("### Activation codes", 1)[1].split("###", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([a-z_]+)", section, flags=re.M)
    return {name: int(code) for code, name in rows}


def test_codes_are_unique():
    acts = list(HIDDEN_ACTIVATIONS.values()) + [
        a for n, a in OUTPUT_ACTIVATIONS.items() if n not in HIDDEN_ACTIVATIONS
    ]
    codes = [a.code for a in acts]
    assert len(codes) == len(set(codes))


def test_codes_match_kernel_contract():
    documented = _documented_codes()
    registry = {n: a.code for n, a in HIDDEN_ACTIVATIONS.items()}
    registry.update({n: a.code for n, a in OUTPUT_ACTIVATIONS.items()})
    assert documented == registry


def test_aliases_resolve_to_registry_keys():
    for alias, target in ALIASES.items():
        assert target in HIDDEN_ACTIVATIONS
        assert resolve_activation(alias) is HIDDEN_ACTIVATIONS[target]


def test_unknown_activation_lists_the_names():
    with pytest.raises(ValueError, match="leaky_relu"):
        resolve_activation("nope")


# ------------------------------------------------------------- training on backends
X_EASY, Y_EASY = make_blobs(n_samples=120, centers=[[-2, -2], [2, 2]], cluster_std=1.0,
                            random_state=0)


def _fit(name, backend, **kw):
    params = dict(hidden_layer_sizes=(8,), activation=name, backend=backend, max_iter=60,
                  learning_rate_init=0.02, random_state=0)
    params.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(**params).fit(X_EASY, Y_EASY)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_activation_trains_on_every_backend(name, backend):
    est = _fit(name, backend)
    assert est.backend_ == backend
    assert all(np.isfinite(W).all() for W in est.coefs_)
    assert all(np.isfinite(b).all() for b in est.intercepts_)
    assert est.score(X_EASY, Y_EASY) > 0.85  # chance is 0.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_every_activation_agrees_with_numpy_backend(name, backend):
    # the kernel contract's tolerance on whole fits in float64
    ref = _fit(name, "numpy", max_iter=15, batch_size=40)
    est = _fit(name, backend, max_iter=15, batch_size=40)
    assert_allclose(est._theta, ref._theta, rtol=1e-6, atol=1e-9)
    assert_allclose(est.predict_proba(X_EASY), ref.predict_proba(X_EASY), rtol=1e-6,
                    atol=1e-9)


def _manual_proba(est, X, names, params):
    """P(class 1) by a NumPy forward pass through the registry functions."""
    a = X
    n_hidden = len(est.coefs_) - 1
    for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        z = a @ W + b
        if l == n_hidden:
            return 1 / (1 + np.exp(-z[:, 0]))
        act = HIDDEN_ACTIVATIONS[names[l]]
        p = dict(zip(act.params, act.defaults))
        p.update(params[l])
        row = np.array((list(p.values()) + [0.0, 0.0])[:2])
        a = act.forward(z, np.empty_like(z), row)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_layer_activation_list(backend):
    names = ["tanh", "leaky_relu", "elu"]
    est = _fit(names, backend, hidden_layer_sizes=(6, 5, 4),
               activation_params=[{}, {"negative_slope": 0.2}, {"alpha": 0.5}])
    assert est.score(X_EASY, Y_EASY) > 0.85
    expected = _manual_proba(est, X_EASY, names,
                             [{}, {"negative_slope": 0.2}, {"alpha": 0.5}])
    assert_allclose(est.predict_proba(X_EASY)[:, 1], expected, rtol=1e-10, atol=1e-12)
    # the per-layer choice matters: one activation for all layers gives another model
    same = _fit("tanh", backend, hidden_layer_sizes=(6, 5, 4))
    assert not np.allclose(same._theta, est._theta)


def test_per_layer_activation_list_of_wrong_length_raises():
    with pytest.raises(ValueError, match="one activation name per hidden layer"):
        _fit(["tanh", "relu"], "numpy", hidden_layer_sizes=(4,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_params_reach_the_kernels(backend):
    default = _fit("leaky_relu", backend)
    steep = _fit("leaky_relu", backend, activation_params={"negative_slope": 0.3})
    # training kernel: a different slope gives different weights ...
    assert not np.allclose(default._theta, steep._theta)
    # ... the same ones as the NumPy reference with that slope ...
    ref = _fit("leaky_relu", "numpy", activation_params={"negative_slope": 0.3})
    assert_allclose(steep._theta, ref._theta, rtol=1e-6, atol=1e-9)
    # ... and the prediction kernel applies the slope too
    expected = _manual_proba(steep, X_EASY, ["leaky_relu"], [{"negative_slope": 0.3}])
    assert_allclose(steep.predict_proba(X_EASY)[:, 1], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, params", [
    ("elu", {"alpha": 0.3}), ("swish", {"beta": 2.5}), ("rrelu", {"lower": 0.05, "upper": 0.5}),
    ("prelu", {"init": 0.05}), ("maxout", {"k": 3}),
])
def test_other_activation_params_change_the_model(name, params):
    default = _fit(name, "numpy", max_iter=5)
    custom = _fit(name, "numpy", max_iter=5, activation_params=params)
    assert (custom._theta.shape != default._theta.shape
            or not np.allclose(custom._theta, default._theta))


@pytest.mark.parametrize("params", [{"nope": 1.0}, {"alpha": 0.1}])
def test_unknown_activation_params_raise(params):
    # 'alpha' is a parameter of elu, not of relu
    with pytest.raises(ValueError, match="activation_params"):
        _fit("relu", "numpy", activation_params=params)


def test_activation_params_for_the_wrong_layer_raise():
    with pytest.raises(ValueError, match="activation_params"):
        _fit(["tanh", "relu"], "numpy", hidden_layer_sizes=(3, 3),
             activation_params=[{"negative_slope": 0.1}, {}])
