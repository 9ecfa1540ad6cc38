"""The Cython backend: each training epoch and each prediction in one compiled call.

The kernels live in the extension ``fastmlp.kernels._cy`` (``kernels/_cy.pyx``), built by
``pip install``; if it is missing, importing this module raises ``ImportError`` and the
backend registry reports why (nothing falls back to another backend). On x86-64 the same
source is also built with AVX2 (``fastmlp.kernels._cy_avx2``); it is used when the CPU
supports AVX2 (``variant`` says which build runs; both give identical results). Entry points and
arrays are described in ``docs/kernel_contract.md``; the kernels validate every array
before releasing the GIL for the whole call.

This module only adapts input the kernels do not take: sparse ``X`` (densified chunk by
chunk in ``forward``, once in training, since the GEMMs need dense rows). ``workspace_size``
and the dense paths go straight to the extension, so a one-row ``forward`` costs little
more than the kernel itself.
"""

import numpy as np
import scipy.sparse as sp

from ..kernels import _cy as _baseline

__all__ = ["name", "variant", "workspace_size", "split_kind", "train_epoch", "loss_grad",
           "forward"]

name = "cython"


def _select():
    # the AVX2 build may only be imported on a CPU that runs it; it is absent on targets
    # other than x86-64, where the baseline build is the only one
    if _baseline.cpu_supports_avx2():
        try:
            from ..kernels import _cy_avx2
        except ImportError:
            pass
        else:
            return _cy_avx2, "avx2"
    return _baseline, "baseline"


_cy, variant = _select()

workspace_size = _cy.workspace_size
split_kind = _cy.split_batches


def train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sample_weight, order,
                batch_size, hyper, counters, work):
    """One epoch of mini-batch training; see ``_cy.train_epoch`` for the arrays.

    ``sample_weight=None`` means unit weights. Sparse ``X`` is densified once.
    """
    if sp.issparse(X):
        X = X.toarray()
    return _cy.train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sample_weight,
                           order, batch_size, hyper, counters, work)


def loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, alpha, counters, work):
    """Full-batch loss (L2 term included) at ``theta``; writes the gradient into ``grad``.

    See ``_cy.loss_grad``. Sparse ``X`` is densified once.
    """
    if sp.issparse(X):
        X = X.toarray()
    return _cy.loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, alpha,
                         counters, work)


def forward(theta, layout, act_params, X, out, apply_output, chunk_rows, work):
    """Predict into ``out`` (n_samples, n_outputs): activations or logits.

    See ``_cy.forward``, whose status it returns (0 finite, 1 non-finite ``X``, 2 non-finite
    output). Sparse ``X`` (CSR) is densified ``chunk_rows`` rows at a time.
    """
    if type(X) is np.ndarray:  # the common case first: one type check, then the kernel
        return _cy.forward(theta, layout, act_params, X, out, apply_output, chunk_rows,
                           work)
    if sp.issparse(X):
        X = X.tocsr()
        chunk_rows = max(int(chunk_rows), 1)
        status = 0
        for start in range(0, X.shape[0], chunk_rows):
            stop = min(start + chunk_rows, X.shape[0])
            status = max(status, _cy.forward(
                theta, layout, act_params, X[start:stop].toarray(), out[start:stop],
                apply_output, chunk_rows, work))
            if status == 1:
                break
        return status
    return _cy.forward(theta, layout, act_params, np.asarray(X), out, apply_output,
                       chunk_rows, work)
