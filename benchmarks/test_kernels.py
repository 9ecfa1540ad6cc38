"""Kernel-level benchmarks: each backend's entry points called directly.

Per backend x dtype x hidden activation, on ``n_in -> width (activation) -> n_out`` with a
narrow output (see :func:`fastmlp._bench_workloads.kernel_problem` and ``KERNEL_SIZES``):

- ``forward``: prediction of one batch (GEMM, then bias + activation), i.e. the
  ``forward`` entry point;
- ``forward_backward``: the full-batch ``loss_grad`` (forward, loss, activation derivative,
  weight-gradient GEMMs, bias sums, L2 term), the backward cost being the difference;
- ``optimizer_step``: ``train_epoch`` over exactly one mini-batch (gather, forward,
  backward and one Adam or Nesterov-SGD step on the flat vectors).

Timings are reported, never asserted; the only checks are that outputs are finite.
"""

import numpy as np
import pytest
from workloads import DTYPES, backend_params, kernel_problem

from fastmlp.activations import HIDDEN_ACTIVATIONS
from fastmlp.backends import get_backend

ACTIVATIONS = list(HIDDEN_ACTIVATIONS)


@pytest.fixture(params=backend_params())
def backend(request):
    return get_backend(request.param)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward(benchmark, backend, activation, dtype, quick):
    p = kernel_problem(activation, DTYPES[dtype], quick=quick)
    work = np.empty(backend.workspace_size(p["layout"], p["rows"]), dtype=DTYPES[dtype])
    args = (p["theta"], p["layout"], p["act_params"], p["X"], p["out"], True, p["rows"], work)
    backend.forward(*args)  # warm-up: JIT compilation, first-call caches
    benchmark.group = f"forward {dtype}"
    benchmark.extra_info.update(backend=backend.__name__.rsplit(".", 1)[-1], dtype=dtype,
                                activation=activation, rows=p["rows"])
    benchmark(backend.forward, *args)
    assert np.isfinite(p["out"]).all()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_backward(benchmark, backend, activation, dtype, quick):
    p = kernel_problem(activation, DTYPES[dtype], quick=quick)
    work = np.empty(backend.workspace_size(p["layout"], p["rows"]), dtype=DTYPES[dtype])
    args = (p["theta"], p["grad"], p["layout"], p["act_params"], p["X"], p["Y"], None, 1e-4,
            p["counters"], work)
    backend.loss_grad(*args)
    benchmark.group = f"forward+backward {dtype}"
    benchmark.extra_info.update(backend=backend.__name__.rsplit(".", 1)[-1], dtype=dtype,
                                activation=activation, rows=p["rows"])
    loss = benchmark(backend.loss_grad, *args)
    assert np.isfinite(loss) and np.isfinite(p["grad"]).all()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_optimizer_step(benchmark, backend, solver, dtype, quick):
    p = kernel_problem("relu", DTYPES[dtype], quick=quick)
    counters = p["counters"]
    counters[0] = 1 if solver == "adam" else 0  # SOLVER
    counters[1] = 0 if solver == "adam" else 1  # NESTEROV
    rows = p["rows"]
    order = np.arange(rows, dtype=np.int64)  # one mini-batch of every row
    work = np.empty(backend.workspace_size(p["layout"], rows), dtype=DTYPES[dtype])
    args = (p["theta"], p["grad"], p["opt_state"], p["layout"], p["act_params"], p["X"],
            p["Y"], None, order, rows, p["hyper"], counters, work)
    backend.train_epoch(*args)
    benchmark.group = f"one optimizer step {dtype}"
    benchmark.extra_info.update(backend=backend.__name__.rsplit(".", 1)[-1], dtype=dtype,
                                solver=solver, rows=rows)
    loss = benchmark(backend.train_epoch, *args)
    assert np.isfinite(loss) and np.isfinite(p["theta"]).all()
