"""Gradient check: backpropagation against central differences (seed 003, section 4.5.1).

Backpropagation is easy to get subtly wrong (a missing factor, a transposed matrix, the
derivative of the wrong activation); a central difference of the loss is slow but needs
nothing but the forward pass, so comparing the two catches such bugs. The comparison runs on
the estimator's own backend, through the same ``loss_grad`` entry point that L-BFGS uses
(``docs/kernel_contract.md``), in float64.
"""

import copy

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils import check_random_state

from ._training import _c_contiguous, _counters

__all__ = ["check_gradients"]

# Rounding noise of one central difference, as a multiple of ``u * max(|f|, 1) / (2 eps)``
# (u the float64 machine epsilon): components of the gradient smaller than this many times
# the noise are compared against ``tiny`` instead of their own size (see the docstring).
_NOISE_MULTIPLE = 1e6


def _is_fitted(est):
    return hasattr(est, "_theta") and hasattr(est, "_network")


def _as_float64(X):
    if sp.issparse(X):
        return X.astype(np.float64)
    return np.asarray(X, dtype=np.float64)


def check_gradients(estimator, X, y, eps=1e-6, sample_weight=None, max_params=None,
                    random_state=0, tiny=None, return_details=False):
    r"""Largest relative error between backpropagation and central differences.

    The objective is the full-batch training loss of ``estimator`` on ``(X, y)``, L2 term
    included, exactly as the solvers minimise it:

    .. math::

        f(\theta) = \frac{\sum_i w_i\, \ell(y_i, p_i(\theta))}{\sum_i w_i}
                    + \frac{\alpha}{2 \sum_i w_i} \sum_l \lVert W_l \rVert_F^2

    For a regressor with ``loss='squared_error'`` and :math:`K > 1` outputs, the data term
    is multiplied by :math:`K`: scikit-learn's loss :math:`\ell` averages the squared error
    over the outputs while its training gradient (the output delta :math:`p - y`) is that of
    their sum (scikit-learn issue #8349), and fastmlp keeps both for drop-in parity; the check
    is of the objective that training follows.

    For each checked parameter :math:`\theta_j` (every weight, intercept and learnable PReLU
    slope, or a random subset), the backpropagated gradient :math:`g^{bp}_j` (the backend's
    ``loss_grad``) is compared with the central difference (seed 003, section 4.5.1)

    .. math::

        g^{num}_j = \frac{f(\theta + \varepsilon e_j) - f(\theta - \varepsilon e_j)}
                         {2 \varepsilon}

    and the function returns

    .. math::

        \max_j \frac{|g^{bp}_j - g^{num}_j|}{\max(|g^{bp}_j| + |g^{num}_j|,\ \mathrm{tiny})}.

    Everything is computed in float64 (the weights of a float32 model are converted), on the
    estimator's backend (``backend_`` once fitted, else the one ``backend`` resolves to), so
    the check tests that backend's backpropagation.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        A fitted estimator (its current weights are used, and it is not modified) or an
        unfitted one (a :func:`~sklearn.base.clone` is initialised on ``(X, y)`` as ``fit``
        would, with its ``init`` and ``random_state``, and not trained).
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Input data.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Targets (class labels for a classifier; for a fitted classifier, labels among
        ``classes_``).
    eps : float, default=1e-6
        The step :math:`\varepsilon` of the central differences.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights :math:`w_i` (all ones if None).
    max_params : int, default=None
        Check only this many parameters, drawn at random without replacement (all if None or
        if there are fewer parameters).
    random_state : int, RandomState instance or None, default=0
        Chooses the subset when ``max_params`` is set.
    tiny : float, default=None
        Floor of the denominator. The central difference carries a rounding error of about
        :math:`u \max(|f(\theta)|, 1) / (2\varepsilon)` (:math:`u = 2^{-52}`), so for
        gradient components of that size the relative error says nothing about the
        gradient; they are compared with ``tiny`` instead. None means
        :math:`\mathrm{tiny} = 10^{6}\, u \max(|f(\theta)|, 1) / (2 \varepsilon)`
        (about :math:`1.1 \times 10^{-4} \max(|f|, 1)` for the default ``eps``): a
        component lost in rounding noise then reports about :math:`10^{-6}` or less, while a
        wrong component of any size above the noise still reports a large error.
    return_details : bool, default=False
        Also return a dict with the checked ``indices``, ``grad_backprop``,
        ``grad_numeric``, ``rel_error`` (one per checked parameter), ``loss`` and ``tiny``.

    Returns
    -------
    max_rel_error : float
        The largest relative error over the checked parameters (0.0 when there are none).
    details : dict
        Only when ``return_details`` is True.

    Notes
    -----
    At a kink of a piecewise activation (``relu`` at 0, ``hard_tanh`` at -1 and 1, ties
    between maxout pieces, ...) the derivative is one-sided, and a central difference that
    straddles the kink disagrees with backpropagation; check at points away from kinks. RReLU
    is checked on its training objective, whose random slopes depend only on the estimator's
    seed and step counter (``docs/kernel_contract.md``), so the objective is deterministic.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlp import MLPClassifier, check_gradients
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.randn(20, 3), rng.randint(0, 2, 20)
    >>> err = check_gradients(MLPClassifier((5,), activation="tanh", backend="numpy",
    ...                                     random_state=0), X, y)
    >>> err < 1e-6
    True
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}.")
    if _is_fitted(estimator):
        # Work on a copy: _prepare_fit re-validates the data against the fitted model (same
        # features, known classes) and keeps its weights, but it also resets state.
        est = copy.deepcopy(estimator)
        if getattr(est, "backend_", None):
            est.backend = est.backend_  # the backend that fitted it, even if 'auto' now differs
        backend, X, Y, sample_weight = est._prepare_fit(X, y, sample_weight, incremental=True)
    else:
        est = clone(estimator)
        backend, X, Y, sample_weight = est._prepare_fit(X, y, sample_weight)

    net = est._network
    theta = np.array(est._theta, dtype=np.float64)  # a private copy, perturbed in place
    X = _c_contiguous(_as_float64(X))
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = np.ascontiguousarray(sample_weight, dtype=np.float64)
    grad = np.empty(net.n_params, dtype=np.float64)
    work = np.empty(backend.workspace_size(net.layout, X.shape[0]), dtype=np.float64)
    counters = _counters(est, "sgd")
    alpha = float(est.alpha)

    # scikit-learn's squared error reports the mean over the outputs, but trains with the
    # output delta p - y, the gradient of their sum (scikit-learn issue #8349). fastmlp keeps
    # both for drop-in parity, so with several outputs the objective that backpropagation
    # differentiates is the data term times n_outputs, plus the L2 term.
    data_scale = Y.shape[1] if net.out_activation == "identity" else 1
    sw_sum = X.shape[0] if sample_weight is None else float(sample_weight.sum())
    coefs = net.coef_views(theta)

    def loss_and_grad(out):
        with np.errstate(over="ignore", under="ignore"):
            loss = float(backend.loss_grad(theta, out, net.layout, net.act_params, X, Y,
                                           sample_weight, alpha, counters, work))
        if data_scale == 1:
            return loss
        l2 = 0.5 * alpha * sum(float(np.dot(w.ravel(), w.ravel())) for w in coefs) / sw_sum
        return data_scale * (loss - l2) + l2

    loss = loss_and_grad(grad)
    g_bp = grad.copy()

    n_params = net.n_params
    if max_params is None or max_params >= n_params:
        indices = np.arange(n_params)
    else:
        if max_params < 1:
            raise ValueError(f"max_params must be None or >= 1, got {max_params!r}.")
        rng = check_random_state(random_state)
        indices = np.sort(rng.choice(n_params, size=int(max_params), replace=False))

    scratch = np.empty_like(grad)  # loss_grad always writes a gradient; we ignore it here
    g_num = np.empty(len(indices))
    for k, j in enumerate(indices):
        original = theta[j]
        theta[j] = original + eps
        f_plus = loss_and_grad(scratch)
        theta[j] = original - eps
        f_minus = loss_and_grad(scratch)
        theta[j] = original
        g_num[k] = (f_plus - f_minus) / (2.0 * eps)

    if tiny is None:
        tiny = _NOISE_MULTIPLE * np.finfo(np.float64).eps * max(abs(loss), 1.0) / (2.0 * eps)
    g_bp = g_bp[indices]
    denom = np.maximum(np.abs(g_bp) + np.abs(g_num), tiny)
    with np.errstate(invalid="ignore"):
        rel = np.abs(g_bp - g_num) / denom
    # a non-finite gradient or loss is an error of the largest kind, never a silent pass
    rel[~np.isfinite(rel)] = np.inf
    max_rel = float(rel.max()) if rel.size else 0.0
    if return_details:
        return max_rel, {
            "indices": indices,
            "grad_backprop": g_bp,
            "grad_numeric": g_num,
            "rel_error": rel,
            "loss": loss,
            "tiny": float(tiny),
        }
    return max_rel
