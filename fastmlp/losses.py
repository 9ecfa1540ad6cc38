"""Loss functions and their pairing with output activations.

Each loss is paired with the output activation whose derivative cancels against it (the
canonical link), so that the error signal at the output pre-activation is simply
``delta = (p - y) * w``:

- ``squared_error`` with ``identity``: half the mean squared error,
  ``l = 1/2 * mean_k (y_k - p_k)^2`` (seed 001).
- ``poisson`` with ``exp``: half the Poisson deviance, ``l = sum_k y_k log(y_k / p_k) - y_k + p_k``
  (``exp`` keeps ``p_k`` a positive normal number, so the logarithm is finite).
- ``binary_log_loss`` with ``logistic``: binary and multilabel cross-entropy,
  ``l = -sum_k y_k log p_k + (1 - y_k) log(1 - p_k)`` (seed 001).
- ``log_loss`` with ``softmax``: multiclass cross-entropy on one-hot targets,
  ``l = -sum_k y_k log p_k`` (seed 001).

Probabilities are clipped to ``[eps, 1 - eps]`` inside the logarithms (``eps`` the machine
epsilon of the dtype), as scikit-learn does. The NumPy functions below are the reference that
the compiled kernels are tested against, written with scikit-learn's order of operations.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import xlogy

__all__ = ["Loss", "LOSSES"]


def squared_error(y_true, y_pred, sample_weight=None):
    """Half the mean squared error, averaged over samples and outputs."""
    return 0.5 * np.average((y_true - y_pred) ** 2, weights=sample_weight, axis=0).mean()


def poisson(y_true, y_pred, sample_weight=None):
    """Half the Poisson deviance (with the constant term ``y log y - y``).

    ``y log(y / p)`` as scikit-learn computes it, except where ``y / p`` overflows (a
    prediction near the smallest normal number and a target above about 8): there
    ``y (log y - log p)``, the same value computed without the overflow.
    """
    with np.errstate(over="ignore"):
        ratio = y_true / y_pred
    log_term = xlogy(y_true, ratio)
    overflow = np.isinf(ratio)
    if overflow.any():
        y = np.broadcast_to(y_true, ratio.shape)[overflow]
        p = np.broadcast_to(y_pred, ratio.shape)[overflow]
        log_term[overflow] = y * (np.log(y) - np.log(p))
    return np.average(log_term - y_true + y_pred, weights=sample_weight, axis=0).sum()


def log_loss(y_true, y_prob, sample_weight=None):
    """Multiclass cross-entropy of one-hot targets and softmax probabilities."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return -np.average(xlogy(y_true, y_prob), weights=sample_weight, axis=0).sum()


def binary_log_loss(y_true, y_prob, sample_weight=None):
    """Binary cross-entropy summed over outputs (binary and multilabel targets)."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return -np.average(
        xlogy(y_true, y_prob) + xlogy(1 - y_true, 1 - y_prob),
        weights=sample_weight,
        axis=0,
    ).sum()


@dataclass(frozen=True)
class Loss:
    """A loss, its integer code for the kernels and its output activation."""

    name: str
    code: int
    out_activation: str
    value: Callable


LOSSES = {
    l.name: l
    for l in [
        Loss("squared_error", 0, "identity", squared_error),
        Loss("poisson", 1, "exp", poisson),
        Loss("binary_log_loss", 2, "logistic", binary_log_loss),
        Loss("log_loss", 3, "softmax", log_loss),
    ]
}
"""Losses by name."""

BY_OUT_ACTIVATION = {l.out_activation: l for l in LOSSES.values()}
