"""Weight initialisation schemes.

A scheme draws the weights ``W`` (shape ``(fan_in, fan_out)``) and the intercepts ``b`` of one
layer from the estimator's ``RandomState``. Variance-preserving schemes (seed 002) choose
``Var(W)`` so that activations (forward) or gradients (backward) keep their scale from layer to
layer:

==================  =============================================  ==========================
name                distribution of ``W``                           ``Var(W)``
==================  =============================================  ==========================
``sklearn``         U(-r, r), r = sqrt(f / (fan_in + fan_out)),     f / (3 (fan_in + fan_out))
                    f = 2 for logistic, else 6; ``b`` likewise
``glorot_uniform``  U(-r, r), r = sqrt(6 / (fan_in + fan_out))      2 / (fan_in + fan_out)
``glorot_normal``   N(0, 2 / (fan_in + fan_out)) (Xavier)           2 / (fan_in + fan_out)
``he_uniform``      U(-r, r), r = sqrt(6 / fan_in)                  2 / fan_in
``he_normal``       N(0, 2 / fan_in)                                2 / fan_in
``lecun_normal``    N(0, 1 / fan_in) (pairs with selu)              1 / fan_in
``normal``          N(0, 1) * 0.01 (seed 000)                       1e-4
``uniform``         U(-1, 1), ``b`` too (seed 000's XOR code)       1 / 3
``zeros``           0 (every unit of a layer stays identical)       0
==================  =============================================  ==========================

Except for ``sklearn`` and ``uniform``, intercepts start at zero. ``sklearn`` draws exactly what
scikit-learn draws (weights then intercepts, layer by layer), so the default initialisation
reproduces scikit-learn's models.

A callable ``init(rng, fan_in, fan_out, dtype) -> ndarray of shape (fan_in, fan_out)`` may be
passed instead of a name; its intercepts start at zero.
"""

import numpy as np

__all__ = ["INITIALIZERS", "initialize_layer"]


def _sklearn(rng, fan_in, fan_out, activation):
    factor = 2.0 if activation == "logistic" else 6.0
    bound = np.sqrt(factor / (fan_in + fan_out))
    coef = rng.uniform(-bound, bound, (fan_in, fan_out))
    intercept = rng.uniform(-bound, bound, fan_out)
    return coef, intercept


def _glorot_uniform(rng, fan_in, fan_out, activation):
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, (fan_in, fan_out)), np.zeros(fan_out)


def _glorot_normal(rng, fan_in, fan_out, activation):
    std = np.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, (fan_in, fan_out)), np.zeros(fan_out)


def _he_uniform(rng, fan_in, fan_out, activation):
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, (fan_in, fan_out)), np.zeros(fan_out)


def _he_normal(rng, fan_in, fan_out, activation):
    std = np.sqrt(2.0 / fan_in)
    return rng.normal(0.0, std, (fan_in, fan_out)), np.zeros(fan_out)


def _lecun_normal(rng, fan_in, fan_out, activation):
    std = np.sqrt(1.0 / fan_in)
    return rng.normal(0.0, std, (fan_in, fan_out)), np.zeros(fan_out)


def _normal(rng, fan_in, fan_out, activation):
    return rng.standard_normal((fan_in, fan_out)) * 0.01, np.zeros(fan_out)


def _uniform(rng, fan_in, fan_out, activation):
    return rng.uniform(-1.0, 1.0, (fan_in, fan_out)), rng.uniform(-1.0, 1.0, fan_out)


def _zeros(rng, fan_in, fan_out, activation):
    return np.zeros((fan_in, fan_out)), np.zeros(fan_out)


INITIALIZERS = {
    "sklearn": _sklearn,
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
    "lecun_normal": _lecun_normal,
    "normal": _normal,
    "uniform": _uniform,
    "zeros": _zeros,
}
"""Initialisation schemes by name."""


def check_init(init):
    """Validate ``init``: a registry name or a callable."""
    if callable(init) or init in INITIALIZERS:
        return init
    raise ValueError(
        f"Unknown init {init!r}. Use a callable (rng, fan_in, fan_out, dtype) -> array or one "
        f"of: {', '.join(sorted(INITIALIZERS))}."
    )


def initialize_layer(init, rng, fan_in, fan_out, dtype, activation):
    """Draw the weights and intercepts of one layer.

    Parameters
    ----------
    init : str or callable
        A key of :data:`INITIALIZERS` or a callable ``(rng, fan_in, fan_out, dtype) -> W``.
    rng : numpy.random.RandomState
        The estimator's random state.
    fan_in, fan_out : int
        Number of inputs and of outputs (GEMM columns) of the layer.
    dtype : numpy dtype
        dtype of the returned arrays.
    activation : str
        The layer's activation (``sklearn`` uses a smaller range for ``logistic``).

    Returns
    -------
    coef : ndarray of shape (fan_in, fan_out)
    intercept : ndarray of shape (fan_out,)
    """
    if callable(init):
        coef = np.asarray(init(rng, fan_in, fan_out, dtype))
        if coef.shape != (fan_in, fan_out):
            raise ValueError(
                f"The init callable returned an array of shape {coef.shape}; expected "
                f"(fan_in, fan_out) = ({fan_in}, {fan_out})."
            )
        intercept = np.zeros(fan_out)
    else:
        coef, intercept = INITIALIZERS[init](rng, fan_in, fan_out, activation)
    return coef.astype(dtype, copy=False), intercept.astype(dtype, copy=False)
