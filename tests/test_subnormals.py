"""Subnormal numbers: the compiled kernels flush them to zero while they run (x86).

Arithmetic on subnormals (below 1.2e-38 in float32, 2.2e-308 in float64) takes a microcode
assist on many x86 cores; Adam's moments and the weights of dead units decay into that range
in long float32 fits, which then ran several times slower than in float64. The Numba and
Cython kernels set flush-to-zero and denormals-are-zero on each thread for the length of a
call and restore the thread's mode on return. The NumPy backend, the reference, computes
subnormals as NumPy does; the two agree except for values below the smallest normal number.
"""

import platform

import numpy as np
import pytest

from fastmlp import MLPClassifier, MLPRegressor

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
DTYPES = [np.float32, np.float64]
# MXCSR control bits (exception masks, rounding, FTZ, DAZ), not the sticky status flags
CONTROL = 0xFFC0


def _fp_modes():
    from fastmlp.kernels import _cy, numba_kernels

    return _cy.fp_mode() & CONTROL, numba_kernels.fp_mode() & CONTROL


def _subnormal(a):
    a = np.abs(np.asarray(a))
    return (a > 0) & (a < np.finfo(a.dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_prediction_reads_subnormal_weights_as_zero(backend, dtype):
    # one identity unit: the prediction is x * w1 * w2 with w2 subnormal
    X = np.ones((4, 1), dtype=dtype)
    est = MLPRegressor(hidden_layer_sizes=(1,), activation="identity", max_iter=1,
                       random_state=0, backend=backend).fit(X, X[:, 0])
    tiny = np.finfo(dtype).tiny
    est.coefs_[0][:] = 1
    est.coefs_[1][:] = tiny / 4
    for b in est.intercepts_:
        b[:] = 0
    pred = est.predict(X)
    assert pred.dtype == dtype
    flushed = X86 and backend != "numpy"
    assert (pred == (0 if flushed else tiny / 4)).all(), pred


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_adam_moments_of_a_dead_unit_flush_to_zero(backend, dtype):
    # unit 0 never fires, so its weights get a zero gradient (alpha 0) and their first
    # moments decay by beta_1 from just above the smallest normal number into the
    # subnormal range: the reference keeps them, the compiled kernels flush them
    rs = np.random.RandomState(0)
    X = rs.rand(40, 3).astype(dtype)
    y = X[:, 0] + X[:, 1]
    est = MLPRegressor(hidden_layer_sizes=(3,), alpha=0.0, max_iter=1, batch_size=40,
                       random_state=0, backend=backend).fit(X, y)
    est.coefs_[0][:, 0] = -1
    est.intercepts_[0][0] = -10   # X is in [0, 1): the pre-activation is below -7
    tiny = np.finfo(dtype).tiny
    moments = est._optimizer.moments
    moments[:] = dtype(1.05) * tiny
    est.partial_fit(X, y)
    m = est._optimizer.moments[0]
    dead = _subnormal(m) | (m == 0)
    assert dead.sum() >= 4   # the unit's 3 incoming and 1 outgoing weights (and its bias)
    if X86 and backend != "numpy":
        assert not _subnormal(est._optimizer.moments).any()
        assert not _subnormal(est._theta).any()
    else:
        assert _subnormal(m).sum() >= 4


@pytest.mark.skipif(not X86, reason="the kernels change the floating-point mode on x86 only")
@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_kernels_restore_the_callers_floating_point_mode(backend, solver):
    before = _fp_modes()
    assert before[0] & 0x8040 == 0, "the test process itself runs with FTZ/DAZ set"
    X = np.random.RandomState(0).rand(300, 4)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, solver=solver, random_state=0,
                        backend=backend).fit(X, X[:, 0] > 0.5)
    est.predict(X[:1])
    est.predict_proba(X)
    assert _fp_modes() == before
    # and NumPy, on this thread, still computes subnormals
    tiny = np.finfo(np.float32).tiny
    assert np.float32(tiny) / np.float32(4) > 0
