"""Small problems for the kernel tests of both compiled backends (test_cython_backend,
test_numba_backend, test_serial_products): networks with non-default activation
parameters, parameter vectors with distinct per-unit slopes, and data for each loss.

Not a test module (no ``test_`` prefix); pytest puts this folder on ``sys.path``.
"""

import numpy as np

from fastmlp._network import Network


def close(actual, expected, rtol, what=""):
    """``assert_allclose`` with an absolute floor of ``rtol`` times the largest reference
    value, after checking that both sides are finite."""
    expected = np.asarray(expected)
    assert np.isfinite(expected).all(), f"the reference itself is not finite: {what}"
    assert np.isfinite(actual).all(), f"non-finite result: {what}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def params_for(act):
    """Non-default parameters, so that a kernel reading the wrong column is caught."""
    return {
        "maxout": {"k": 3},
        "leaky_relu": {"negative_slope": 0.05},
        "elu": {"alpha": 0.7},
        "swish": {"beta": 1.3},
        "rrelu": {"lower": 0.1, "upper": 0.4},
        "prelu": {"init": 0.2},
    }.get(act, {})


def network(hidden, acts, out, n_in=5, n_out=3):
    return Network([n_in, *hidden, n_out], acts, [params_for(a) for a in acts], out)


def theta(net, dtype, seed=0, scale=0.6):
    """Normal weights; PReLU slopes drawn per unit from [0.05, 0.4)."""
    rng = np.random.default_rng(seed)
    th = rng.normal(0.0, scale, net.n_params).astype(dtype)
    for s in net.slope_views(th):
        if s is not None:
            s[...] = rng.uniform(0.05, 0.4, s.shape)
    return th


def targets(rng, loss_code, n, n_out, dtype):
    """Targets for a loss code: 3 one-hot (multiclass), 2 independent 0/1 (binary or
    multilabel), 1 Poisson counts (their zeros exercise 0 log 0), 0 normal (squared)."""
    if loss_code == 3:
        return np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    if loss_code == 2:
        return (rng.random((n, n_out)) > 0.5).astype(dtype)
    if loss_code == 1:
        return rng.poisson(1.5, (n, n_out)).astype(dtype)
    return rng.normal(size=(n, n_out)).astype(dtype)


def data(loss_code, n, n_in, n_out, dtype, seed=1):
    """``X`` normal, ``Y`` from :func:`targets`, sample weights in [0.2, 3)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    Y = targets(rng, loss_code, n, n_out, dtype)
    sw = rng.uniform(0.2, 3.0, n).astype(dtype)
    return X, Y, sw
