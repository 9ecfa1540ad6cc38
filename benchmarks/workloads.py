"""Factories shared by the benchmark tests: re-exported from :mod:`fastmlp._bench_workloads`.

The workloads (data, estimator settings, the PyTorch loop) are defined once, in
``fastmlp/_bench_workloads.py``, and used both here and by ``python -m fastmlp bench``; this
module only adds the pytest parametrisations (variants, with skip marks for what this machine
lacks).
"""

import os

import numpy as np
import pytest

from fastmlp import available_backends
from fastmlp._bench_workloads import (  # noqa: F401  (re-exported for the tests)
    KERNEL_SIZES,
    WORKLOADS,
    estimator_params,
    fit_estimator,
    get_workload,
    kernel_problem,
    make_data,
    make_estimator,
    n_params,
    torch_available,
    torch_fit,
    torch_forward,
    training_flops,
)

DTYPES = {"f64": np.float64, "f32": np.float32}

BACKEND_STATUS = available_backends()
"""Backend name -> None if it loads, else the reason (computed once, at collection)."""

TORCH = torch_available()


def _marks(name, reason):
    return [pytest.mark.skip(reason=f"backend {name!r} unavailable: {reason}")] if reason else []


def backend_params():
    """Every fastmlp backend as a pytest param; the unavailable ones skip, saying why."""
    out = []
    for name, reason in BACKEND_STATUS.items():
        marks = _marks(name, reason)
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def fit_variants():
    """Training variants: scikit-learn, fastmlp per backend, PyTorch; x {f64, f32}."""
    out = []
    for d in DTYPES:
        out.append(pytest.param(("sklearn", None, d), id=f"sklearn-{d}"))
    for name, reason in BACKEND_STATUS.items():
        marks = _marks(name, reason)
        for d in DTYPES:
            out.append(pytest.param(("fastmlp", name, d), id=f"fastmlp-{name}-{d}",
                                    marks=marks))
    tmarks = [] if TORCH else [pytest.mark.skip(reason="PyTorch is not installed")]
    for d in DTYPES:
        out.append(pytest.param(("torch", None, d), id=f"torch-{d}", marks=tmarks))
    return out


def predict_variants():
    """W1 models for the prediction benchmarks (float64)."""
    out = [pytest.param(("sklearn", None), id="sklearn")]
    for name, reason in BACKEND_STATUS.items():
        marks = _marks(name, reason)
        out.append(pytest.param(("fastmlp", name), id=f"fastmlp-{name}", marks=marks))
    tmarks = [] if TORCH else [pytest.mark.skip(reason="PyTorch is not installed")]
    out.append(pytest.param(("torch", None), id="torch-bare-forward", marks=tmarks))
    return out


def fit_rounds(quick):
    """Timed rounds per fit benchmark: ``FASTMLP_BENCH_ROUNDS``, else 3 (1 in quick mode)."""
    env = os.environ.get("FASTMLP_BENCH_ROUNDS")
    if env:
        return max(1, int(env))
    return 1 if quick else 3


def fit_epochs(wid, quick):
    """Epochs of a fit benchmark: the workload's, or 1 in quick mode (a harness check only)."""
    return 1 if quick else get_workload(wid).epochs


def fit(lib, backend, wid, X, y, epochs):
    """Fit one variant of a workload; returns the estimator or the torch module."""
    if lib == "torch":
        return torch_fit(wid, X, y, epochs=epochs)
    return fit_estimator(make_estimator(lib, wid, epochs=epochs, backend=backend), X, y)
