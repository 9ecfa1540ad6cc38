"""The solvers' outer loops: epochs, shuffling, early stopping (stochastic) and L-BFGS.

Python keeps the outer loop; the backend runs every mini-batch of an epoch in one call. All
random numbers are drawn here from the estimator's ``RandomState`` in scikit-learn's order:
initial weights (in ``_estimators``), the early-stopping split, each epoch's shuffle.
"""

import contextlib
import os
import threading
import time
import warnings

import numpy as np
import scipy
import scipy.optimize
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ._blas_threads import ONE_BLAS_THREAD
from ._errors import NonFiniteOutputError
from ._optim import (ADAM_T, LOSS, NESTEROV, SEED, SERIAL, SOLVER, SOLVER_CODES, STEP,
                     OptimizerState)
from .losses import BY_OUT_ACTIVATION

# Errors from arithmetic on diverging weights are detected (non-finite loss or weights) and
# reported as one ValueError, so NumPy's floating-point warnings are silenced in the loops.
_QUIET = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")


class _RunningFits:
    """How many fits are training in this process's threads, and whether fits overlapped
    recently.

    While fits overlap (``GridSearchCV(n_jobs=2)`` on joblib's threading backend, or the
    user's own threads), each fit asks its kernels to keep every matrix product on its own
    thread (``counters[SERIAL]``): each fit calling a multithreaded BLAS would put
    n_fits x n_cores BLAS threads on the cores, and OpenBLAS's idle pool threads spin for a
    while after every multithreaded call, taking a core from the other fits. The mode is
    kept for :attr:`HOLD` seconds after the last overlap, so that the gaps between a search's
    fits (scoring, cloning) do not switch a fit back to threaded products and wake the
    pool. This changes no global BLAS setting, so there is nothing to restore (a
    process-wide limit set by one fit and restored by another is what it avoids).
    """

    HOLD = 1.0

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self._last_overlap = -np.inf

    def __enter__(self):
        with self._lock:
            self.count += 1
            if self.count > 1:
                self._last_overlap = time.monotonic()
        return self

    def __exit__(self, *exc):
        with self._lock:
            if self.count > 1:
                self._last_overlap = time.monotonic()
            self.count -= 1
        return False

    def serial(self):
        """Whether a fit should keep its products on its own thread now (read per epoch;
        a stale read only delays the switch by one epoch). Always in a process forked
        from the one that imported fastmlp (multiprocessing's 'fork'): the parent's OpenMP
        and Numba thread pools do not survive fork(), and using them there would hang."""
        if os.getpid() != _IMPORT_PID:
            return True
        now = time.monotonic()
        if self.count > 1:
            self._last_overlap = now
            return True
        return now - self._last_overlap < self.HOLD


RUNNING_FITS = _RunningFits()
_IMPORT_PID = os.getpid()

SPLIT_ONE_BLAS = 2
"""``backend.split_kind``'s answer for a network whose half batches run in two threads only
while BLAS runs one thread (``fastmlp._blas_threads``)."""

SPLIT_MIN_ROWS = 64
"""The kernels' ``SPLIT_MIN_ROWS``: batches of at least this many rows that
``backend.split_kind`` leaves whole are left whole for the size of their products."""


def _serial_mode(blas_one):
    """``counters[SERIAL]`` for the next epoch: 1 while fits overlap, else 2 when this fit
    holds BLAS at one thread (``blas_one``), else 0."""
    if RUNNING_FITS.serial():
        return 1
    return 2 if blas_one else 0


SERIAL_MNK = 262144
"""Multiply-adds of a product that scipy's OpenBLAS keeps on the calling thread (at most
``ceil(m n k / 262144) - 1`` threads: GEMM_MULTITHREAD_THRESHOLD 4 times 65536); the kernels
split larger products into blocks of this size when ``counters[SERIAL]`` is set."""

SERIAL_MIN_ROWS = 16


def serial_chunk_rows(layout):
    """Rows per ``forward`` chunk that keep each of its products on the calling thread
    (what the kernels' serial mode does inside a training batch, for prediction), or None
    when such chunks would have fewer than ``SERIAL_MIN_ROWS`` rows (a large network)."""
    widest = int((layout[:, 0] * layout[:, 2]).max())  # FAN_IN * N_PRE
    rows = SERIAL_MNK // max(widest, 1)
    return rows if rows >= SERIAL_MIN_ROWS else None


def _counters(est, solver):
    net = est._network
    return np.array(
        [
            SOLVER_CODES.get(solver, 0),
            int(bool(est.nesterovs_momentum)),
            0,
            est._step,
            est._rrelu_seed,
            BY_OUT_ACTIVATION[net.out_activation].code,
            0,  # SERIAL, set per epoch by _serial_mode
        ],
        dtype=np.int64,
    )


def _diverged(est, epoch, restored):
    return ValueError(
        f"Training diverged at epoch {epoch}: the loss or the weights became non-finite "
        f"(loss={est.loss_!r}). The model keeps the weights {restored}. Lower "
        f"learning_rate_init (now {est.learning_rate_init}), scale the input (for example "
        "with sklearn.preprocessing.StandardScaler) or increase alpha."
    )


def _restore_finite(est, X_train, candidates):
    """Put back the first candidate weights whose predictions on (the start of) the training
    data are finite; finite weights can still be too large to predict with."""
    theta = est._theta
    sample = X_train[:1000]
    for label, weights in candidates:
        np.copyto(theta, weights)
        with np.errstate(**_QUIET):
            try:
                if np.isfinite(est._forward_kernels(sample, True)).all():
                    return label
            except NonFiniteOutputError:
                pass  # NaN outputs: try the next candidate
    return label


def fit_stochastic(est, backend, X, Y, sample_weight, incremental):
    """Run SGD or Adam epochs on ``est`` (scikit-learn's ``_fit_stochastic``)."""
    net = est._network
    theta = est._theta
    dtype = theta.dtype
    if not incremental or not hasattr(est, "_optimizer"):
        est._optimizer = OptimizerState(
            est.solver, net.n_params, dtype, est.learning_rate_init, est.learning_rate,
            est.power_t,
        )
    else:
        # a learning rate changed with set_params between partial_fit calls takes effect
        est._optimizer.set_learning_rate_init(est.learning_rate_init)
    optimizer = est._optimizer

    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    early_stopping = est.early_stopping
    if early_stopping:
        # don't stratify in multilabel classification
        should_stratify = is_classifier(est) and est.n_outputs_ == 1
        stratify = Y if should_stratify else None
        arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
        try:
            split = train_test_split(*arrays, random_state=est._random_state,
                                     test_size=est.validation_fraction, stratify=stratify)
        except ValueError as exc:
            raise ValueError(
                f"early_stopping=True sets aside validation_fraction={est.validation_fraction} "
                f"of the {X.shape[0]} training samples for validation"
                + (", stratified by class" if stratify is not None else "")
                + f", and that split is not possible: {exc} Increase validation_fraction, "
                "give more samples, or set early_stopping=False."
            ) from exc
        if sample_weight is None:
            X_train, X_val, Y_train, y_val = split
            sw_train = sw_val = None
        else:
            X_train, X_val, Y_train, y_val, sw_train, sw_val = split
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if is_classifier(est):
            y_val = est._label_binarizer.inverse_transform(y_val)
    else:
        X_train, Y_train, sw_train = X, Y, sample_weight
        X_val = y_val = sw_val = None

    X_train = _c_contiguous(X_train)
    Y_train = np.ascontiguousarray(Y_train, dtype=dtype)
    if sw_train is not None:
        sw_train = np.ascontiguousarray(sw_train, dtype=dtype)
    n_samples = X_train.shape[0]
    sample_idx = np.arange(n_samples, dtype=np.int64)
    if est.batch_size == "auto":
        batch_size = min(200, n_samples)
    else:
        if est.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than "
                "sample size. It is going to be clipped"
            )
        batch_size = int(np.clip(est.batch_size, 1, n_samples))

    grad = np.empty(net.n_params, dtype=dtype)
    work = np.empty(backend.workspace_size(net.layout, batch_size), dtype=dtype)
    counters = _counters(est, est.solver)
    last_good = theta.copy()
    at_start = theta.copy()
    split_kind = getattr(backend, "split_kind", None)
    kind = None if split_kind is None else split_kind(
        net.layout, net.act_params, batch_size, dtype)
    one_blas = kind == SPLIT_ONE_BLAS
    # a network whose batches are left whole for the size of their products has products
    # too large for one BLAS thread to keep by itself (gemm_serial's blocks): while such
    # fits overlap, each calling a multithreaded BLAS would contend, so it holds BLAS at one
    # thread from the first epoch that overlaps to its end
    hold_on_overlap = kind == 0 and batch_size >= SPLIT_MIN_ROWS
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(RUNNING_FITS)
            blas_one = stack.enter_context(ONE_BLAS_THREAD.hold(one_blas))
            est.n_iter_ = 0
            for _ in range(est.max_iter):
                if est.shuffle:
                    # sklearn.utils.shuffle(sample_idx, random_state=rs) is sample_idx[p] for
                    # p a shuffled arange; shuffling sample_idx in place makes the same swaps
                    # with the same draws (scikit-learn's order), without copies/validation
                    est._random_state.shuffle(sample_idx)
                np.copyto(last_good, theta)
                counters[ADAM_T] = optimizer.adam_t
                counters[SERIAL] = _serial_mode(blas_one)
                if hold_on_overlap and counters[SERIAL] == 1:
                    stack.enter_context(ONE_BLAS_THREAD.hold(True))
                    hold_on_overlap = False
                hyper = optimizer.hyper(est)
                with np.errstate(**_QUIET):
                    loss_sum = backend.train_epoch(
                        theta, grad, optimizer.moments, net.layout, net.act_params, X_train,
                        Y_train, sw_train, sample_idx, batch_size, hyper, counters, work,
                    )
                optimizer.adam_t = int(counters[ADAM_T])
                est._step = int(counters[STEP])
                est.n_iter_ += 1
                est.loss_ = loss_sum / X_train.shape[0]
                if not (np.isfinite(est.loss_) and np.isfinite(theta).all()):
                    restored = _restore_finite(est, X_train, [
                        (f"of the start of epoch {est.n_iter_}", last_good),
                        ("it had before this call to fit", at_start),
                    ])
                    raise _diverged(est, est.n_iter_, restored)
                est.t_ += n_samples
                est.loss_curve_.append(est.loss_)
                if est.verbose:
                    print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

                # update no_improvement_count based on training loss or validation score
                _update_no_improvement_count(est, early_stopping, X_val, y_val, sw_val)
                # for learning rate that needs to be updated at iteration end
                optimizer.iteration_ends(est.t_)

                if est._no_improvement_count > est.n_iter_no_change:
                    if early_stopping:
                        msg = (
                            "Validation score did not improve more than "
                            "tol=%f for %d consecutive epochs."
                            % (est.tol, est.n_iter_no_change)
                        )
                    else:
                        msg = (
                            "Training loss did not improve more than tol=%f"
                            " for %d consecutive epochs." % (est.tol, est.n_iter_no_change)
                        )
                    if optimizer.trigger_stopping(msg, est.verbose):
                        break
                    est._no_improvement_count = 0
                if incremental:
                    break
                if est.n_iter_ == est.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) "
                        "reached and the optimization hasn't converged yet." % est.max_iter,
                        ConvergenceWarning,
                    )
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")
    if early_stopping:
        # restore best weights
        np.copyto(theta, est._best_theta)


def _update_no_improvement_count(est, early_stopping, X_val, y_val, sw_val):
    if early_stopping:
        # compute validation score (can be NaN), use that for stopping
        val_score = est._score(X_val, y_val, sample_weight=sw_val)
        est.validation_scores_.append(val_score)
        if est.verbose:
            print("Validation score: %f" % est.validation_scores_[-1])
        last_valid_score = est.validation_scores_[-1]
        if last_valid_score < (est.best_validation_score_ + est.tol):
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if last_valid_score > est.best_validation_score_:
            est.best_validation_score_ = last_valid_score
            np.copyto(est._best_theta, est._theta)
    else:
        if est.loss_curve_[-1] > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if est.loss_curve_[-1] < est.best_loss_:
            est.best_loss_ = est.loss_curve_[-1]


def fit_lbfgs(est, backend, X, Y, sample_weight):
    """Minimise the full-batch loss with scipy's L-BFGS-B over the flat vector ``theta``."""
    net = est._network
    theta = est._theta
    dtype = theta.dtype
    X = _c_contiguous(X)
    Y = np.ascontiguousarray(Y, dtype=dtype)
    if sample_weight is not None:
        sample_weight = np.ascontiguousarray(sample_weight, dtype=dtype)
    grad = np.empty(net.n_params, dtype=dtype)
    work = np.empty(backend.workspace_size(net.layout, X.shape[0]), dtype=dtype)
    counters = _counters(est, "sgd")
    alpha = float(est.alpha)

    best = {"loss": np.inf, "theta": theta.copy(), "n_iter": 0}

    def loss_and_grad(x):
        theta[...] = x
        counters[SERIAL] = RUNNING_FITS.serial()
        with np.errstate(**_QUIET):
            loss = backend.loss_grad(theta, grad, net.layout, net.act_params, X, Y,
                                     sample_weight, alpha, counters, work)
        if loss < best["loss"]:  # what an interrupted fit keeps
            best["loss"] = loss
            np.copyto(best["theta"], theta)
        # scipy keeps the returned gradient: hand it a copy, not our buffer
        return loss, grad.astype(np.float64)

    def count_iteration(intermediate_result):
        best["n_iter"] += 1

    iprint = 1 if (est.verbose is True or est.verbose >= 1) else -1
    options = {"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol}
    if tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 15):
        options["iprint"] = iprint
    try:
        with RUNNING_FITS:
            opt_res = scipy.optimize.minimize(
                loss_and_grad, theta.astype(np.float64), method="L-BFGS-B", jac=True,
                options=options, callback=count_iteration,
            )
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")
        np.copyto(theta, best["theta"])
        est.loss_ = float(best["loss"]) if np.isfinite(best["loss"]) else np.nan
        est.n_iter_ = best["n_iter"]
        return
    est.n_iter_ = _check_lbfgs_result(opt_res, est.max_iter)
    est.loss_ = opt_res.fun
    theta[...] = opt_res.x


def _check_lbfgs_result(result, max_iter):
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        msg = (
            f"lbfgs failed to converge after {n_iter} iteration(s) "
            f"(status={result.status}):\n{result.message}\n"
        )
        if n_iter == max_iter:
            msg += (
                "\nIncrease the number of iterations to improve the "
                f"convergence (max_iter={max_iter})."
            )
        msg += (
            "\nYou might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html"
        )
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return n_iter


def _c_contiguous(X):
    import scipy.sparse as sp

    if sp.issparse(X):
        return X.tocsr()
    return np.ascontiguousarray(X)
