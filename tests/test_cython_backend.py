"""The Cython backend against the NumPy reference: each entry point per dtype, then whole fits.

Tolerances (docs/kernel_contract.md): one call agrees to rtol 1e-10 in float64 and 1e-4 in
float32; whole fits (loss_curve_, loss_, weights) to 1e-6 and 2e-3. Arrays are compared with
an absolute floor of ``rtol * max|expected|``, so that entries that are zero up to rounding
(a relu gradient, a cancelling sum) do not demand a relative precision no algorithm has.

The per-call tests run on every build of the extension present here: the baseline one
(``fastmlp.kernels._cy``) and, on x86-64, the AVX2 one (``_cy_avx2``), which must also
agree with the baseline bit for bit. Nothing is skipped when the extension is missing: the
imports below fail instead.
"""

import importlib
import importlib.machinery
import os
import sysconfig
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import fastmlp.kernels
from fastmlp import MLPClassifier, MLPRegressor
from fastmlp._network import Network
from fastmlp.activations import HIDDEN_ACTIVATIONS, rrelu_uniform
from fastmlp.backends import _cython as cy_backend
from fastmlp.backends import _numpy as ref
from fastmlp.backends import get_backend
from fastmlp.kernels import _cy

from _kernel_problems import close as _close, data as _data, network as _network
from _kernel_problems import params_for as _params_for, theta as _theta

DTYPES = [np.float64, np.float32]
CALL_RTOL = {np.float64: 1e-10, np.float32: 1e-4}
FIT_RTOL = {np.float64: 1e-6, np.float32: 2e-3}
HIDDEN = list(HIDDEN_ACTIVATIONS)
OUT_BY_LOSS = {0: "identity", 1: "exp", 2: "logistic", 3: "softmax"}
SEED = 987654321  # a large RReLU seed exercises the uint64 arithmetic

# x86-64 builds (setup.py) also ship the AVX2 build; test it wherever this CPU runs it
AVX2_EXPECTED = os.name != "nt" and sysconfig.get_platform().endswith("x86_64")
BUILDS = [_cy]
if AVX2_EXPECTED and _cy.cpu_supports_avx2():
    BUILDS.append(importlib.import_module("fastmlp.kernels._cy_avx2"))
BUILD_IDS = [k.__name__.rsplit(".", 1)[-1] for k in BUILDS]


SOLVERS = {
    "adam": (np.array([1e-3, 0.0, 0.9, 0.999, 1e-8, 1e-3]), 1, 0),
    "sgd_nesterov": (np.array([0.05, 0.9, 0.0, 0.0, 0.0, 1e-3]), 0, 1),
    "sgd_plain": (np.array([0.05, 0.8, 0.0, 0.0, 0.0, 0.0]), 0, 0),
    "sgd_no_momentum": (np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.2]), 0, 1),
}


def _counters(loss_code, solver=1, nesterov=0, step=5, adam_t=0, serial=0):
    return np.array([solver, nesterov, adam_t, step, SEED, loss_code, serial], dtype=np.int64)


# ------------------------------------------------------------------------ the extension
def test_extension_is_compiled_and_shipped():
    # a shared library, not a Python module, inside the installed fastmlp.kernels package
    for kern in BUILDS:
        origin = kern.__spec__.origin
        assert isinstance(kern.__spec__.loader, importlib.machinery.ExtensionFileLoader)
        assert origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), origin
        assert os.path.dirname(origin) == os.path.dirname(fastmlp.kernels.__file__)
        assert kern.__name__.startswith("fastmlp.kernels.")
    # the sources ship with it (package data), so an sdist rebuilds it
    kernels_dir = os.path.dirname(fastmlp.kernels.__file__)
    for name in ("_cy.pyx", "_cy.pxd", "_cy_blas.pxd"):
        assert os.path.exists(os.path.join(kernels_dir, name)), name
    # the backend is registered and runs one of the builds
    assert get_backend("cython") is cy_backend
    assert cy_backend.name == "cython"
    assert cy_backend._cy in BUILDS
    assert cy_backend.variant == ("avx2" if len(BUILDS) == 2 else "baseline")


def test_avx2_build_exists_on_x86_64():
    if not AVX2_EXPECTED:
        pytest.skip("the AVX2 build is only made for x86-64 targets")
    mod = importlib.util.find_spec("fastmlp.kernels._cy_avx2")
    assert mod is not None and mod.origin.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_rrelu_draws_match_reference():
    for seed, step, layer in [(0, 0, 0), (SEED, 17, 1), (2**62 + 12345, 2**40, 3)]:
        expected = rrelu_uniform(seed, step, layer, 7, 5)
        for kern in BUILDS:
            np.testing.assert_array_equal(kern.rrelu_uniform(seed, step, layer, 7, 5),
                                          expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", ["n", "t"])
@pytest.mark.parametrize("tb", ["n", "t"])
@pytest.mark.parametrize("m,n,k", [(5, 4, 3), (1, 4, 3), (5, 1, 3), (1, 1, 3), (5, 4, 1),
                                   (40, 30, 20), (1, 70, 50), (70, 1, 50), (33, 17, 2),
                                   (200, 64, 1)])
def test_row_major_gemm(dtype, ta, tb, m, n, k):
    # one-row and one-column products take GEMV, outer products (k = 1) a loop, the others GEMM
    rng = np.random.default_rng(0)
    A = rng.normal(size=(m, k) if ta == "n" else (k, m)).astype(dtype)
    B = rng.normal(size=(k, n) if tb == "n" else (n, k)).astype(dtype)
    C = rng.normal(size=(m, n)).astype(dtype)
    product = (A if ta == "n" else A.T) @ (B if tb == "n" else B.T)
    for kern in BUILDS:
        _close(kern.row_major_gemm(ta, tb, 0.5, A, B, 2.0, C.copy()), 0.5 * product + 2.0 * C,
               CALL_RTOL[dtype])
        # alpha 1, beta 0 (the kernels' case): C is not read
        _close(kern.row_major_gemm(ta, tb, 1.0, A, B, 0.0, np.full_like(C, np.nan)), product,
               CALL_RTOL[dtype])


# ------------------------------------------------------------- one activation, one step
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN)
def test_activation_forward_and_stored_derivative(dtype, act):
    # the fused bias + activation pass, and the f'(z) it stores for the backward pass,
    # against the reference formulas of fastmlp.activations
    a_ref = HIDDEN_ACTIVATIONS[act]
    params = _params_for(act)
    k = params.get("k", 1)
    p = np.array([params.get(name, d) for name, d in zip(a_ref.params, a_ref.defaults)]
                 + [0.0, 0.0])[:2]
    if act == "maxout":
        p[:] = 0.0
    rng = np.random.default_rng(6)
    rows, units = 11, 4
    Z = rng.normal(0, 2, (rows, units * k)).astype(dtype)
    b = rng.normal(0, 0.5, units * k).astype(dtype)
    Z[0, :2] = b[:2] = 0.0  # the z = 0 edge of the piecewise activations
    slopes = rng.uniform(0.05, 0.4, units).astype(dtype)
    z = Z + b
    for kern in BUILDS:
        A, F = kern.activation_forward(a_ref.code, Z, b, p, slopes, k, True, SEED, 7, 1)
        what = f"{act} {np.dtype(dtype).name}"
        delta = np.ones((rows, units * k), dtype)
        if a_ref.kind == "prelu":
            expected = np.where(z > 0, z, z * slopes)
        elif a_ref.kind == "rrelu":
            r = (p[0] + (p[1] - p[0]) * rrelu_uniform(SEED, 7, 1, rows, units)).astype(dtype)
            expected = np.where(z >= 0, z, z * r)
            _close(F, np.where(z >= 0, 1, r), CALL_RTOL[dtype], what + " f'")
        elif a_ref.kind == "maxout":
            expected = z.reshape(rows, units, k).max(axis=2)
        else:
            expected = a_ref.forward(z.copy(), np.empty_like(z), p)
            if F is not None:
                _close(F, a_ref.derivative(z, expected, delta, p), CALL_RTOL[dtype],
                       what + " f'")
        _close(A, expected, CALL_RTOL[dtype], what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_optimizer_step_matches_reference(dtype, solver):
    # one fused loop: L2 on the weights, 1/sum(w), and the update, against the reference
    # step on the finished gradient; the return value is ||W||^2 before the step
    from types import SimpleNamespace

    hyper, solver_code, nesterov = SOLVERS[solver]
    rng = np.random.default_rng(8)
    n, n_coef, sw_sum = 3001, 2500, 7.5  # more than one block of the fused loop
    theta = rng.normal(size=n).astype(dtype)
    raw = rng.normal(size=n).astype(dtype)
    state = np.abs(rng.normal(size=(2, n))).astype(dtype)
    counters = _counters(0, solver_code, nesterov, adam_t=3)
    finished = raw.copy()
    finished[:n_coef] += dtype(hyper[5]) * theta[:n_coef]
    finished /= dtype(sw_sum)
    th_ref, st_ref, co_ref = theta.copy(), state.copy(), counters.copy()
    tmp = SimpleNamespace(p_tmp1=np.empty(n, dtype), p_tmp2=np.empty(n, dtype))
    ref._optimizer_step(th_ref, finished, st_ref, hyper, co_ref, tmp)
    for kern in BUILDS:
        th, st, co = theta.copy(), state.copy(), counters.copy()
        ss = kern.optimizer_step(th, raw, st, n_coef, hyper, co, sw_sum)
        np.testing.assert_array_equal(co, co_ref)
        _close(th, th_ref, CALL_RTOL[dtype], solver)
        _close(st, st_ref, CALL_RTOL[dtype], solver)
        expected_ss = float(np.sum(theta[:n_coef].astype(np.float64) ** 2))
        _close(ss, expected_ss if hyper[5] != 0 else 0.0, CALL_RTOL[dtype], solver)


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("kern", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_act", ["identity", "logistic", "softmax", "exp"])
@pytest.mark.parametrize("act", HIDDEN)
def test_forward_every_activation(kern, dtype, out_act, act):
    net = _network([7, 6], [act, act], out_act)
    theta = _theta(net, dtype)
    X = np.random.default_rng(2).normal(size=(23, 5)).astype(dtype)
    for apply_output in (True, False):
        expected = np.empty((23, 3), dtype)
        ref.forward(theta, net.layout, net.act_params, X, expected, apply_output, 23,
                    np.empty(ref.workspace_size(net.layout, 23), dtype))
        out = np.full((23, 3), np.nan, dtype)
        work = np.empty(kern.workspace_size(net.layout, 6), dtype)
        kern.forward(theta, net.layout, net.act_params, X, out, apply_output, 6, work)
        _close(out, expected, CALL_RTOL[dtype], f"{act}/{out_act} apply={apply_output}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_extreme_inputs_stay_finite(dtype):
    # exp output clipped at log(max), softmax with the row max subtracted, logistic and
    # softplus without overflow
    X = np.array([[800.0, -800.0], [-1e4, 1e4], [0.0, 0.0]], dtype)
    for hidden, out_act in [("softplus", "exp"), ("logistic", "softmax"),
                            ("identity", "logistic"), ("swish", "softmax"),
                            ("gelu", "identity"), ("gelu_tanh", "softmax"),
                            ("selu", "logistic")]:
        net = Network([2, 3, 2], [hidden], [{}], out_act)
        theta = np.ones(net.n_params, dtype)
        out = np.empty((3, 2), dtype)
        work = np.empty(_cy.workspace_size(net.layout, 3), dtype)
        with np.errstate(all="raise"):
            _cy.forward(theta, net.layout, net.act_params, X, out, True, 3, work)
        assert np.isfinite(out).all(), (hidden, out_act, out)


@pytest.mark.parametrize("kern", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_exp_output_is_clipped_like_the_reference(kern, dtype):
    # logits beyond log(max) and below log(2 tiny) of either dtype: finite, positive normal
    # predictions, the reference's
    net = _network([2], ["identity"], "exp", n_in=1, n_out=1)
    theta = np.zeros(net.n_params, dtype=dtype)
    W0, W1 = net.coef_views(theta)
    W0[...] = 1.0
    W1[...] = 1.0
    X = np.array([[-2000.0], [-400.0], [-45.0], [-43.0], [0.0], [40.0], [2000.0]], dtype)
    out = np.empty((7, 1), dtype)
    kern.forward(theta, net.layout, net.act_params, X, out, True, 7,
                 np.empty(kern.workspace_size(net.layout, 7), dtype))
    want = np.empty((7, 1), dtype)
    ref.forward(theta, net.layout, net.act_params, X, want, True, 7,
                np.empty(ref.workspace_size(net.layout, 7), dtype))
    assert np.isfinite(out).all() and (out >= np.finfo(dtype).tiny).all()
    _close(out, want, CALL_RTOL[dtype], "exp output")


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_sparse_and_unusual_layouts(dtype):
    net = _network([8], ["tanh"], "softmax", n_in=6)
    theta = _theta(net, dtype)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 6)) * (rng.random((30, 6)) < 0.3)
    expected = np.empty((30, 3), dtype)
    ref.forward(theta, net.layout, net.act_params, X.astype(dtype), expected, True, 30,
                np.empty(ref.workspace_size(net.layout, 30), dtype))
    work = np.empty(cy_backend.workspace_size(net.layout, 7), dtype)
    for Xv in (sp.csr_matrix(X.astype(dtype)), sp.csc_matrix(X.astype(dtype)),
               np.asfortranarray(X.astype(dtype)), X,  # float64 input to a float32 model
               X.astype(dtype)[::-1][::-1]):
        out = np.empty((30, 3), dtype)
        cy_backend.forward(theta, net.layout, net.act_params, Xv, out, True, 7, work)
        _close(out, expected, CALL_RTOL[dtype], type(Xv).__name__)


def test_forward_one_row_and_empty():
    net = _network([4], ["relu"], "logistic", n_out=1)
    theta = _theta(net, np.float64)
    work = np.empty(_cy.workspace_size(net.layout, 1))
    x = np.ones((1, 5))
    out = np.empty((1, 1))
    cy_backend.forward(theta, net.layout, net.act_params, x, out, True, 1, work)
    expected = np.empty((1, 1))
    ref.forward(theta, net.layout, net.act_params, x, expected, True, 1,
                np.empty(ref.workspace_size(net.layout, 1)))
    _close(out, expected, 1e-12)
    cy_backend.forward(theta, net.layout, net.act_params, np.empty((0, 5)), np.empty((0, 1)),
                       True, 1, work)  # nothing to do, no error


# -------------------------------------------------------------------------- loss_grad
def _loss_grad_both(kern, net, theta, X, Y, sw, alpha, counters):
    dtype = theta.dtype
    n = X.shape[0]
    g_ref = np.full(net.n_params, np.nan, dtype)
    l_ref = ref.loss_grad(theta, g_ref, net.layout, net.act_params, X, Y, sw, alpha,
                          counters, np.empty(ref.workspace_size(net.layout, n), dtype))
    g = np.full(net.n_params, np.nan, dtype)
    before = counters.copy()
    loss = kern.loss_grad(theta, g, net.layout, net.act_params, X, Y, sw, alpha, counters,
                          np.empty(kern.workspace_size(net.layout, n), dtype))
    np.testing.assert_array_equal(counters, before)  # loss_grad does not touch counters
    return (loss, g), (l_ref, g_ref)


@pytest.mark.parametrize("kern", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_code", [0, 1, 2, 3])
@pytest.mark.parametrize("act", HIDDEN)
def test_loss_grad_every_loss_and_activation(kern, dtype, loss_code, act):
    net = _network([7, 6], [act, act], OUT_BY_LOSS[loss_code])
    theta = _theta(net, dtype)
    X, Y, sw = _data(loss_code, 29, 5, 3, dtype)
    for weights, alpha in ((None, 0.0), (sw, 0.3)):
        (loss, g), (l_ref, g_ref) = _loss_grad_both(kern, net, theta, X, Y, weights, alpha,
                                                    _counters(loss_code))
        what = f"{act} loss={loss_code} weighted={weights is not None}"
        _close(loss, l_ref, CALL_RTOL[dtype], what)
        _close(g, g_ref, CALL_RTOL[dtype], what)


MIXES = [
    (["prelu", "rrelu", "maxout"], [{}, {"lower": 0.05, "upper": 0.5}, {"k": 3}]),
    (["maxout", "prelu", "tanh"], [{"k": 3}, {"init": 0.1}, {}]),
    (["gelu", "leaky_relu", "rrelu"], [{}, {"negative_slope": 0.2}, {}]),
    (["relu", "softplus", "hard_sigmoid"], [{}, {}, {}]),
    (["selu", "swish", "hard_tanh"], [{}, {"beta": 0.7}, {}]),
]


@pytest.mark.parametrize("kern", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mix", range(len(MIXES)))
def test_loss_grad_per_layer_mixes(kern, dtype, mix):
    acts, params = MIXES[mix]
    for loss_code in (0, 2, 3):
        net = Network([4, 6, 5, 7, 2], acts, params, OUT_BY_LOSS[loss_code])
        theta = _theta(net, dtype, seed=mix)
        X, Y, sw = _data(loss_code, 31, 4, 2, dtype, seed=mix)
        (loss, g), (l_ref, g_ref) = _loss_grad_both(kern, net, theta, X, Y, sw, 0.1,
                                                    _counters(loss_code, step=mix))
        _close(loss, l_ref, CALL_RTOL[dtype], f"{acts} loss={loss_code}")
        _close(g, g_ref, CALL_RTOL[dtype], f"{acts} loss={loss_code}")


def test_unit_weights_equal_no_weights():
    net = _network([6], ["tanh"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, _ = _data(3, 20, 5, 3, np.float64)
    work = np.empty(_cy.workspace_size(net.layout, 20))
    g1, g2 = np.empty(net.n_params), np.empty(net.n_params)
    l1 = _cy.loss_grad(theta, g1, net.layout, net.act_params, X, Y, None, 0.2, _counters(3),
                       work)
    l2 = _cy.loss_grad(theta, g2, net.layout, net.act_params, X, Y, np.ones(20), 0.2,
                       _counters(3), work)
    assert l1 == l2
    np.testing.assert_array_equal(g1, g2)


# ------------------------------------------------------------------------- train_epoch
def _epoch_both(kern, net, theta, X, Y, sw, order, bs, hyper, counters, epochs=2):
    dtype = theta.dtype
    results = []
    for backend in (ref, kern):
        th = theta.copy()
        st = np.zeros((2, net.n_params), dtype)
        co = counters.copy()
        g = np.empty(net.n_params, dtype)
        work = np.empty(backend.workspace_size(net.layout, bs), dtype)
        losses = [backend.train_epoch(th, g, st, net.layout, net.act_params, X, Y, sw,
                                      order, bs, hyper, co, work) for _ in range(epochs)]
        results.append((np.array(losses), th, st, co))
    return results




@pytest.mark.parametrize("kern", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("acts,loss_code", [
    (["relu", "tanh"], 3), (["logistic"], 2), (["identity", "relu"], 0),
    (["prelu", "rrelu", "maxout"], 3), (["elu", "gelu"], 1),
])
def test_train_epoch(kern, dtype, solver, acts, loss_code):
    hyper, solver_code, nesterov = SOLVERS[solver]
    hidden = [6, 5, 4][: len(acts)]
    net = _network(hidden, acts, OUT_BY_LOSS[loss_code], n_out=2)
    theta = _theta(net, dtype) * 0.5
    X, Y, sw = _data(loss_code, 37, 5, 2, dtype)
    order = np.random.default_rng(4).permutation(37).astype(np.int64)
    for weights, bs in ((None, 8), (sw, 37), (sw, 1)):
        counters = _counters(loss_code, solver_code, nesterov, step=3, adam_t=2)
        (l_ref, th_ref, st_ref, co_ref), (loss, th, st, co) = _epoch_both(
            kern, net, theta, X, Y, weights, order, bs, hyper, counters)
        what = f"{solver} {acts} bs={bs} weighted={weights is not None}"
        np.testing.assert_array_equal(co, co_ref, err_msg=what)
        assert co[3] == 3 + 2 * -(-37 // bs)  # STEP counts every mini-batch
        _close(loss, l_ref, CALL_RTOL[dtype], what)
        _close(th, th_ref, CALL_RTOL[dtype], what)
        _close(st, st_ref, CALL_RTOL[dtype], what)


def test_train_epoch_visits_only_order():
    # rows that are not in `order` must not influence the epoch; a short order is allowed
    net = _network([5], ["relu"], "identity", n_out=1)
    theta = _theta(net, np.float64)
    X, Y, _ = _data(0, 20, 5, 1, np.float64)
    order = np.array([3, 7, 7, 1], dtype=np.int64)
    hyper, solver_code, nesterov = SOLVERS["adam"]
    (l_ref, th_ref, st_ref, _), (loss, th, st, _) = _epoch_both(
        _cy, net, theta, X, Y, None, order, 3, hyper, _counters(0, solver_code, nesterov))
    _close(loss, l_ref, 1e-10)
    _close(th, th_ref, 1e-10)


def test_builds_agree_bit_for_bit():
    if len(BUILDS) < 2:
        pytest.skip("only the baseline build runs on this CPU")
    for dtype in DTYPES:
        net = _network([9, 7], ["gelu", "relu"], "softmax")
        theta = _theta(net, dtype)
        X, Y, sw = _data(3, 50, 5, 3, dtype)
        order = np.arange(50, dtype=np.int64)[::-1].copy()
        hyper, solver_code, nesterov = SOLVERS["adam"]
        outs = []
        for kern in BUILDS:
            th, st = theta.copy(), np.zeros((2, net.n_params), dtype)
            co = _counters(3, solver_code, nesterov)
            loss = kern.train_epoch(th, np.empty_like(th), st, net.layout, net.act_params, X,
                                    Y, sw, order, 16, hyper, co,
                                    np.empty(kern.workspace_size(net.layout, 16), dtype))
            outs.append((loss, th, st))
        assert outs[0][0] == outs[1][0]
        np.testing.assert_array_equal(outs[0][1], outs[1][1])
        np.testing.assert_array_equal(outs[0][2], outs[1][2])


# ------------------------------------------------------------------ argument checking
def test_bad_arguments_raise_instead_of_corrupting_memory():
    net = _network([6], ["relu"], "softmax")
    theta = _theta(net, np.float64)
    X, Y, _ = _data(3, 10, 5, 3, np.float64)
    order = np.arange(10, dtype=np.int64)
    hyper, solver_code, nesterov = SOLVERS["adam"]

    def call(**kw):
        args = dict(theta=theta.copy(), grad=np.empty(net.n_params),
                    opt_state=np.zeros((2, net.n_params)), layout=net.layout,
                    act_params=net.act_params, X=X, Y=Y, sample_weight=None, order=order,
                    batch_size=4, hyper=hyper, counters=_counters(3, solver_code),
                    work=np.empty(_cy.workspace_size(net.layout, 4)))
        args.update(kw)
        return _cy.train_epoch(**args)

    call()  # the baseline call is fine
    with pytest.raises(ValueError, match="work"):
        call(work=np.empty(_cy.workspace_size(net.layout, 4) - 1))
    with pytest.raises(ValueError, match="order"):
        call(order=np.array([0, 10], dtype=np.int64))
    with pytest.raises(ValueError, match="theta"):
        call(theta=theta[:-1].copy())
    with pytest.raises(ValueError, match="grad"):
        call(grad=np.empty(net.n_params, np.float32))
    with pytest.raises(ValueError, match="opt_state"):
        call(opt_state=np.zeros((2, net.n_params))[:, ::2])
    with pytest.raises(ValueError, match="X has"):
        call(X=X[:, :4])
    with pytest.raises(ValueError, match="output activation"):
        call(counters=_counters(2, solver_code))
    for serial in (-1, 3):
        bad = _counters(3, solver_code, serial=serial)
        with pytest.raises(ValueError, match=r"counters\[SERIAL\] = .* is not a mode"):
            call(counters=bad)
    with pytest.raises(ValueError, match="layout"):
        bad = net.layout.copy()
        bad[0, 3] = 5  # COEF_OFF
        call(layout=bad)
    with pytest.raises(ValueError, match="activation code"):
        bad = net.layout.copy()
        bad[0, 5] = 16
        call(layout=bad)
    with pytest.raises(TypeError, match="float32 or float64"):
        call(theta=theta.astype(np.float16))
    with pytest.raises(ValueError, match="writable"):
        ro = theta.copy()
        ro.flags.writeable = False
        call(theta=ro)


def test_predict_accepts_read_only_weights():
    # a model memory-mapped read-only (joblib mmap_mode='r') still predicts
    net = _network([6], ["tanh"], "softmax")
    theta = _theta(net, np.float64)
    theta.flags.writeable = False
    layout = net.layout.copy()
    layout.flags.writeable = False
    out = np.empty((4, 3))
    _cy.forward(theta, layout, net.act_params, np.ones((4, 5)), out, True, 4,
                np.empty(_cy.workspace_size(layout, 4)))
    assert np.allclose(out.sum(axis=1), 1.0)


def test_threads_share_nothing():
    # the kernels release the GIL; concurrent calls on separate buffers must not interfere
    net = _network([16, 8], ["tanh", "relu"], "softmax")
    theta = _theta(net, np.float64)
    X = np.random.default_rng(5).normal(size=(300, 5))
    expected = np.empty((300, 3))  # same chunks as the threads: bit-for-bit comparable
    cy_backend.forward(theta, net.layout, net.act_params, X, expected, True, 32,
                       np.empty(_cy.workspace_size(net.layout, 32)))
    results = [None] * 4

    def worker(i):
        out = np.empty((300, 3))
        work = np.empty(_cy.workspace_size(net.layout, 32))
        for _ in range(20):
            cy_backend.forward(theta, net.layout, net.act_params, X, out, True, 32, work)
        results[i] = out

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)


# ------------------------------------------------------------------------ whole fits
def _task(task, dtype, n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(dtype)
    w = rng.normal(size=(6, 3))
    if task == "binary":
        return MLPClassifier, X, (X @ w[:, 0] > 0).astype(int), {}
    if task == "multiclass":
        return MLPClassifier, X, np.argmax(X @ w, axis=1), {}
    if task == "multilabel":
        return MLPClassifier, X, (X @ w > 0).astype(int), {}
    if task == "regression":
        return MLPRegressor, X, X @ w[:, :2] + 0.1 * rng.normal(size=(n, 2)), {}
    if task == "poisson":
        return MLPRegressor, X, rng.poisson(np.exp(0.3 * X @ w[:, 0])), {"loss": "poisson"}
    raise ValueError(task)


TASKS = ["binary", "multiclass", "multilabel", "regression", "poisson"]
FIT_SOLVERS = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd_nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True,
                         learning_rate_init=0.01),
    "sgd_momentum_invscaling": dict(solver="sgd", momentum=0.8, nesterovs_momentum=False,
                                    learning_rate="invscaling", learning_rate_init=0.05),
    "sgd_adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.01,
                         n_iter_no_change=2, tol=1e-1),
    "lbfgs": dict(solver="lbfgs"),
}
FIT_ACTS = ["identity", "logistic", "tanh", "relu"]
CONFIGS = {
    "defaults": {},
    "batch_7": dict(batch_size=7),
    "early_stopping": dict(early_stopping=True),
    "alpha_9_5": dict(alpha=0.3, hidden_layer_sizes=(9, 5)),
}
# every task with every solver, each activation and configuration rotating through them so
# that all appear with every task and every solver (25 cases per dtype)
FIT_CASES = [
    (task, solver, FIT_ACTS[(i + j) % 4], list(CONFIGS)[(i + 2 * j) % 4])
    for i, task in enumerate(TASKS) for j, solver in enumerate(FIT_SOLVERS)
]


def _fit_both(cls, X, y, params):
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for backend in ("numpy", "cython"):
            fits.append(cls(backend=backend, **params).fit(X, y))
    assert fits[1].backend_ == "cython"
    return fits


def _assert_same_fit(a, b, rtol, what):
    if hasattr(a, "loss_curve_"):
        assert len(a.loss_curve_) == len(b.loss_curve_), what
        _close(b.loss_curve_, a.loss_curve_, rtol, what + " loss_curve_")
    _close(b.loss_, a.loss_, rtol, what + " loss_")
    assert a.n_iter_ == b.n_iter_, what
    for l, (ca, cb) in enumerate(zip(a.coefs_, b.coefs_)):
        _close(cb, ca, rtol, f"{what} coefs_[{l}]")
    for l, (ia, ib) in enumerate(zip(a.intercepts_, b.intercepts_)):
        _close(ib, ia, rtol, f"{what} intercepts_[{l}]")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("task,solver,act,config", FIT_CASES)
def test_fit_agrees_with_numpy_backend(dtype, task, solver, act, config):
    cls, X, y, extra = _task(task, dtype)
    params = dict(hidden_layer_sizes=(8,), activation=act, max_iter=12, random_state=0,
                  **extra, **FIT_SOLVERS[solver])
    params.update(CONFIGS[config])
    if config == "early_stopping" and solver == "lbfgs":
        params["batch_size"] = 7  # early stopping is a stochastic-solver option
    a, b = _fit_both(cls, X, y, params)
    what = f"{task}/{solver}/{act}/{config}/{np.dtype(dtype).name}"
    _assert_same_fit(a, b, FIT_RTOL[dtype], what)
    assert b.coefs_[0].dtype == dtype
    pa = a.predict_proba(X) if cls is MLPClassifier else a.predict(X)
    pb = b.predict_proba(X) if cls is MLPClassifier else b.predict(X)
    _close(pb, pa, FIT_RTOL[dtype], what + " predictions")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,activation_params,solver", [
    (["prelu", "rrelu"], None, "adam"),
    ("maxout", {"k": 3}, "sgd"),
    (["gelu", "elu"], None, "lbfgs"),
])
def test_fit_agrees_with_extra_activations(dtype, activation, activation_params, solver):
    cls, X, y, extra = _task("multiclass", dtype)
    params = dict(hidden_layer_sizes=(7, 5), activation=activation,
                  activation_params=activation_params, solver=solver, max_iter=12,
                  batch_size=9, random_state=0, learning_rate_init=0.01)
    a, b = _fit_both(cls, X, y, params)
    _assert_same_fit(a, b, FIT_RTOL[dtype], f"{activation}/{solver}")


def test_fit_with_sample_weight_and_partial_fit():
    cls, X, y, _ = _task("multiclass", np.float64)
    sw = np.random.default_rng(7).uniform(0.1, 2.0, X.shape[0])
    fits = []
    for backend in ("numpy", "cython"):
        est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0,
                            batch_size=10, backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y, sample_weight=sw)
        est.partial_fit(X, y, sample_weight=sw)
        fits.append(est)
    _assert_same_fit(fits[0], fits[1], FIT_RTOL[np.float64], "sample_weight + partial_fit")


def test_training_touches_blas_buffers():
    # train_epoch runs one product in each thread that will call BLAS before its first epoch
    # (warm_blas: OpenBLAS is slow on small products until its buffers' pages are touched);
    # the state is the extension's, so an earlier fit in this process may have set it
    # already; the parity tests above are what show it changes no number against NumPy
    kern = get_backend("cython")._cy
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 8)), rng.integers(0, 3, 300)
    fits = [MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                          backend="cython") for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in fits:
            est.fit(X, y)
    assert kern.blas_warm_threads() in (1, 2)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    for a, b in zip(fits[0].coefs_, fits[1].coefs_):
        np.testing.assert_array_equal(a, b)
