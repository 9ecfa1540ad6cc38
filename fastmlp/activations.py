"""Activation functions: the registry and the NumPy reference of each one.

Every activation has an integer ``code`` (the only thing compiled kernels see), the names and
defaults of its numeric parameters (passed through ``activation_params``), a forward function
and a derivative. The NumPy functions here are the reference that the Numba and Cython kernels
are tested against; their formulas are those of the source documents (see
``docs/kernel_contract.md`` for the table of codes).

Conventions, as in scikit-learn's ``neural_network._base``:

- ``forward(z, out, p)`` writes ``f(z)`` into ``out`` (which may be ``z`` itself) and returns it.
- ``derivative(z, a, delta, p)`` multiplies ``delta`` in place by ``f'(z)``; ``a`` is the
  activation output ``f(z)``. ``logistic``, ``tanh`` and ``relu`` use only ``a`` (so ``z`` may
  be the same array), exactly as scikit-learn does.
- ``p`` is the layer's row of ``act_params`` (two floats).
"""

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import erf, expit

__all__ = [
    "Activation",
    "HIDDEN_ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "ALIASES",
    "resolve_activation",
    "rrelu_uniform",
]

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
_SQRT_2 = np.sqrt(2.0)
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
_GELU_C = 0.044715


@dataclass(frozen=True)
class Activation:
    """One activation function of the registry.

    Attributes
    ----------
    name : str
        Registry key.
    code : int
        Integer code passed to compiled kernels.
    formula : str
        ``f(z)`` in plain text (shown in docstrings and the README).
    params : tuple of str
        Names of the numeric parameters, in the order of the ``act_params`` columns.
    defaults : tuple of float
        Default value of each parameter.
    forward, derivative : callable
        NumPy reference implementations (see the module docstring).
    kind : {'elementwise', 'prelu', 'rrelu', 'maxout', 'output'}
        How the layer uses the function; the non-elementwise kinds need extra state
        (learnable slopes, random slopes, pieces).
    from_output : bool
        True when the derivative needs only the output ``a`` (the layer can be computed in
        place).
    """

    name: str
    code: int
    formula: str
    forward: Callable
    derivative: Callable = None
    params: tuple = ()
    defaults: tuple = ()
    kind: str = "elementwise"
    from_output: bool = False
    bounds: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- elementwise
def _identity(z, out, p):
    if out is not z:
        np.copyto(out, z)
    return out


def _identity_d(z, a, delta, p):
    return delta


def _logistic(z, out, p):
    return expit(z, out=out)


def _logistic_d(z, a, delta, p):
    # scikit-learn's order: delta *= a; delta *= 1 - a
    delta *= a
    delta *= 1 - a
    return delta


def _tanh(z, out, p):
    return np.tanh(z, out=out)


def _tanh_d(z, a, delta, p):
    delta *= 1 - a**2
    return delta


def _relu(z, out, p):
    return np.maximum(z, 0, out=out)


def _relu_d(z, a, delta, p):
    delta[a == 0] = 0
    return delta


def _leaky_relu(z, out, p):
    s = p[0]
    return np.multiply(z, np.where(z > 0, 1.0, s).astype(z.dtype, copy=False), out=out)


def _leaky_relu_d(z, a, delta, p):
    delta *= np.where(z > 0, 1.0, p[0]).astype(delta.dtype, copy=False)
    return delta


def _elu(z, out, p):
    al = p[0]
    neg = al * np.expm1(np.minimum(z, 0))
    np.copyto(out, np.where(z > 0, z, neg))
    return out


def _elu_d(z, a, delta, p):
    al = p[0]
    delta *= np.where(z > 0, 1.0, al * np.exp(np.minimum(z, 0))).astype(delta.dtype, copy=False)
    return delta


def _selu(z, out, p):
    neg = SELU_ALPHA * np.expm1(np.minimum(z, 0))
    np.copyto(out, SELU_LAMBDA * np.where(z > 0, z, neg))
    return out


def _selu_d(z, a, delta, p):
    d = np.where(z > 0, SELU_LAMBDA, SELU_LAMBDA * SELU_ALPHA * np.exp(np.minimum(z, 0)))
    delta *= d.astype(delta.dtype, copy=False)
    return delta


def _softplus(z, out, p):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for any z
    np.copyto(out, np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))))
    return out


def _softplus_d(z, a, delta, p):
    delta *= expit(z)
    return delta


def _swish(z, out, p):
    b = p[0]
    np.copyto(out, z * expit(b * z))
    return out


def _swish_d(z, a, delta, p):
    b = p[0]
    s = expit(b * z)
    delta *= s * (1 + b * z * (1 - s))
    return delta


def _gelu(z, out, p):
    np.copyto(out, 0.5 * z * (1 + erf(z / _SQRT_2)))
    return out


def _gelu_d(z, a, delta, p):
    zc = np.clip(z, -40, 40)  # phi(z) underflows to 0 long before; avoids z**2 overflow
    delta *= 0.5 * (1 + erf(z / _SQRT_2)) + zc * _INV_SQRT_2PI * np.exp(-0.5 * zc * zc)
    return delta


def _gelu_tanh_inner(z):
    zc = np.clip(z, -20, 20)  # tanh saturates to +-1 well inside this range
    return zc, np.tanh(_SQRT_2_OVER_PI * (zc + _GELU_C * zc**3))


def _gelu_tanh(z, out, p):
    _, t = _gelu_tanh_inner(z)
    np.copyto(out, 0.5 * z * (1 + t))
    return out


def _gelu_tanh_d(z, a, delta, p):
    zc, t = _gelu_tanh_inner(z)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * zc * zc)
    delta *= 0.5 * (1 + t) + 0.5 * zc * (1 - t * t) * du
    return delta


def _hard_sigmoid(z, out, p):
    np.copyto(out, np.clip(0.25 * z + 0.5, 0, 1))
    return out


def _hard_sigmoid_d(z, a, delta, p):
    delta *= np.where((z > -2) & (z < 2), 0.25, 0.0).astype(delta.dtype, copy=False)
    return delta


def _hard_tanh(z, out, p):
    return np.clip(z, -1, 1, out=out)


def _hard_tanh_d(z, a, delta, p):
    delta *= ((z > -1) & (z < 1)).astype(delta.dtype, copy=False)
    return delta


# ------------------------------------------------------------------- special kinds
def _prelu(z, out, slopes):
    """``slopes``: the learnable slope of each unit, shape (n_units,)."""
    np.copyto(out, np.where(z > 0, z, z * slopes))
    return out


def _prelu_d(z, a, delta, slopes):
    delta *= np.where(z > 0, 1, slopes).astype(delta.dtype, copy=False)
    return delta


def _rrelu(z, out, r):
    """``r``: the slopes, an array like ``z`` in training or a scalar (their mean)."""
    np.copyto(out, np.where(z >= 0, z, z * r))
    return out


def _rrelu_d(z, a, delta, r):
    delta *= np.where(z >= 0, 1, r).astype(delta.dtype, copy=False)
    return delta


def _maxout(z, out, k):
    """``z`` has ``n_units * k`` columns; unit ``j`` is the maximum of columns ``j*k .. j*k+k-1``."""
    n, width = z.shape
    np.max(z.reshape(n, width // k, k), axis=2, out=out)
    return out


def _maxout_d(z, a, delta_a, delta_z, k):
    """Route ``delta_a`` (per unit) to the first maximal piece in ``delta_z`` (per piece)."""
    n, width = z.shape
    pieces = z.reshape(n, width // k, k)
    arg = np.argmax(pieces, axis=2)
    dz = delta_z.reshape(n, width // k, k)
    dz[...] = 0
    np.put_along_axis(dz, arg[:, :, None], delta_a[:, :, None], axis=2)
    return delta_z


# ------------------------------------------------------------------------- outputs
def _softmax(z, out, p):
    # scikit-learn's order of operations, so the reference matches it bit for bit
    tmp = z - z.max(axis=1)[:, np.newaxis]
    np.exp(tmp, out=out)
    out /= out.sum(axis=1)[:, np.newaxis]
    return out


@functools.lru_cache(maxsize=None)
def _exp_bounds(dtype):
    t = dtype.type
    top = t(np.log(float(np.finfo(dtype).max)))
    with np.errstate(over="ignore"):
        while not np.isfinite(np.exp(top)):  # float32: log(max) rounds up, exp overflows
            top = np.nextafter(top, t(-np.inf))
    return t(np.log(2.0 * float(np.finfo(dtype).tiny))), top


def exp_bounds(dtype):
    """``(bottom, top)``: the range the ``exp`` output activation clips ``z`` to, in ``dtype``.

    ``top`` is the largest value whose ``exp`` is finite (``log(max)`` rounded down);
    ``bottom = log(2 * tiny)`` (``tiny`` the smallest normal number), so that a Poisson
    prediction stays a positive normal number: it never underflows to 0, and its deviance
    ``y log(y / p)`` stays finite. float32: (-86.643394, 88.722832); float64:
    (-707.70327135170, 709.78271289338).
    """
    return _exp_bounds(np.dtype(dtype))


def _exp(z, out, p):
    bottom, top = exp_bounds(z.dtype)
    np.minimum(z, top, out=out)
    np.maximum(out, bottom, out=out)
    return np.exp(out, out=out)


def _mk(name, code, formula, fwd, der=None, params=(), defaults=(), kind="elementwise",
        from_output=False, bounds=None):
    return Activation(name, code, formula, fwd, der, tuple(params), tuple(defaults), kind,
                      from_output, bounds or {})


HIDDEN_ACTIVATIONS = {
    a.name: a
    for a in [
        _mk("identity", 0, "f(z) = z", _identity, _identity_d, from_output=True),
        _mk("logistic", 1, "f(z) = 1 / (1 + exp(-z))", _logistic, _logistic_d,
            from_output=True),
        _mk("tanh", 2, "f(z) = tanh(z)", _tanh, _tanh_d, from_output=True),
        _mk("relu", 3, "f(z) = max(z, 0)", _relu, _relu_d, from_output=True),
        _mk("leaky_relu", 4, "f(z) = z if z > 0 else negative_slope * z", _leaky_relu,
            _leaky_relu_d, ("negative_slope",), (0.01,)),
        _mk("prelu", 5, "f(z) = z if z > 0 else a_j * z, a_j learned per unit (from init)",
            _prelu, _prelu_d, ("init",), (0.25,), kind="prelu"),
        _mk("rrelu", 6,
            "f(z) = z if z >= 0 else r * z, r ~ U(lower, upper) in training, "
            "(lower + upper) / 2 in prediction",
            _rrelu, _rrelu_d, ("lower", "upper"), (1.0 / 8.0, 1.0 / 3.0), kind="rrelu",
            bounds={"lower": (0.0, None), "upper": (0.0, None)}),
        _mk("elu", 7, "f(z) = z if z > 0 else alpha * (exp(z) - 1)", _elu, _elu_d,
            ("alpha",), (1.0,)),
        _mk("selu", 8,
            "f(z) = lambda * (z if z > 0 else alpha * (exp(z) - 1)), "
            "lambda = 1.0507..., alpha = 1.6732...", _selu, _selu_d),
        _mk("softplus", 9, "f(z) = log(1 + exp(z))", _softplus, _softplus_d),
        _mk("swish", 10, "f(z) = z * sigmoid(beta * z)", _swish, _swish_d, ("beta",),
            (1.0,)),
        _mk("gelu", 11, "f(z) = z * Phi(z) = z / 2 * (1 + erf(z / sqrt(2)))", _gelu, _gelu_d),
        _mk("gelu_tanh", 12,
            "f(z) = z / 2 * (1 + tanh(sqrt(2 / pi) * (z + 0.044715 z^3)))", _gelu_tanh,
            _gelu_tanh_d),
        _mk("hard_sigmoid", 13, "f(z) = max(min(0.25 z + 0.5, 1), 0)", _hard_sigmoid,
            _hard_sigmoid_d),
        _mk("hard_tanh", 14, "f(z) = max(min(z, 1), -1)", _hard_tanh, _hard_tanh_d),
        _mk("maxout", 15, "f(z)_j = max_p z_{j, p}, p = 1..k affine pieces per unit",
            _maxout, _maxout_d, ("k",), (2,), kind="maxout", bounds={"k": (1, None)}),
    ]
}
"""Hidden-layer activations by name."""

ALIASES = {"silu": "swish", "sigmoid": "logistic"}
"""Other names accepted for hidden activations."""

OUTPUT_ACTIVATIONS = {
    a.name: a
    for a in [
        HIDDEN_ACTIVATIONS["identity"],
        HIDDEN_ACTIVATIONS["logistic"],
        _mk("softmax", 20, "f(z)_c = exp(z_c - max z) / sum_k exp(z_k - max z)", _softmax,
            kind="output"),
        _mk("exp", 21,
            "f(z) = exp(z), z clipped so that f(z) is a finite, positive normal number", _exp,
            kind="output"),
    ]
}
"""Output-layer activations by name (chosen by the loss, not by the user)."""

BY_CODE = {a.code: a for a in list(HIDDEN_ACTIVATIONS.values()) + list(OUTPUT_ACTIVATIONS.values())}


def resolve_activation(name):
    """Return the hidden :class:`Activation` called ``name`` (aliases accepted).

    Raises
    ------
    ValueError
        If the name is unknown; the message lists the available names.
    """
    key = ALIASES.get(name, name)
    try:
        return HIDDEN_ACTIVATIONS[key]
    except (KeyError, TypeError):
        names = ", ".join(sorted(list(HIDDEN_ACTIVATIONS) + list(ALIASES)))
        raise ValueError(
            f"Unknown activation {name!r}. Available activations: {names}."
        ) from None


# ---------------------------------------------------------------- counter-based RNG
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)


def _splitmix64(x):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=_U64)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> _U64(30))) * _M1
        z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def rrelu_uniform(seed, step, layer, n_rows, n_units):
    """Uniform numbers in [0, 1) for RReLU, shape ``(n_rows, n_units)``.

    The counter-based generator of ``docs/kernel_contract.md``: the number for (row, unit) of
    weight layer ``layer`` in mini-batch ``step`` depends only on those integers and ``seed``,
    so every backend draws the same numbers.
    """
    k_batch = _splitmix64(_U64(seed) ^ _splitmix64(_U64(step)))
    k_layer = _splitmix64(k_batch ^ _U64(layer))
    counter = np.arange(n_rows * n_units, dtype=_U64).reshape(n_rows, n_units)
    bits = _splitmix64(k_layer ^ counter) >> _U64(11)
    return bits.astype(np.float64) * (2.0**-53)
