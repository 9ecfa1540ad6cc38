"""The NumPy backend: the reference every compiled kernel is tested against.

Vectorised per mini-batch, with scikit-learn's order of floating-point operations (so that,
with scikit-learn's initialisation, it reproduces scikit-learn's fits to rounding), and with
every buffer carved out of the preallocated ``work`` vector: the only allocations per batch are
those NumPy makes inside ``np.average`` for the (batch x outputs)-sized loss, and for the
less common activations. Entry points and arrays are described in ``docs/kernel_contract.md``.
"""

import math

import numpy as np
import scipy.sparse as sp

from .._network import ACT, COEF_OFF, FAN_IN, FAN_OUT, INTER_OFF, K, N_PRE, SLOPE_OFF
from ..activations import BY_CODE, _maxout, _maxout_d, _prelu, _prelu_d, _rrelu, _rrelu_d
from ..activations import rrelu_uniform
from ..losses import LOSSES

# hyper / counters indices (docs/kernel_contract.md)
LR, MOMENTUM, BETA_1, BETA_2, EPSILON, ALPHA = range(6)
SOLVER, NESTEROV, ADAM_T, STEP, SEED, LOSS, SERIAL = range(7)  # SERIAL: unused here
SGD, ADAM = 0, 1

_LOSS_BY_CODE = {l.code: l for l in LOSSES.values()}

name = "numpy"


def _n_params(layout):
    n = 0
    for row in layout:
        n += row[FAN_IN] * row[N_PRE] + row[N_PRE]
        if row[SLOPE_OFF] >= 0:
            n += row[FAN_OUT]
    return int(n)


def _row_width(layout):
    """Elements per row of batch: X and Y, sample weight, and per layer Z, A, D, DA, R."""
    width = int(layout[0, FAN_IN] + layout[-1, FAN_OUT] + 1)
    for row in layout:
        width += 2 * int(row[N_PRE]) + 3 * int(row[FAN_OUT])
    return width


def workspace_size(layout, n_rows):
    """Elements of ``work`` needed for batches of up to ``n_rows`` rows."""
    max_coef = int(max(row[FAN_IN] * row[N_PRE] for row in layout))
    return int(n_rows) * _row_width(layout) + max_coef + 2 * _n_params(layout)


class _Views:
    """Named views into ``theta``, ``grad`` and ``work`` (built once per call)."""

    def __init__(self, theta, grad, layout, act_params, work, n_rows):
        self.layout = layout
        self.act_params = act_params
        self.n_layers = len(layout)
        self.acts = [BY_CODE[int(c)] for c in layout[:, ACT]]
        self.W, self.b, self.s = [], [], []
        self.gW, self.gb, self.gs = [], [], []
        for l, row in enumerate(layout):
            fi, npre, fo = int(row[FAN_IN]), int(row[N_PRE]), int(row[FAN_OUT])
            c, i, so = int(row[COEF_OFF]), int(row[INTER_OFF]), int(row[SLOPE_OFF])
            self.W.append(theta[c : c + fi * npre].reshape(fi, npre))
            self.b.append(theta[i : i + npre])
            self.s.append(theta[so : so + fo] if so >= 0 else None)
            if grad is not None:
                self.gW.append(grad[c : c + fi * npre].reshape(fi, npre))
                self.gb.append(grad[i : i + npre])
                self.gs.append(grad[so : so + fo] if so >= 0 else None)

        pos = 0

        def take(shape):
            nonlocal pos
            size = math.prod(shape)  # Python ints: np.prod, a generic reduction, costs microseconds
            view = work[pos : pos + size].reshape(shape)
            pos += size
            return view

        R = int(n_rows)
        self.xb = take((R, int(layout[0, FAN_IN])))
        self.yb = take((R, int(layout[-1, FAN_OUT])))
        self.swb = take((R,))
        self.Z, self.A, self.D, self.DA, self.R = [], [], [], [], []
        for l, row in enumerate(layout):
            npre, fo = int(row[N_PRE]), int(row[FAN_OUT])
            z = take((R, npre))
            a = take((R, fo))
            d = take((R, npre))
            da = take((R, fo))
            r = take((R, fo))
            act = self.acts[l]
            in_place = l == self.n_layers - 1 or (act.kind == "elementwise" and act.from_output)
            self.Z.append(z)
            self.A.append(z if in_place else a)
            self.D.append(d)
            # the delta w.r.t. the activation output has its own buffer only when its width
            # differs from the pre-activation's (maxout)
            self.DA.append(da if act.kind == "maxout" else d)
            self.R.append(r)
        max_coef = int(max(row[FAN_IN] * row[N_PRE] for row in layout))
        self.coef_tmp = work[pos : pos + max_coef]
        pos += max_coef
        n_params = _n_params(layout)
        self.p_tmp1 = work[pos : pos + n_params]
        self.p_tmp2 = work[pos + n_params : pos + 2 * n_params]


def _dot(a, b, out):
    if sp.issparse(a):
        out[...] = a @ b
    else:
        np.dot(a, b, out=out)
    return out


def _forward(v, xb, rows, training, counters, apply_output=True):
    """Forward pass over ``rows`` rows; returns the output layer (a view): its activations,
    or its pre-activations if not ``apply_output``."""
    a_prev = xb
    last = v.n_layers - 1
    for l in range(v.n_layers):
        Z = v.Z[l][:rows]
        _dot(a_prev, v.W[l], Z)
        Z += v.b[l]
        act = v.acts[l]
        A = v.A[l][:rows]
        p = v.act_params[l]
        if l == last:
            if apply_output:
                act.forward(Z, A, p)
        elif act.kind == "elementwise":
            act.forward(Z, A, p)
        elif act.kind == "prelu":
            _prelu(Z, A, v.s[l])
        elif act.kind == "rrelu":
            if training:
                R = v.R[l][:rows]
                u = rrelu_uniform(counters[SEED], counters[STEP], l, rows, Z.shape[1])
                R[...] = p[0] + (p[1] - p[0]) * u
                _rrelu(Z, A, R)
            else:
                _rrelu(Z, A, (p[0] + p[1]) / 2)
        elif act.kind == "maxout":
            _maxout(Z, A, int(v.layout[l, K]))
        a_prev = A
    return v.A[last][:rows]


def _loss_and_grad(v, xb, yb, swb, rows, alpha, counters):
    """Forward, loss and backward for one batch; fills the gradient views."""
    P = _forward(v, xb, rows, True, counters)
    loss_code = int(counters[LOSS])
    loss = _LOSS_BY_CODE[loss_code].value(yb, P, swb)
    values = 0
    for W in v.W:
        s = W.ravel()
        values += np.dot(s, s)
    sw_sum = rows if swb is None else swb.sum()
    loss += (0.5 * alpha) * values / sw_sum

    last = v.n_layers - 1
    # delta = p - y holds for the canonical pairings only: identity + squared error,
    # exp + Poisson deviance, logistic + binary cross-entropy, softmax + cross-entropy.
    D = v.D[last][:rows]
    np.subtract(P, yb, out=D)
    if swb is not None:
        D *= swb.reshape(-1, 1)
    for l in range(last, -1, -1):
        D = v.D[l][:rows]
        a_prev = xb if l == 0 else v.A[l - 1][:rows]
        gW = v.gW[l]
        if sp.issparse(a_prev):
            gW[...] = a_prev.T @ D
        else:
            np.dot(a_prev.T, D, out=gW)
        tmp = v.coef_tmp[: gW.size].reshape(gW.shape)
        np.multiply(v.W[l], alpha, out=tmp)
        gW += tmp
        gW /= sw_sum
        np.sum(D, axis=0, out=v.gb[l])
        v.gb[l] /= sw_sum
        if l == 0:
            break
        prev = v.acts[l - 1]
        Zp, Ap = v.Z[l - 1][:rows], v.A[l - 1][:rows]
        DA = v.DA[l - 1][:rows]
        np.dot(D, v.W[l].T, out=DA)
        Dp = v.D[l - 1][:rows]
        if prev.kind == "elementwise":
            prev.derivative(Zp, Ap, Dp, v.act_params[l - 1])
        elif prev.kind == "prelu":
            np.sum(DA * np.minimum(Zp, 0), axis=0, out=v.gs[l - 1])
            v.gs[l - 1] /= sw_sum
            _prelu_d(Zp, Ap, Dp, v.s[l - 1])
        elif prev.kind == "rrelu":
            _rrelu_d(Zp, Ap, Dp, v.R[l - 1][:rows])
        elif prev.kind == "maxout":
            _maxout_d(Zp, Ap, DA, Dp, int(v.layout[l - 1, K]))
    return loss


def _optimizer_step(theta, grad, opt_state, hyper, counters, v):
    """One SGD or Adam step on the flat vectors, in scikit-learn's order of operations."""
    tmp1, tmp2 = v.p_tmp1, v.p_tmp2
    if counters[SOLVER] == SGD:
        momentum, lr = float(hyper[MOMENTUM]), float(hyper[LR])
        vel = opt_state[0]
        # updates = momentum * velocity - lr * grad; velocity = updates
        np.multiply(vel, momentum, out=tmp1)
        np.multiply(grad, lr, out=tmp2)
        np.subtract(tmp1, tmp2, out=vel)
        if counters[NESTEROV]:
            np.multiply(vel, momentum, out=tmp1)
            np.subtract(tmp1, tmp2, out=tmp1)
            theta += tmp1
        else:
            theta += vel
    else:
        b1, b2 = float(hyper[BETA_1]), float(hyper[BETA_2])
        eps, lr_init = float(hyper[EPSILON]), float(hyper[LR])
        counters[ADAM_T] += 1
        t = int(counters[ADAM_T])
        m, s = opt_state[0], opt_state[1]
        np.multiply(m, b1, out=m)
        np.multiply(grad, 1 - b1, out=tmp1)
        m += tmp1
        np.multiply(s, b2, out=s)
        np.square(grad, out=tmp1)
        tmp1 *= 1 - b2
        s += tmp1
        lr = lr_init * np.sqrt(1 - b2**t) / (1 - b1**t)
        np.multiply(m, -lr, out=tmp1)
        np.sqrt(s, out=tmp2)
        tmp2 += eps
        tmp1 /= tmp2
        theta += tmp1


def _gather(X, idx, out):
    if sp.issparse(X):
        return X[idx]
    return np.take(X, idx, axis=0, out=out)


def train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sample_weight, order,
                batch_size, hyper, counters, work):
    """One epoch of mini-batch training; see ``docs/kernel_contract.md``.

    Parameters
    ----------
    theta, grad : ndarray of shape (n_params,)
        Parameters (updated in place) and gradient buffer.
    opt_state : ndarray of shape (2, n_params)
        SGD velocity (row 0) or Adam moments (rows 0 and 1), updated in place.
    layout, act_params : ndarray
        The network (``Network.layout``, ``Network.act_params``).
    X : ndarray or CSR matrix of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,) or None
    order : ndarray of shape (n_samples,), int64
        The order in which samples are visited.
    batch_size : int
    hyper : ndarray of shape (6,), float64
    counters : ndarray of shape (7,), int64
        Read and updated (Adam step, mini-batch counter).
    work : ndarray of shape (workspace_size(layout, batch_size),)

    Returns
    -------
    loss_sum : float
        Sum over mini-batches of the batch loss times the batch's number of rows.
    """
    v = _Views(theta, grad, layout, act_params, work, batch_size)
    alpha = float(hyper[ALPHA])
    n = order.shape[0]
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        rows = idx.shape[0]
        xb = _gather(X, idx, v.xb[:rows])
        yb = np.take(Y, idx, axis=0, out=v.yb[:rows])
        swb = None if sample_weight is None else np.take(sample_weight, idx, out=v.swb[:rows])
        batch_loss = _loss_and_grad(v, xb, yb, swb, rows, alpha, counters)
        loss_sum += batch_loss * rows
        _optimizer_step(theta, grad, opt_state, hyper, counters, v)
        counters[STEP] += 1
    return float(loss_sum)


def loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, alpha, counters, work):
    """Full-batch loss at ``theta`` (L2 term included); writes the gradient into ``grad``.

    ``work`` holds ``workspace_size(layout, n_samples)`` elements.
    """
    n = X.shape[0]
    v = _Views(theta, grad, layout, act_params, work, n)
    return float(_loss_and_grad(v, X, Y, sample_weight, n, float(alpha), counters))


def forward(theta, layout, act_params, X, out, apply_output, chunk_rows, work):
    """Predict: ``out`` receives the output activations (or the logits if not
    ``apply_output``), processing ``X`` in chunks of ``chunk_rows`` rows.

    Returns the status of the contract: 0 when ``X`` and ``out`` are finite, 1 when ``X``
    holds NaN or inf (nothing computed), 2 when ``X`` is finite but some output is not.
    """
    data = X.data if sp.issparse(X) else X
    if not np.isfinite(data).all():
        return 1
    v = _Views(theta, None, layout, act_params, work, chunk_rows)
    n = X.shape[0]
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        out[start:stop] = _forward(v, X[start:stop], stop - start, False, None, apply_output)
    return 0 if np.isfinite(out).all() else 2
