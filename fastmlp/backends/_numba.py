"""The Numba backend: every mini-batch of an epoch, and every prediction, in compiled code.

A thin wrapper around ``fastmlp.kernels.numba_kernels`` (see its docstring for the compilation
policy): it checks the arrays the kernels write into, converts the ones they only read when
needed (a no-op for the arrays the estimator passes), replaces ``sample_weight=None`` by a flag,
and densifies sparse input chunk by chunk for prediction. Entry points and arrays are described
in ``docs/kernel_contract.md``.

Importing this module imports Numba and loads (or, the first time, compiles) the kernels; if
Numba is missing the ImportError propagates, and ``fastmlp.backends.get_backend`` turns it into
a clear error.
"""

import numpy as np
import scipy.sparse as sp

from ..kernels import numba_kernels as _nb

name = "numba"

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _plan_size(layout, n_rows):
    offs = np.empty((layout.shape[0] + 1, 3), dtype=np.int64)
    return int(_nb.plan(layout, int(n_rows), offs))


def _layout(layout):
    return np.ascontiguousarray(layout, dtype=np.int64)


def _params(act_params):
    return np.ascontiguousarray(act_params, dtype=np.float64)


def _check_out(arr, what, dtype, ndim):
    """Arrays the kernels write into cannot be converted: a copy would lose the writes."""
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim:
        raise ValueError(
            f"{what} must be a {ndim}-d {dtype} ndarray, got "
            f"{getattr(arr, 'dtype', type(arr).__name__)} with "
            f"{getattr(arr, 'ndim', '?')} dimension(s)."
        )
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"{what} must be C-contiguous and writeable.")


def _check_work(work, layout, n_rows, dtype):
    _check_out(work, "work", dtype, 1)
    need = _plan_size(layout, n_rows)
    if work.shape[0] < need:
        raise ValueError(
            f"work has {work.shape[0]} elements; workspace_size(layout, {n_rows}) = {need}."
        )


def _dtype_of(theta):
    if not isinstance(theta, np.ndarray) or theta.dtype not in _FLOATS:
        raise ValueError(
            f"theta must be a float32 or float64 ndarray, got {getattr(theta, 'dtype', theta)}."
        )
    return theta.dtype


def _dense(X, dtype):
    if sp.issparse(X):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=dtype)


def _weights(sample_weight, dtype):
    if sample_weight is None:
        return np.empty(0, dtype=dtype), False
    return np.ascontiguousarray(sample_weight, dtype=dtype), True


def workspace_size(layout, n_rows):
    """Elements of ``work`` needed to process up to ``n_rows`` rows at a time.

    Parameters
    ----------
    layout : ndarray of shape (n_layers - 1, 8), int64
    n_rows : int

    Returns
    -------
    int
        The same figure serves ``train_epoch`` (``n_rows = batch_size``), ``loss_grad``
        (``n_samples``) and ``forward`` (``chunk_rows``).
    """
    return _plan_size(_layout(layout), max(int(n_rows), 1))


def train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sample_weight, order,
                batch_size, hyper, counters, work):
    """One epoch of mini-batch training; see ``docs/kernel_contract.md``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,)
        Parameters, updated in place.
    grad : ndarray of shape (n_params,)
        Scratch: on return it holds the last mini-batch's unscaled data gradient (the L2 term
        and the division by the sum of weights are fused into the optimizer pass).
    opt_state : ndarray of shape (2, n_params)
        SGD velocity (row 0) or Adam moments (rows 0 and 1), updated in place.
    layout, act_params : ndarray
        The network (``Network.layout``, ``Network.act_params``).
    X : ndarray of shape (n_samples, n_features)
        Dense rows (a sparse matrix is densified whole; the estimator densifies beforehand).
    Y : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,) or None
    order : ndarray of shape (n_samples,), int64
        The order in which samples are visited.
    batch_size : int
    hyper : ndarray of shape (6,), float64
    counters : ndarray of shape (6,), int64
        Read and updated (Adam step, mini-batch counter).
    work : ndarray of shape (workspace_size(layout, batch_size),)

    Returns
    -------
    loss_sum : float
        Sum over mini-batches of the batch loss times the batch's number of rows.
    """
    dtype = _dtype_of(theta)
    layout = _layout(layout)
    _check_out(theta, "theta", dtype, 1)
    _check_out(grad, "grad", dtype, 1)
    _check_out(opt_state, "opt_state", dtype, 2)
    _check_out(counters, "counters", np.dtype(np.int64), 1)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    _check_work(work, layout, batch_size, dtype)
    sw, has_sw = _weights(sample_weight, dtype)
    order = np.array(order, dtype=np.int64, copy=None, order="C")
    if not order.flags.writeable:
        order = order.copy()
    return float(
        _nb.train_epoch_kernel(
            theta, grad, opt_state, layout, _params(act_params), _dense(X, dtype),
            np.ascontiguousarray(Y, dtype=dtype), sw, has_sw, order, batch_size,
            np.ascontiguousarray(hyper, dtype=np.float64), counters, work,
        )
    )


def loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, alpha, counters, work):
    """Full-batch loss at ``theta`` (L2 term included); writes the gradient into ``grad``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), read
    grad : ndarray of shape (n_params,), written
    layout, act_params, X, Y, sample_weight : as in :func:`train_epoch`
    alpha : float
    counters : ndarray of shape (6,), int64, read (loss code; RReLU seed and step)
    work : ndarray of shape (workspace_size(layout, n_samples),)

    Returns
    -------
    loss : float
    """
    dtype = _dtype_of(theta)
    layout = _layout(layout)
    _check_out(grad, "grad", dtype, 1)
    X = _dense(X, dtype)
    _check_work(work, layout, X.shape[0], dtype)
    sw, has_sw = _weights(sample_weight, dtype)
    counters = np.array(counters, dtype=np.int64, copy=None, order="C")
    if not counters.flags.writeable:
        counters = counters.copy()
    if not theta.flags.c_contiguous:
        raise ValueError("theta must be C-contiguous.")
    return float(
        _nb.loss_grad_kernel(
            theta, grad, layout, _params(act_params), X, np.ascontiguousarray(Y, dtype=dtype),
            sw, has_sw, float(alpha), counters, work,
        )
    )


def forward(theta, layout, act_params, X, out, apply_output, chunk_rows, work):
    """Predict: ``out`` receives the output activations (or the logits if not
    ``apply_output``), processing ``X`` in chunks of ``chunk_rows`` rows.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), read
    layout, act_params : ndarray
    X : ndarray or sparse matrix of shape (n_samples, n_features)
        Sparse input is densified one chunk at a time.
    out : ndarray of shape (n_samples, n_outputs), written
    apply_output : bool
    chunk_rows : int
    work : ndarray of shape (workspace_size(layout, chunk_rows),)
    """
    dtype = _dtype_of(theta)
    layout = _layout(layout)
    act_params = _params(act_params)
    _check_out(out, "out", dtype, 2)
    chunk_rows = max(int(chunk_rows), 1)
    _check_work(work, layout, chunk_rows, dtype)
    if not theta.flags.c_contiguous or not theta.flags.writeable:
        # the kernel types theta as writable (it never writes it): hand it a copy
        theta = np.array(theta, order="C")
    apply_output = bool(apply_output)
    if sp.issparse(X):
        X = X.tocsr()
        for start in range(0, X.shape[0], chunk_rows):
            stop = min(start + chunk_rows, X.shape[0])
            chunk = np.ascontiguousarray(X[start:stop].toarray(), dtype=dtype)
            _nb.forward_kernel(theta, layout, act_params, chunk, out[start:stop],
                               apply_output, chunk_rows, work)
        return
    _nb.forward_kernel(theta, layout, act_params, np.ascontiguousarray(X, dtype=dtype), out,
                       apply_output, chunk_rows, work)
