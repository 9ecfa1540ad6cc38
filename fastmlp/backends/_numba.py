"""The Numba backend: every mini-batch of an epoch, and every prediction, in compiled code.

A thin wrapper around ``fastmlp.kernels.numba_kernels`` (see its docstring for the compilation
policy): it replaces ``sample_weight=None`` by a flag, densifies sparse input (chunk by chunk
for prediction) and calls the kernel directly; only when the kernel rejects the argument types
does it say which array is wrong, or convert the arrays the kernels only read. The kernels
themselves check shapes against the layout. Entry points and arrays are described in
``docs/kernel_contract.md``.

Importing this module imports Numba and loads (or, the first time, compiles) the small
kernels; the epoch, loss-gradient and forward kernels are loaded per dtype on first use
(``numba_kernels.PerDtype``). If Numba is missing the ImportError propagates, and
``fastmlp.backends.get_backend`` turns it into a clear error.
"""

import functools

import numba
import numpy as np
import scipy.sparse as sp

from ..kernels import numba_kernels as _nb

name = "numba"

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_written(arr, what, dtype, ndim):
    """Arrays the kernels write into cannot be converted: a copy would lose the writes."""
    if (not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim
            or not arr.flags.c_contiguous or not arr.flags.writeable):
        raise ValueError(
            f"{what} must be a writeable C-contiguous {ndim}-d {dtype} ndarray (the dtype of "
            f"theta), got {type(arr).__name__} "
            f"{getattr(arr, 'dtype', '')} {getattr(arr, 'shape', '')}."
        )


def _dtype_of(theta):
    if not isinstance(theta, np.ndarray) or theta.dtype not in _FLOATS:
        raise ValueError(
            f"theta must be a float32 or float64 ndarray, got {getattr(theta, 'dtype', theta)}."
        )
    return theta.dtype


def _read(arr, dtype):
    """An array the kernels only read, in their dtype and C order (a no-op when it is)."""
    if sp.issparse(arr):
        arr = arr.toarray()
    return np.ascontiguousarray(arr, dtype=dtype)


def _weights(sample_weight, dtype):
    if sample_weight is None:
        return np.empty(0, dtype=dtype), False
    return _read(sample_weight, dtype), True


def _call(kernel, args, written, read):
    """Call ``kernel``; on a type mismatch, check the written arrays and convert the read ones.

    The fast path costs nothing: the estimator passes arrays of the right types. ``written``
    maps argument positions to (name, ndim), ``read`` to (dtype or None for theta's, ndim).
    Numba's own TypeError lists types only, so the slow path says which argument is wrong.
    """
    try:
        return kernel(*args)
    except TypeError:
        pass
    args = list(args)
    dtype = _dtype_of(args[0])
    for pos, (what, ndim) in written.items():
        _check_written(args[pos], what, dtype, ndim)
    for pos, (dt, _) in read.items():
        args[pos] = _read(args[pos], dtype if dt is None else dt)
    if not args[0].flags.writeable or not args[0].flags.c_contiguous:
        args[0] = np.array(args[0], order="C")  # forward types theta writable; never written
    return kernel(*args)


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
    layout = np.ascontiguousarray(layout, dtype=np.int64)
    return _workspace_size(layout.tobytes(), layout.shape[0], max(int(n_rows), 1))


@functools.lru_cache(maxsize=256)
def _workspace_size(layout_bytes, n_layers, n_rows):
    # cached: the estimator asks for every prediction, and a one-row predict costs a few us
    layout = np.frombuffer(layout_bytes, dtype=np.int64).reshape(n_layers, -1)
    return int(_nb.work_size(layout, n_rows))


_LAYOUT = (np.int64, 2)
_PARAMS = (np.float64, 2)
# positions of the arguments the kernels write, and of those they only read (dtype, ndim; None
# for theta's dtype), for the slow path of _call
_TRAIN_WRITTEN = {0: ("theta", 1), 1: ("grad", 1), 2: ("opt_state", 2), 12: ("counters", 1),
                  13: ("work", 1)}
_TRAIN_READ = {3: _LAYOUT, 4: _PARAMS, 5: (None, 2), 6: (None, 2), 9: (np.int64, 1),
               11: (np.float64, 1)}
_LOSS_WRITTEN = {0: ("theta", 1), 1: ("grad", 1), 10: ("work", 1)}
_LOSS_READ = {2: _LAYOUT, 3: _PARAMS, 4: (None, 2), 5: (None, 2)}
_FORWARD_WRITTEN = {4: ("out", 2), 7: ("work", 1)}
_FORWARD_READ = {1: _LAYOUT, 2: _PARAMS, 3: (None, 2)}


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
    order : ndarray of shape (n_batch_rows,), int64
        The rows to visit, in order.
    batch_size : int
    hyper : ndarray of shape (6,), float64
    counters : ndarray of shape (7,), int64
        Read and updated (Adam step, mini-batch counter).
    work : ndarray of shape (workspace_size(layout, batch_size),)

    Returns
    -------
    loss_sum : float
        Sum over mini-batches of the batch loss times the batch's number of rows.

    Raises
    ------
    ValueError
        If an array does not match the layout or the others (checked in the kernel).
    """
    sw, has_sw = _weights(sample_weight, theta.dtype)
    if sp.issparse(X):
        X = X.toarray()
    if isinstance(order, np.ndarray) and not order.flags.writeable:
        order = order.copy()  # the kernel types it writable (it only reads it)
    args = (theta, grad, opt_state, layout, act_params, X, Y, sw, has_sw, order,
            int(batch_size), hyper, counters, work)
    threads = numba.get_num_threads()
    kind = _split_kind(layout, int(batch_size), theta.dtype == np.float32)
    mode = counters[_nb.SERIAL]
    if threads > 1 and ((kind == _nb.SPLIT_SERIAL and mode != 1)
                        or (kind == _nb.SPLIT_ONE_BLAS and mode == 2)):
        # the fit runs alone (and, for halves whose products BLAS would thread, BLAS runs
        # one thread): the halves of each batch in two threads (the same numbers); the
        # thread count is thread-local in Numba, so this touches no other thread
        numba.set_num_threads(2)
        try:
            _warm_blas(2)
            return float(_call(_nb.train_epoch_parallel_kernel, args, _TRAIN_WRITTEN,
                               _TRAIN_READ))
        finally:
            numba.set_num_threads(threads)
    _warm_blas(1)
    return float(_call(_nb.train_epoch_kernel, args, _TRAIN_WRITTEN, _TRAIN_READ))


_warm_threads = [0]   # threads whose OpenBLAS buffers warm_blas has touched (see below)


def _warm_blas(threads):
    """The first time fits call BLAS from ``threads`` (1 or 2) threads at once, run one
    float32 product in each (``numba_kernels.warm_blas_kernel``): OpenBLAS's kernels are slow
    on small products until a larger one has touched the buffer each caller packs into
    (measured on a Zen 1 AMD VM: float32 W3 2.26-2.29 s before, 1.61-1.64 s after). A few ms,
    once per process; nothing else changes."""
    if _warm_threads[0] >= threads:
        return
    bufs = np.zeros((threads, 3, _nb.WARM_N, _nb.WARM_N), dtype=np.float32)
    _nb.warm_blas_kernel(threads > 1)(bufs)
    _warm_threads[0] = max(_warm_threads[0], threads)


def _split_kind(layout, batch_size, f32):
    try:
        return _nb.split_kind(layout, batch_size, bool(f32))
    except TypeError:  # a layout of another type: the kernel's slow path reports it
        return _nb.SPLIT_NONE


def split_kind(layout, act_params, batch_size, dtype=np.float64):
    """How ``train_epoch`` computes batches of ``batch_size`` rows of a fit in ``dtype``: 0
    whole, 1 two halves (in two threads when the fit runs alone), 2 two halves in two threads
    only while BLAS runs one thread (``counters[SERIAL] == 2``). See
    ``docs/kernel_contract.md``."""
    return int(_nb.split_kind(np.ascontiguousarray(layout, dtype=np.int64), int(batch_size),
                              np.dtype(dtype) == np.float32))


def loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, alpha, counters, work):
    """Full-batch loss at ``theta`` (L2 term included); writes the gradient into ``grad``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), read
    grad : ndarray of shape (n_params,), written
    layout, act_params, X, Y, sample_weight : as in :func:`train_epoch`
    alpha : float
    counters : ndarray of shape (7,), int64, read (loss code; RReLU seed and step)
    work : ndarray of shape (workspace_size(layout, n_samples),)

    Returns
    -------
    loss : float
    """
    sw, has_sw = _weights(sample_weight, theta.dtype)
    if sp.issparse(X):
        X = X.toarray()
    counters = np.array(counters, dtype=np.int64)  # read only; the kernel types it writable
    args = (theta, grad, layout, act_params, X, Y, sw, has_sw, float(alpha), counters, work)
    return float(_call(_nb.loss_grad_kernel, args, _LOSS_WRITTEN, _LOSS_READ))


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

    Returns
    -------
    status : int
        0: ``X`` and ``out`` are finite; 1: ``X`` holds NaN or inf (``out`` undefined);
        2: ``X`` is finite but some output is not.
    """
    if type(X) is np.ndarray:  # the estimator's case first: straight to the kernel
        try:
            return _nb.forward_kernel(theta, layout, act_params, X, out, apply_output,
                                      chunk_rows, work)
        except TypeError:
            pass  # some argument's type differs: _call says which, or converts it
    written, read = _FORWARD_WRITTEN, _FORWARD_READ
    apply_output = bool(apply_output)
    chunk_rows = int(chunk_rows)
    if isinstance(X, np.ndarray) or not sp.issparse(X):
        return _call(_nb.forward_kernel,
                     (theta, layout, act_params, X, out, apply_output, chunk_rows, work),
                     written, read)
    X = X.tocsr()
    _check_written(out, "out", _dtype_of(theta), 2)
    status = 0
    for start in range(0, X.shape[0], chunk_rows):
        stop = min(start + chunk_rows, X.shape[0])
        chunk = X[start:stop].toarray()
        status = max(status, _call(
            _nb.forward_kernel,
            (theta, layout, act_params, chunk, out[start:stop], apply_output, chunk_rows,
             work),
            written, read))
        if status == 1:
            break
    return status
