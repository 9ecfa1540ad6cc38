"""End-to-end benchmarks: fit and predict on the workloads W1-W6 of WORKLOADS.md.

Every workload is fitted by scikit-learn (the comparison), by fastmlp with each backend that
loads, and by PyTorch on the CPU when it is installed, in float64 and float32; benchmarks of
one workload share a group, so pytest-benchmark's table puts them side by side. Prediction
(``predict`` / ``predict_proba`` of one row and of all 1797 rows) runs on the W1 model.

In quick mode (``FASTMLP_BENCH_QUICK=1`` or ``--benchmark-disable``) the sizes are the
``--quick`` ones of ``python -m fastmlp bench`` and every fit runs one epoch. Timings are never
asserted; the checks only make sure every variant did the work (all epochs, finite loss).
"""

import numpy as np
import pytest
from workloads import (
    DTYPES,
    WORKLOADS,
    fit,
    fit_epochs,
    fit_rounds,
    fit_variants,
    get_workload,
    make_data,
    n_params,
    predict_variants,
    torch_forward,
    training_flops,
)


@pytest.mark.parametrize("variant", fit_variants())
@pytest.mark.parametrize("wid", list(WORKLOADS))
def test_fit(benchmark, wid, variant, quick):
    lib, backend, dtype = variant
    w = get_workload(wid)
    X, y = make_data(wid, quick=quick, dtype=DTYPES[dtype])
    epochs = fit_epochs(wid, quick)
    # warm-up on a few rows: imports and JIT compilation stay out of the timed rounds
    n_warm = min(X.shape[0], max(64, 2 * w.batch_size))
    fit(lib, backend, wid, X[:n_warm], y[:n_warm], 1)
    benchmark.group = f"fit {wid} {w.name}"
    benchmark.extra_info.update(
        workload=wid, lib=lib, backend=backend, dtype=dtype, n_samples=X.shape[0],
        epochs=epochs, n_params=n_params(wid), flops=training_flops(wid, X.shape[0], epochs),
    )
    model = benchmark.pedantic(fit, args=(lib, backend, wid, X, y, epochs),
                               rounds=fit_rounds(quick), iterations=1)
    if lib != "torch":
        assert model.n_iter_ == epochs
        assert np.isfinite(model.loss_)
        assert model.coefs_[0].dtype == DTYPES[dtype]


@pytest.fixture(scope="module")
def w1_models(quick):
    """W1 models (float64), fitted on first use and shared by the prediction benchmarks."""
    cache = {}
    X, y = make_data("W1")
    X = np.array(X)  # writable, as a user's array would be
    epochs = fit_epochs("W1", quick)

    def get(lib, backend):
        key = (lib, backend)
        if key not in cache:
            cache[key] = fit(lib, backend, "W1", X, y, epochs)
        return cache[key]

    return X, get


OPS = {"predict_1row": ("predict", 1), "predict_proba_1row": ("predict_proba", 1),
       "predict_all": ("predict", None), "predict_proba_all": ("predict_proba", None)}


@pytest.mark.parametrize("variant", predict_variants())
@pytest.mark.parametrize("op", list(OPS))
def test_predict(benchmark, w1_models, op, variant):
    lib, backend = variant
    X, get = w1_models
    model = get(lib, backend)
    method, n = OPS[op]
    Xp = np.ascontiguousarray(X[:n]) if n else X
    if lib == "torch":
        import torch

        Xt = torch.from_numpy(Xp)
        proba = method == "predict_proba"

        def call():
            return torch_forward(model, Xt, proba=proba)
    else:
        f = getattr(model, method)

        def call():
            return f(Xp)

    for _ in range(5):
        call()
    benchmark.group = f"W1 {op}"
    benchmark.extra_info.update(lib=lib, backend=backend, rows=Xp.shape[0],
                                bare_forward=lib == "torch")
    out = benchmark(call)
    assert len(out) == Xp.shape[0]
