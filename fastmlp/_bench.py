"""``python -m fastmlp bench``: the workloads of WORKLOADS.md, side by side, in one process.

What it measures (the workloads themselves are defined once, in
:mod:`fastmlp._bench_workloads`):

- **training** W1-W6: scikit-learn float64 and float32, fastmlp for every backend that loads
  x {float64, float32}, and PyTorch on the CPU (float64 and float32) when it is installed.
  Variants are interleaved (A B C A B C ...) so that the machine's noise hits them alike;
  each gets one untimed warm-up fit on a few rows first (imports, JIT compilation). Reported:
  median and min-max seconds, the ratio of medians against scikit-learn float64 and against
  fastmlp's NumPy backend in the same dtype, GFLOP/s (``6 x n_samples x n_params x epochs``
  over the median time) and its fraction of the GEMM peak of the same dtype, and the peak
  memory of one extra, untimed, one-epoch fit (see :func:`_peak_memory`).
- **GEMM peak**: ``numpy.matmul`` of two 2048 x 2048 matrices per dtype, best of several,
  measured before and after the training section and in each round of W4; the fastest
  product of the run gives the peak.
- **W4's products alone** (:func:`products_alone`): the matrix products of one W4 fit with
  nothing else, the ceiling against which W4's fraction of the peak is read; and its
  optimizer steps alone (:func:`optimizer_alone`), which with the products bound a fit whose
  optimizer does not overlap its products. Both are timed once in each training round of
  W4, after its fits, with the round's GEMM peak, so that each fit can also be read
  against the peak of its own minutes (a shared machine's speed drifts during a run).
- **prediction** on the W1 model (float64): ``predict`` and ``predict_proba`` of one row
  (median over at least 1000 calls, each timed alone) and of all 1797 rows.
- **cold start**: a fresh ``python`` that imports the library, fits W1 and predicts once,
  timed as a whole process; scikit-learn, fastmlp with each backend and ``'auto'``, and an
  empty interpreter for reference.
- **GridSearchCV scaling**: the same small grid on W1's data with ``n_jobs=1`` and
  ``n_jobs=2`` under joblib's threading backend; then one fit of that grid alone, alone on
  one core, and two at once in threads (:func:`run_grid_fit_scaling`), which shows what
  caps the ratio.

Outputs ``results.md``, ``results.json`` (every raw timing and the machine) and
``speedup.png`` into ``--out``; the Markdown table is also printed. Progress goes to stderr.
Timings are never asserted: a slow machine is reported, not failed.
"""

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from datetime import datetime, timezone

import numpy as np

from . import _bench_workloads as bw
from ._training import RUNNING_FITS

__all__ = ["main", "FLOORS"]

DTYPES = {"f64": np.float64, "f32": np.float32}
SECTIONS = ("training", "predict", "cold", "grid")
CEILING_WORKLOAD = "W4"
"""The workload whose matrix products are also timed alone (:func:`products_alone`): the
one the GEMM-peak floor is set on."""

FLOORS = {
    "f64": {"W1": 3.5, "W2": 12.0, "W3": 2.0, "W4": 1.25, "W5": 50.0, "W6": 4.0},
    "f32": {"W1": 5.0, "W2": 14.0, "W3": 2.8, "W4": 2.2},
    "W4_gemm_fraction": 0.85,
    "predict_one_row_us": 10.0,
    "grid_speedup": 1.7,
}
"""Speed floors of issue 4 for the compiled backends (speedups are against scikit-learn
float64). Reported next to the measurements in ``results.md``; never asserted."""

COMPILED = ("numba", "cython")

_T0 = time.perf_counter()


def _log(msg):
    """Progress line on stderr (stdout carries the final table)."""
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ arguments
def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m fastmlp bench",
        description="Benchmark fastmlp against scikit-learn (and PyTorch when installed) on "
        "the workloads W1-W6 of WORKLOADS.md, prediction latency, cold start and "
        "GridSearchCV scaling. Writes results.md, results.json and speedup.png.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few epochs and repeats (~1-2 minutes; numbers are "
                   "only a smoke test, not comparable with a full run)")
    p.add_argument("--workloads", default=",".join(bw.WORKLOADS),
                   help="comma-separated training workloads (default: all, W1,...,W6)")
    p.add_argument("--out", default="bench-out", help="output directory (default: bench-out)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per training variant (default 5, quick 2)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of: " + ",".join(SECTIONS))
    p.add_argument("--backends", default=None,
                   help="comma-separated fastmlp backends to run (default: every one that "
                   "loads)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the extra untimed fit that measures peak memory")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="limit BLAS/OpenMP threads (threadpoolctl; also PyTorch's threads and "
                   "the cold-start processes' environment). Default: the libraries' defaults, "
                   "as WORKLOADS.md asks; on a busy shared machine 1 avoids oversubscription")
    p.add_argument("--cold-runs", type=int, default=None,
                   help="processes per cold-start variant (default 5, quick 1)")
    args = p.parse_args(argv)
    args.workloads = [bw.get_workload(w).id for w in args.workloads.split(",") if w.strip()]
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = set(args.sections) - set(SECTIONS)
    if bad:
        p.error(f"unknown section(s) {sorted(bad)}; choose from {', '.join(SECTIONS)}")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.cold_runs is None:
        args.cold_runs = 1 if args.quick else 5
    if args.repeats < 1 or args.cold_runs < 1:
        p.error("--repeats and --cold-runs must be at least 1")
    return args


# ---------------------------------------------------------------------------- environment
def _pkg_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info(backends_status, torch_used):
    """Date, CPU, versions and BLAS of this run.

    Parameters
    ----------
    backends_status : dict
        :func:`fastmlp.available_backends` output.
    torch_used : bool
        Whether PyTorch ran (its thread count is recorded then).

    Returns
    -------
    dict
    """
    from threadpoolctl import threadpool_info

    import fastmlp

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    versions = {"python": platform.python_version(), "fastmlp": fastmlp.__version__}
    for key, dist in [("numpy", "numpy"), ("scipy", "scipy"), ("sklearn", "scikit-learn"),
                      ("numba", "numba"), ("cython", "Cython"), ("torch", "torch"),
                      ("joblib", "joblib"), ("threadpoolctl", "threadpoolctl"),
                      ("matplotlib", "matplotlib")]:
        versions[key] = _pkg_version(dist)
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "versions": versions,
        "blas": [
            {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                   "num_threads", "threading_layer", "architecture",
                                   "filepath")}
            for d in threadpool_info()
        ],
        "backends": {k: (v is None) for k, v in backends_status.items()},
        "backend_errors": {k: v for k, v in backends_status.items() if v},
        "git_commit": _git_commit(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                               "PYTHONDONTWRITEBYTECODE")
                if os.environ.get(k) is not None},
    }
    if torch_used:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def _blas_summary(info):
    parts = []
    for d in info["blas"]:
        if d.get("user_api") == "blas":
            n = d.get("num_threads")
            parts.append(f"{d.get('internal_api')} {d.get('version')} "
                         f"({d.get('architecture')}, {n} thread{'' if n == 1 else 's'})")
    return "; ".join(dict.fromkeys(parts)) or "unknown"


# --------------------------------------------------------------------------------- timing
def _stats(times):
    t = [float(x) for x in times]
    return {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)}


GEMM_N = 2048
"""Size of the square matrices whose product gives the GEMM peak."""


def _gemm_gflops(seconds, n=GEMM_N):
    """GFLOP/s of one ``n x n`` by ``n x n`` product that took ``seconds``."""
    return 2.0 * n**3 / seconds / 1e9


def _gemm_passes(n=GEMM_N):
    """Per dtype, a callable that times one ``numpy.matmul`` of two ``n x n`` matrices.

    The operands are drawn and one warm-up product taken here, so each call times the
    product alone. Returns ``{'f64': callable, 'f32': callable}``, each returning seconds.
    """
    rng = np.random.default_rng(0)
    passes = {}
    for key, dt in DTYPES.items():
        a = rng.random((n, n)).astype(dt)
        b = rng.random((n, n)).astype(dt)
        c = np.empty((n, n), dtype=dt)
        np.matmul(a, b, out=c)

        def one(a=a, b=b, c=c):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            return time.perf_counter() - t

        passes[key] = one
    return passes


def gemm_peak(repeats=5, n=GEMM_N):
    """Best GFLOP/s of ``numpy.matmul`` on two ``n x n`` matrices, per dtype.

    Parameters
    ----------
    repeats : int, default=5
        Timed products per dtype (after one warm-up).
    n : int, default=2048

    Returns
    -------
    dict
        ``{'f64': {'times': [...], 'gflops': best}, 'f32': {...}}``.
    """
    out = {}
    for key, one in _gemm_passes(n).items():
        times = [one() for _ in range(repeats)]
        out[key] = {"times": times, "gflops": _gemm_gflops(min(times), n)}
    return out


def _fit_size(wid, quick):
    """``(n_samples, epochs, batch_size)`` of one fit of a workload (its quick sizes when
    ``quick``)."""
    w = bw.get_workload(wid)
    n_samples = w.quick_rows if quick else bw.make_data(wid)[0].shape[0]
    return n_samples, w.epochs_for(quick), min(w.batch_size, n_samples)


def _fit_steps(wid, quick):
    """Optimizer steps of one fit: one per batch of every epoch."""
    n_samples, epochs, bs = _fit_size(wid, quick)
    return epochs * -(-n_samples // bs)


def _products_passes(wid, quick):
    """Per dtype, a callable that times one pass of a fit's matrix products alone (see
    :func:`products_alone`); operands are allocated and one batch is warmed up here.
    Returns ``{'f64': callable, 'f32': callable}``, each returning seconds."""
    n_samples, epochs, bs = _fit_size(wid, quick)
    units = bw.layer_units(wid)
    batches = [bs] * (n_samples // bs) + ([n_samples % bs] if n_samples % bs else [])
    pairs = list(zip(units[:-1], units[1:]))
    rng = np.random.default_rng(0)
    passes = {}
    for key, dt in DTYPES.items():
        # inputs never receive an output, so values stay bounded whatever the count
        A = [rng.random((bs, fi)).astype(dt) for fi, _ in pairs]
        W = [(rng.random((fi, fo)) / fi).astype(dt) for fi, fo in pairs]
        D = [rng.random((bs, fo)).astype(dt) for _, fo in pairs]
        Z = [np.empty((bs, fo), dtype=dt) for _, fo in pairs]
        G = [np.empty((fi, fo), dtype=dt) for fi, fo in pairs]
        E = [np.empty((bs, fi), dtype=dt) for fi, _ in pairs]

        def batch(rows, A=A, W=W, D=D, Z=Z, G=G, E=E):
            for a, wl, z in zip(A, W, Z):
                np.matmul(a[:rows], wl, out=z[:rows])
            for i in range(len(pairs) - 1, -1, -1):
                np.matmul(A[i][:rows].T, D[i][:rows], out=G[i])
                if i > 0:
                    np.matmul(D[i][:rows], W[i].T, out=E[i][:rows])

        def one(batch=batch):
            t = time.perf_counter()
            for _ in range(epochs):
                for rows in batches:
                    batch(rows)
            return time.perf_counter() - t

        batch(bs)
        passes[key] = one
    return passes


def _products_summary(times, flops):
    med = statistics.median(times)
    return {"times": list(times), "median": med, "gflops": flops / med / 1e9}


def products_alone(wid, quick=False, repeats=3):
    """Seconds that one fit's matrix products take by themselves: a workload's ceiling.

    Per mini-batch, the products the kernels compute (``docs/kernel_contract.md``): each
    layer's forward product ``A_l @ W_l``, its weight gradient ``A_l.T @ delta_l`` and,
    above the first layer, the delta below it ``delta_l @ W_l.T`` (the input's gradient is
    never formed). Same shapes, dtype and count as one fit (every batch of every epoch, the
    last one short), through ``numpy.matmul`` with the BLAS's default threads (the library
    whose peak :func:`gemm_peak` measures), and nothing else: no activation, loss,
    optimizer, data gathering or Python between them. A fit cannot be faster than this on
    this BLAS; its training GFLOP/s over this one's says how close it comes. (The bench
    times one such pass in each training round of W4 instead, beside the fits.)

    Parameters
    ----------
    wid : str
        Workload id.
    quick : bool, default=False
        The workload's quick sizes (rows, epochs).
    repeats : int, default=3
        Timed passes per dtype, after one warm-up batch; the median is reported.

    Returns
    -------
    dict
        ``{'f64': {'times', 'median', 'gflops'}, 'f32': {...}}``; ``gflops`` is
        ``6 x n_samples x n_params x epochs`` over the median, the training table's
        convention, so it compares directly with a fit's GFLOP/s.
    """
    flops = bw.training_flops(wid, *_fit_size(wid, quick)[:2])
    return {key: _products_summary([one() for _ in range(repeats)], flops)
            for key, one in _products_passes(wid, quick).items()}


def _optimizer_passes(wid, quick):
    """Per dtype, a callable that times one fit's optimizer steps alone (see
    :func:`optimizer_alone`), and ``(steps, n_params)``; ``None`` when the Cython backend
    does not load."""
    from .backends import BackendUnavailableError, get_backend
    from ._optim import SOLVER_CODES

    try:
        kern = get_backend("cython")._cy
    except BackendUnavailableError:
        return None
    w = bw.get_workload(wid)
    _, _, bs = _fit_size(wid, quick)
    steps = _fit_steps(wid, quick)
    units = bw.layer_units(wid)
    n_coef = sum(a * b for a, b in zip(units[:-1], units[1:]))
    n = bw.n_params(wid)
    p = dict(bw.COMMON_PARAMS, **w.extra)
    hyper = np.array([p.get("learning_rate_init", 1e-3), p.get("momentum", 0.9),
                      p.get("beta_1", 0.9), p.get("beta_2", 0.999),
                      p.get("epsilon", 1e-8), p.get("alpha", 1e-4)], dtype=np.float64)
    rng = np.random.default_rng(0)
    passes = {}
    for key, dt in DTYPES.items():
        theta = (rng.standard_normal(n) * 0.01).astype(dt)
        grad = (rng.standard_normal(n) * bs).astype(dt)
        state = np.zeros((2, n), dtype=dt)
        counters = np.zeros(7, dtype=np.int64)
        counters[0] = SOLVER_CODES[w.solver]
        counters[1] = int(bool(p.get("nesterovs_momentum", True)))

        def one(theta=theta, grad=grad, state=state, counters=counters):
            t = time.perf_counter()
            for _ in range(steps):
                kern.optimizer_step(theta, grad, state, n_coef, hyper, counters, float(bs))
            return time.perf_counter() - t

        kern.optimizer_step(theta, grad, state, n_coef, hyper, counters, float(bs))
        passes[key] = one
    return passes, (steps, n)


def _optimizer_summary(times, steps, n_params, dtype_key):
    med = statistics.median(times)
    itemsize = np.dtype(DTYPES[dtype_key]).itemsize
    return {"times": list(times), "median": med, "steps": steps, "n_params": n_params,
            "bytes_per_s": 7 * n_params * itemsize * steps / med}


def optimizer_alone(wid, quick=False, repeats=3):
    """Seconds that one fit's optimizer steps take by themselves, on one thread.

    The fused step the compiled kernels take after each mini-batch (Cython's
    ``optimizer_step``: L2 on the weights, ``1/sum(w)``, then the workload's solver update)
    over the workload's flat parameter vector, as many times as one fit takes it (one per
    batch of every epoch), with nothing in between. It streams the parameters, the
    gradient and both moment vectors through memory once per step; with
    :func:`products_alone` it gives the bound for a fit whose optimizer does not overlap its
    products: ``products + optimizer``. (The bench times one such pass in each training
    round of W4 instead, beside the fits.)

    Parameters
    ----------
    wid : str
        Workload id.
    quick : bool, default=False
        The workload's quick sizes (rows, epochs).
    repeats : int, default=3
        Timed passes per dtype, after one warm-up step; the median is reported.

    Returns
    -------
    dict or None
        ``{'f64': {'times', 'median', 'steps', 'n_params', 'bytes_per_s'}, 'f32': {...}}``
        (``bytes_per_s``: the step's compulsory traffic, read theta, grad, m and v and
        write theta, m and v, over the median); ``None`` when the Cython backend does not
        load (the report says the bound is missing).
    """
    made = _optimizer_passes(wid, quick)
    if made is None:
        return None
    passes, (steps, n) = made
    return {key: _optimizer_summary([one() for _ in range(repeats)], steps, n, key)
            for key, one in passes.items()}


# ------------------------------------------------------------------------------- variants
def _variants(backends, use_torch):
    """Training variants: (key, lib, backend, dtype key), in the order they run each round."""
    v = [("sklearn-f64", "sklearn", None, "f64"), ("sklearn-f32", "sklearn", None, "f32")]
    for b in backends:
        for d in DTYPES:
            v.append((f"fastmlp-{b}-{d}", "fastmlp", b, d))
    if use_torch:
        v += [("torch-f64", "torch", None, "f64"), ("torch-f32", "torch", None, "f32")]
    return [dict(key=k, lib=lib, backend=b, dtype=d) for k, lib, b, d in v]


def _label(v):
    if v["lib"] == "fastmlp":
        return f"fastmlp {v['backend']} {v['dtype']}"
    return f"{v['lib']} {v['dtype']}"


def _fit_variant(v, wid, X, y, epochs):
    """Fit one variant; returns the fitted model (estimator or torch module)."""
    if v["lib"] == "torch":
        return bw.torch_fit(wid, X, y, epochs=epochs)
    est = bw.make_estimator(v["lib"], wid, epochs=epochs, backend=v["backend"])
    return bw.fit_estimator(est, X, y)


def _peak_memory(v, wid, X, y):
    """Peak bytes traced by ``tracemalloc`` during one untimed one-epoch fit.

    What this sees: memory allocated through Python's and NumPy's allocators during the fit
    and alive at its peak (workspaces, parameter and optimizer vectors, copies of the data,
    per-batch temporaries), not the input data allocated before. It does not see memory that
    compiled code or BLAS allocate with ``malloc`` directly, nor PyTorch's allocator (torch
    variants report ``None``). One epoch suffices: the buffers do not grow with epochs.
    """
    if v["lib"] == "torch":
        return None
    gc.collect()
    tracemalloc.start()
    try:
        _fit_variant(v, wid, X, y, 1)
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def run_training(wid, variants, repeats, quick, memory=True, probes=None):
    """Time every variant on workload ``wid``, interleaved, ``repeats`` rounds.

    Parameters
    ----------
    wid : str
    variants : list of dict
        From :func:`_variants`.
    repeats : int
        Rounds; each fits every variant once, in order.
    quick : bool
    memory : bool, default=True
        Measure each variant's peak memory after the rounds.
    probes : dict of str to callable, optional
        Reference passes timed once per round after the fits (each returns its seconds):
        the GEMM peak and W4's bounds, so that a fit and the figures it is read against
        are timed in the same minutes of a machine whose speed drifts.

    Returns
    -------
    dict
        ``{'workload': ..., 'variants': {key: {...}}, 'probes': {name: [seconds per
        round]}}`` with raw times, statistics, final loss, peak memory, and an ``error``
        string for a variant that failed.
    """
    w = bw.get_workload(wid)
    epochs = w.epochs_for(quick)
    X64, y = bw.make_data(wid, quick=quick)
    data = {"f64": X64, "f32": np.ascontiguousarray(X64, dtype=np.float32)}
    n_samples = X64.shape[0]
    flops = bw.training_flops(wid, n_samples, epochs)
    res = {
        "workload": dict(w.describe(), n_samples=n_samples, n_features=X64.shape[1],
                         epochs_run=epochs, n_params=bw.n_params(wid), flops_per_fit=flops),
        "variants": {},
        "probes": {name: [] for name in (probes or {})},
    }
    live = []
    # warm-up on a few rows and one epoch: imports, JIT compilation and first-call caches
    # must not land in the first timed round
    n_warm = min(n_samples, max(64, 2 * w.batch_size))
    for v in variants:
        r = res["variants"][v["key"]] = dict(v, label=_label(v), times=[], loss=None,
                                             error=None)
        try:
            _fit_variant(v, wid, data[v["dtype"]][:n_warm], y[:n_warm], 1)
            live.append(v)
        except Exception as exc:  # report and go on: one broken variant must not stop the run
            r["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"{wid} {r['label']}: FAILED in warm-up: {r['error']}")
    for rnd in range(repeats):
        for v in list(live):
            r = res["variants"][v["key"]]
            gc.collect()
            try:
                t = time.perf_counter()
                model = _fit_variant(v, wid, data[v["dtype"]], y, epochs)
                dt = time.perf_counter() - t
            except Exception as exc:
                r["error"] = f"{type(exc).__name__}: {exc}"
                _log(f"{wid} {r['label']}: FAILED: {r['error']}")
                live.remove(v)
                continue
            r["times"].append(dt)
            if hasattr(model, "loss_"):
                r["loss"] = float(model.loss_)
            if hasattr(model, "backend_"):
                r["backend_used"] = model.backend_
            _log(f"{wid} round {rnd + 1}/{repeats} {r['label']:<22} {dt:8.3f} s")
        for name, probe in (probes or {}).items():
            gc.collect()
            dt = probe()
            res["probes"][name].append(dt)
            _log(f"{wid} round {rnd + 1}/{repeats} {name:<22} {dt:8.3f} s")
    if memory:
        for v in live:
            r = res["variants"][v["key"]]
            try:
                r["mem_peak_bytes"] = _peak_memory(v, wid, data[v["dtype"]], y)
            except Exception as exc:
                r["mem_peak_bytes"] = None
                r["mem_error"] = f"{type(exc).__name__}: {exc}"
        _log(f"{wid} peak memory measured")
    return res


GEMM_PROBE_PRODUCTS = 3
"""Products per dtype in each round's GEMM-peak probe; the probe keeps the fastest."""


def _ceiling_probes(wid, quick):
    """The per-round probes of the ceiling workload: per dtype, the GEMM peak (fastest of
    ``GEMM_PROBE_PRODUCTS`` products of :data:`GEMM_N` square matrices), one pass of the fit's products alone
    (:func:`products_alone`) and, when the Cython backend loads, one pass of its optimizer
    steps alone (:func:`optimizer_alone`)."""
    gemm = _gemm_passes()
    probes = {f"gemm-{d}": (lambda one=one: min(one() for _ in range(GEMM_PROBE_PRODUCTS)))
              for d, one in gemm.items()}
    probes.update({f"products-{d}": one for d, one in _products_passes(wid, quick).items()})
    made = _optimizer_passes(wid, quick)
    if made is not None:
        probes.update({f"optimizer-{d}": one for d, one in made[0].items()})
    return probes


def _paired(values):
    """Median, min and max of per-round values (:func:`_stats`), with the values."""
    return dict(_stats(values), rounds=list(values))


def _ceiling_bounds(results, quick):
    """From the ceiling workload's per-round probes: ``results['products_alone']`` and
    ``results['optimizer_alone']`` (medians over the rounds, against the run's peak, as
    :func:`products_alone` and :func:`optimizer_alone` report them), and the same figures
    paired round by round with that round's own GEMM peak (``*_paired``), for the bounds
    and, in ``results['training']``, for each variant of the workload
    (``gemm_fraction_paired``)."""
    wid = CEILING_WORKLOAD
    res = results["training"][wid]
    rounds = res["probes"]
    n_samples, epochs, _ = _fit_size(wid, quick)
    flops = bw.training_flops(wid, n_samples, epochs)
    steps, n = _fit_steps(wid, quick), bw.n_params(wid)
    pa, oa = {}, None
    for d in DTYPES:
        peaks = [_gemm_gflops(t) * 1e9 for t in rounds[f"gemm-{d}"]]  # FLOP/s of each round
        prod = rounds[f"products-{d}"]
        pa[d] = _products_summary(prod, flops)
        pa[d]["gemm_fraction"] = pa[d]["gflops"] / results["gemm"][d]["gflops"]
        pa[d]["gemm_fraction_paired"] = _paired(
            [flops / t / p for t, p in zip(prod, peaks)])
        if f"optimizer-{d}" in rounds:
            opt = rounds[f"optimizer-{d}"]
            oa = oa or {}
            oa[d] = _optimizer_summary(opt, steps, n, d)
            oa[d]["with_products_gemm_fraction"] = (
                flops / (pa[d]["median"] + oa[d]["median"]) / 1e9
                / results["gemm"][d]["gflops"])
            oa[d]["with_products_gemm_fraction_paired"] = _paired(
                [flops / (t + u) / p for t, u, p in zip(prod, opt, peaks)])
        for r in res["variants"].values():
            if r["dtype"] == d and r["times"] and len(r["times"]) == len(peaks):
                r["gemm_fraction_paired"] = _paired(
                    [flops / t / p for t, p in zip(r["times"], peaks)])
    results["products_alone"] = {wid: pa}
    results["optimizer_alone"] = {wid: oa}


def _derive_training(tr, gemm, ceilings=None):
    """Add statistics, speedups, GFLOP/s, fraction of the GEMM peak and, where measured
    (:func:`products_alone`), fraction of the workload's products-alone rate (in place)."""
    for wid, res in tr.items():
        flops = res["workload"]["flops_per_fit"]
        vs = res["variants"]
        for r in vs.values():
            if r["times"]:
                r.update(_stats(r["times"]))
                r["gflops"] = flops / r["median"] / 1e9
                peak = gemm.get(r["dtype"], {}).get("gflops") if gemm else None
                r["gemm_fraction"] = r["gflops"] / peak if peak else None
                ceil = (ceilings or {}).get(wid, {}).get(r["dtype"])
                if ceil:
                    r["products_alone_fraction"] = r["gflops"] / ceil["gflops"]
        base = vs.get("sklearn-f64", {}).get("median")
        for r in vs.values():
            if "median" not in r:
                continue
            r["speedup_vs_sklearn_f64"] = base / r["median"] if base else None
            ref = vs.get(f"fastmlp-numpy-{r['dtype']}", {}).get("median")
            r["speedup_vs_numpy"] = ref / r["median"] if ref else None


# ----------------------------------------------------------------------------- prediction
def run_predict(backends, quick, use_torch, one_row_calls=None, all_rows_calls=None):
    """One-row and all-rows ``predict`` / ``predict_proba`` latency on the W1 model (float64).

    Calls are timed one by one (``perf_counter_ns``) in blocks of 50, the variants taking
    turns block by block; the median per call is reported.
    """
    one_row_calls = one_row_calls or (1000 if quick else 2000)
    all_rows_calls = all_rows_calls or (10 if quick else 200)
    epochs = bw.get_workload("W1").epochs_for(quick)
    X, y = bw.make_data("W1", quick=False)
    X = np.array(X)  # a plain writable array, as a user would hold
    x1 = np.ascontiguousarray(X[:1])
    models = {}
    errors = {}
    variants = [("sklearn-f64", "sklearn", None)] + [(f"fastmlp-{b}-f64", "fastmlp", b)
                                                    for b in backends]
    for key, lib, b in variants:
        try:
            est = bw.make_estimator(lib, "W1", epochs=epochs, backend=b)
            models[key] = bw.fit_estimator(est, X, y)
        except Exception as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
    ops = {}
    for key, m in models.items():
        ops[key] = {
            "predict_1": (m.predict, x1), "proba_1": (m.predict_proba, x1),
            "predict_all": (m.predict, X), "proba_all": (m.predict_proba, X),
        }
    if use_torch:
        import torch

        tm = bw.torch_fit("W1", X, y, epochs=epochs)
        xt1, xt = torch.from_numpy(x1), torch.from_numpy(X)
        ops["torch-f64"] = {
            "predict_1": (lambda a: bw.torch_forward(tm, a, proba=False), xt1),
            "proba_1": (lambda a: bw.torch_forward(tm, a, proba=True), xt1),
            "predict_all": (lambda a: bw.torch_forward(tm, a, proba=False), xt),
            "proba_all": (lambda a: bw.torch_forward(tm, a, proba=True), xt),
        }
    res = {"n_rows_all": int(X.shape[0]), "dtype": "f64", "variants": {}}
    for key in ops:
        res["variants"][key] = {"label": key.replace("-", " "), "ops": {}}
    for key, err in errors.items():
        res["variants"][key] = {"label": key.replace("-", " "), "ops": {}, "error": err}
    block = 50
    for op, n_calls in [("predict_1", one_row_calls), ("proba_1", one_row_calls),
                        ("predict_all", all_rows_calls), ("proba_all", all_rows_calls)]:
        samples = {key: [] for key in ops}
        for key in ops:  # warm-up: first-call caches, lazy imports
            f, a = ops[key][op]
            for _ in range(5):
                f(a)
        done = 0
        while done < n_calls:
            nb = min(block, n_calls - done)
            for key in ops:
                f, a = ops[key][op]
                s = samples[key]
                for _ in range(nb):
                    t = time.perf_counter_ns()
                    f(a)
                    s.append((time.perf_counter_ns() - t) * 1e-9)
            done += nb
        for key in ops:
            st = _stats(samples[key])
            st["times"] = samples[key]
            res["variants"][key]["ops"][op] = st
        _log(f"predict {op}: " + ", ".join(
            f"{k} {_fmt_us(res['variants'][k]['ops'][op]['median'])}" for k in ops))
    base = res["variants"].get("sklearn-f64", {}).get("ops", {})
    for r in res["variants"].values():
        for op, st in r["ops"].items():
            b = base.get(op, {}).get("median")
            st["speedup_vs_sklearn"] = b / st["median"] if b else None
    if use_torch:
        res["variants"]["torch-f64"]["note"] = "bare torch forward: no input validation"
    return res


# ----------------------------------------------------------------------------- cold start
_COLD_SCRIPT = """\
import time
_t = [time.time()]
import sys, warnings
lib, backend = sys.argv[1], sys.argv[2]
if lib == "python":
    raise SystemExit(0)
if lib == "sklearn":
    from sklearn.neural_network import MLPClassifier
    kw = {{}}
else:
    from fastmlp import MLPClassifier
    kw = {{"backend": backend}}
_t.append(time.time())
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
warnings.simplefilter("ignore")
_t.append(time.time())
clf = MLPClassifier(**{params!r}, **kw).fit(X, y)
clf.predict(X[:1])
_t.append(time.time())
print(getattr(clf, "backend_", ""))
print("PHASES", *_t)
"""

COLD_PHASES = ("start", "import", "data", "fit_predict", "exit")
"""A cold-start process's phases, from the script's wall-clock marks: the interpreter's start
(spawn to the script's first line), importing the library's ``MLPClassifier``, importing and
loading the digits data, ``fit`` and one ``predict``, and the rest (printing, then the
interpreter's exit: its final garbage collections and module teardown)."""


def _cold_phases(t_spawn, t_done, stdout):
    """``{phase: seconds}`` of one cold-start process (:data:`COLD_PHASES`), or None when the
    script printed no marks (the empty interpreter)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("PHASES ")), None)
    if line is None:
        return None
    marks = [t_spawn] + [float(x) for x in line.split()[1:]] + [t_done]
    return dict(zip(COLD_PHASES, np.diff(marks).tolist()))


def cold_start_script(epochs=None):
    """The cold-start script: import, fit W1, predict one row (W1's settings inlined).

    It takes ``lib`` (``'sklearn'``, ``'fastmlp'`` or ``'python'`` for an empty interpreter)
    and ``backend`` as arguments and is self-contained, so that the scikit-learn run never
    imports fastmlp.
    """
    return _COLD_SCRIPT.format(params=bw.estimator_params("W1", epochs))


def byte_compile_fastmlp():
    """Write the bytecode of fastmlp's modules, as ``pip install`` does when it installs them.

    An editable install run with ``PYTHONDONTWRITEBYTECODE`` set (or from a read-only
    checkout) would otherwise compile fastmlp's sources in every cold-start process, while
    scikit-learn's installed modules load their bytecode: 0.1-0.2 s the user never pays.

    Returns
    -------
    bool
        Whether every module compiled (False if a directory is not writable).
    """
    import compileall

    import fastmlp
    import fastmlp.kernels

    dirs = {os.path.dirname(fastmlp.__file__), os.path.dirname(fastmlp.kernels.__file__)}
    return all(bool(compileall.compile_dir(d, quiet=2)) for d in sorted(dirs))


def run_cold_start(backends, runs, quick, variants=None, blas_threads=None):
    """Time fresh processes (import, fit W1, predict once), interleaved, ``runs`` each.

    Parameters
    ----------
    backends : list of str
        fastmlp backends to start (``'auto'`` is added).
    runs : int
    quick : bool
        Quick mode fits W1 for its quick number of epochs.
    variants : list of (key, lib, backend), optional
        Overrides the default list (used by the tests).
    blas_threads : int, optional
        Thread limit passed to the processes through ``OMP_NUM_THREADS``,
        ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS``; default: inherit the environment.

    Returns
    -------
    dict
    """
    epochs = bw.get_workload("W1").epochs_for(quick)
    script = cold_start_script(epochs)
    if variants is None:
        variants = [("python", "python", "-"), ("sklearn", "sklearn", "-")]
        variants += [(f"fastmlp-{b}", "fastmlp", b) for b in list(backends) + ["auto"]]
    env = None
    if blas_threads is not None:
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(blas_threads)
    res = {"epochs": epochs, "script": script, "bytecode": byte_compile_fastmlp(),
           "variants": {}}
    for key, lib, b in variants:
        res["variants"][key] = {"label": key, "lib": lib, "backend": b, "times": [],
                                "error": None}
    for rnd in range(runs):
        for key, lib, b in variants:
            r = res["variants"][key]
            if r["error"]:
                continue
            t, t_spawn = time.perf_counter(), time.time()
            proc = subprocess.run([sys.executable, "-c", script, lib, b], capture_output=True,
                                  text=True, env=env)
            dt, t_done = time.perf_counter() - t, time.time()
            if proc.returncode != 0:
                r["error"] = (proc.stderr.strip().splitlines() or ["exit code "
                                                                   f"{proc.returncode}"])[-1]
                _log(f"cold start {key}: FAILED: {r['error']}")
                continue
            r["times"].append(dt)
            # the script's first line is the backend used (empty for scikit-learn)
            r["backend_used"] = (proc.stdout.splitlines() or [""])[0].strip() or None
            phases = _cold_phases(t_spawn, t_done, proc.stdout)
            if phases is not None:
                for name, sec in phases.items():
                    r.setdefault("phases", {}).setdefault(name, []).append(sec)
            _log(f"cold start round {rnd + 1}/{runs} {key:<16} {dt:7.3f} s")
    base = None
    for key, r in res["variants"].items():
        if r["times"]:
            r.update(_stats(r["times"]))
            r["first"] = r["times"][0]
        if r.get("phases"):
            r["phase_medians"] = {k: statistics.median(v) for k, v in r["phases"].items()}
    base = res["variants"].get("sklearn", {}).get("median")
    for r in res["variants"].values():
        if "median" in r:
            r["ratio_vs_sklearn"] = r["median"] / base if base else None
    return res


# ----------------------------------------------------------------------------- GridSearch
GRID = {"alpha": [1e-4, 1e-3], "hidden_layer_sizes": [(32,), (64,)]}


def run_gridsearch(backends, repeats, quick):
    """``GridSearchCV`` on W1's data: ``n_jobs=1`` vs ``n_jobs=2`` (joblib threading).

    The grid is :data:`GRID` (4 candidates) with 3-fold CV (2 in quick mode), ``refit=False``
    so only the parallel part is timed; W1's settings with 50 epochs (3 in quick mode). BLAS
    keeps its default thread count, as a user would have it.
    """
    import joblib
    from sklearn.model_selection import GridSearchCV

    try:
        from joblib import parallel_config as _ctx
    except ImportError:  # joblib < 1.3
        from joblib import parallel_backend as _ctx
    epochs = 3 if quick else 50
    cv = 2 if quick else 3
    X, y = bw.make_data("W1", quick=False)
    variants = [("sklearn", "sklearn", None)] + [(f"fastmlp-{b}", "fastmlp", b)
                                                for b in backends]
    res = {"grid": {k: [list(x) if isinstance(x, tuple) else x for x in v]
                    for k, v in GRID.items()},
           "cv": cv, "epochs": epochs, "joblib": joblib.__version__, "variants": {}}
    for key, lib, b in variants:
        res["variants"][key] = {"label": key, "n_jobs_1": [], "n_jobs_2": [], "error": None}
    for rnd in range(repeats):
        for key, lib, b in variants:
            r = res["variants"][key]
            if r["error"]:
                continue
            for n_jobs in (1, 2):
                if n_jobs == 1 and lib == "fastmlp":
                    # fits that overlapped (the previous n_jobs=2 search) keep their
                    # products single-threaded for RUNNING_FITS.HOLD seconds: time n_jobs=1
                    # as a search run on its own runs, with the BLAS's threads
                    time.sleep(RUNNING_FITS.HOLD)
                est = bw.make_estimator(lib, "W1", epochs=epochs, backend=b)
                gs = GridSearchCV(est, GRID, cv=cv, n_jobs=n_jobs, refit=False)
                try:
                    with _ctx("threading", n_jobs=n_jobs):
                        t = time.perf_counter()
                        bw.fit_estimator(gs, X, y)
                        dt = time.perf_counter() - t
                except Exception as exc:
                    r["error"] = f"{type(exc).__name__}: {exc}"
                    _log(f"grid {key}: FAILED: {r['error']}")
                    break
                r[f"n_jobs_{n_jobs}"].append(dt)
                _log(f"grid round {rnd + 1}/{repeats} {key:<16} n_jobs={n_jobs} {dt:7.3f} s")
    for r in res["variants"].values():
        if r["n_jobs_1"] and r["n_jobs_2"]:
            r["n_jobs_1_stats"] = _stats(r["n_jobs_1"])
            r["n_jobs_2_stats"] = _stats(r["n_jobs_2"])
            r["speedup"] = r["n_jobs_1_stats"]["median"] / r["n_jobs_2_stats"]["median"]
    return res


GRID_FIT_SETTINGS = {
    "alone": "one fit at a time, as it runs (its batches may use the second core)",
    "one_core": "one fit at a time in a fresh process held to one CPU, with "
                "OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=NUMBA_NUM_THREADS=1",
    "two_in_threads": "two fits at once, each in its own thread (as GridSearchCV(n_jobs=2) runs "
                 "them), time per fit",
}
"""The settings of :func:`run_grid_fit_scaling`, as the results describe them."""

_ONE_CORE_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS")

_GRID_FIT_SCRIPT = """\
import json, os, sys
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from fastmlp._bench import grid_fit_times
print(json.dumps(grid_fit_times(sys.argv[1], 1, *map(int, sys.argv[2:]))))
"""


def grid_fit_data(cv=3):
    """W1's data cut to the size of one training split of the GridSearchCV section."""
    X, y = bw.make_data("W1", quick=False)
    n = len(X) * (cv - 1) // cv
    return X[:n], y[:n]


def grid_fit_times(backend, n_threads, fits_per_thread, repeats, epochs, cv=3):
    """Wall time per fit of the grid's largest candidate, ``n_threads`` fits at once.

    One fit is fastmlp's W1 estimator with ``epochs`` epochs (the grid's ``(64,)`` units
    and default ``alpha``) on :func:`grid_fit_data`. Each of ``repeats`` rounds starts
    ``n_threads`` threads that fit ``fits_per_thread`` times each, and records the round's
    wall time over ``n_threads * fits_per_thread``. One untimed fit comes first (JIT
    compilation, caches).

    Returns
    -------
    list of float
        Seconds per fit, one value per round.
    """
    from sklearn.exceptions import ConvergenceWarning

    X, y = grid_fit_data(cv)
    errors = []

    def fit():
        bw.make_estimator("fastmlp", "W1", epochs=epochs, backend=backend).fit(X, y)

    def worker():
        try:
            for _ in range(fits_per_thread):
                fit()
        except Exception as exc:  # a thread's exception would otherwise only be printed
            errors.append(exc)

    # silenced once, here: catch_warnings in each thread would restore the filters out of
    # order (the fixed number of epochs ends every fit with a ConvergenceWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit()
        per_fit = [_grid_fit_round(worker, n_threads, fits_per_thread) for _ in range(repeats)]
    if errors:
        raise errors[0]
    return per_fit


def _grid_fit_round(worker, n_threads, fits_per_thread):
    if n_threads == 1 and RUNNING_FITS.serial():
        # fits overlapped a moment ago (a round of threads, a search): they keep products
        # serial for RUNNING_FITS.HOLD seconds; a lone fit runs as it would on its own
        time.sleep(RUNNING_FITS.HOLD)
    t = time.perf_counter()
    if n_threads == 1:
        # in the calling thread, as GridSearchCV(n_jobs=1) fits: with GNU OpenMP, a second
        # thread that runs a parallel region gets its own pool, and once more pool threads
        # exist than CPUs, libgomp's waiting threads stop spinning and sleep, so a fit's
        # split batches wait for a futex wake-up each (twice the time per fit, measured on a
        # 2-core VM)
        worker()
    else:
        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    return (time.perf_counter() - t) / (n_threads * fits_per_thread)


def _one_core_times(backend, fits, repeats, epochs, cv):
    env = dict(os.environ)
    env.update({var: "1" for var in _ONE_CORE_ENV})
    proc = subprocess.run([sys.executable, "-c", _GRID_FIT_SCRIPT, backend, str(fits),
                           str(repeats), str(epochs), str(cv)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines()
                            or [f"exit code {proc.returncode}"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_grid_fit_scaling(backends, quick):
    """What caps the GridSearchCV ratio: one grid fit alone, on one core, and two in threads.

    The ratio ``n_jobs=1`` / ``n_jobs=2`` of :func:`run_gridsearch` mixes how well fits in
    threads run side by side with how much a lone fit already uses the second core. This
    separates them, per backend (settings: :data:`GRID_FIT_SETTINGS`):

    - ``thread_scaling`` = one core / two in threads: how the fits themselves scale;
    - ``split_gain`` = one core / alone: what a lone fit gains from the other cores;
    - ``ratio_cap`` = alone / two in threads: the search's ratio with nothing but fits in it.

    *Alone* runs in the calling thread, as ``n_jobs=1`` does; *two in threads* in two new
    threads, as joblib's threading backend does.

    10 fits per thread and 5 rounds per setting (2 and 1 with 3 epochs in quick mode).
    """
    fits, repeats, epochs = (2, 1, 3) if quick else (10, 5, 50)
    cv = 2 if quick else 3
    res = {"settings": dict(GRID_FIT_SETTINGS), "fits_per_thread": fits, "rounds": repeats,
           "epochs": epochs, "rows": len(grid_fit_data(cv)[0]), "variants": {}}
    for b in backends:
        r = res["variants"][f"fastmlp-{b}"] = {"label": f"fastmlp-{b}", "backend": b,
                                               "error": None}
        try:
            r["alone"] = grid_fit_times(b, 1, fits, repeats, epochs, cv)
            r["two_in_threads"] = grid_fit_times(b, 2, fits, repeats, epochs, cv)
            r["one_core"] = _one_core_times(b, fits, repeats, epochs, cv)
        except Exception as exc:
            r["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"grid per fit {b}: FAILED: {r['error']}")
            continue
        med = {}
        for s in GRID_FIT_SETTINGS:
            r[f"{s}_stats"] = _stats(r[s])
            med[s] = r[f"{s}_stats"]["median"]
        r["thread_scaling"] = med["one_core"] / med["two_in_threads"]
        r["split_gain"] = med["one_core"] / med["alone"]
        r["ratio_cap"] = med["alone"] / med["two_in_threads"]
        _log(f"grid per fit {b}: " + ", ".join(f"{s.replace('_', ' ')} {t * 1e3:.1f} ms"
                                                for s, t in med.items()))
    return res

# ----------------------------------------------------------------------------------- floors
def check_floors(results):
    """Each floor of issue 4 for each compiled backend that ran: measured, floor, met.

    Returns
    -------
    list of dict
        ``{'check', 'backend', 'measured', 'floor', 'met', 'unit'}``; ``met`` is None when the
        measurement is missing. Informational only.
    """
    rows = []
    tr = results.get("training", {})
    ran = set()
    for res in tr.values():
        for r in res["variants"].values():
            if r.get("backend") in COMPILED:
                ran.add(r["backend"])
    for sec in ("predict", "cold_start", "gridsearch"):
        for key in results.get(sec, {}).get("variants", {}):
            for b in COMPILED:
                if b in key:
                    ran.add(b)
    for b in [c for c in COMPILED if c in ran]:
        for d in ("f64", "f32"):
            for wid, floor in FLOORS[d].items():
                r = tr.get(wid, {}).get("variants", {}).get(f"fastmlp-{b}-{d}")
                if r is None:
                    continue
                m = r.get("speedup_vs_sklearn_f64")
                rows.append(dict(check=f"{wid} {d} speedup vs sklearn f64", backend=b,
                                 measured=m, floor=floor, unit="x",
                                 met=None if m is None else m >= floor))
        for d in ("f64", "f32"):
            r = tr.get("W4", {}).get("variants", {}).get(f"fastmlp-{b}-{d}")
            if r is not None:
                m = r.get("gemm_fraction")
                pa = results.get("products_alone", {}).get("W4", {}).get(d)
                ceil = (f" (products alone: {_fmt_pct(pa['gemm_fraction'])}; the fit: "
                        f"{_fmt_pct(r.get('products_alone_fraction'))} of that)") if pa else ""
                paired = r.get("gemm_fraction_paired")
                if paired:
                    ceil += f" (against its own round's peak: {_fmt_pct(paired['median'])})"
                rows.append(dict(check=f"W4 {d} fraction of GEMM peak{ceil}", backend=b,
                                 measured=m, floor=FLOORS["W4_gemm_fraction"], unit="frac",
                                 met=None if m is None else m >= FLOORS["W4_gemm_fraction"]))
        pr = results.get("predict", {}).get("variants", {}).get(f"fastmlp-{b}-f64")
        if pr and "predict_1" in pr.get("ops", {}):
            m = pr["ops"]["predict_1"]["median"] * 1e6
            rows.append(dict(check="one-row predict (us, at most)", backend=b, measured=m,
                             floor=FLOORS["predict_one_row_us"], unit="us",
                             met=m <= FLOORS["predict_one_row_us"]))
        cs = results.get("cold_start", {}).get("variants", {})
        for key in (f"fastmlp-{b}", "fastmlp-auto"):
            r = cs.get(key)
            if r and r.get("ratio_vs_sklearn") is not None:
                if key == "fastmlp-auto" and r.get("backend_used") != b:
                    continue
                m = r["ratio_vs_sklearn"]
                rows.append(dict(check=f"cold start {key} / sklearn (at most)", backend=b,
                                 measured=m, floor=1.0, unit="x", met=m <= 1.0))
        gr = results.get("gridsearch", {}).get("variants", {}).get(f"fastmlp-{b}")
        if gr and gr.get("speedup") is not None:
            m = gr["speedup"]
            rows.append(dict(check="GridSearchCV n_jobs=2 speedup", backend=b, measured=m,
                             floor=FLOORS["grid_speedup"], unit="x",
                             met=m >= FLOORS["grid_speedup"]))
    return rows


# ---------------------------------------------------------------------------------- output
def _fmt_s(x):
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _fmt_us(x):
    return "-" if x is None else f"{x * 1e6:.1f} us"


def _fmt_ms(x):
    return "-" if x is None else f"{x * 1e3:.2f} ms"


def _fmt_x(x):
    if x is None or not math.isfinite(x):
        return "-"
    if x < 0.1:
        return f"{x:.3f}x"
    return f"{x:.2f}x" if x < 10 else (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def _fmt_pct(x):
    return "-" if x is None else f"{100 * x:.1f} %"


def _fmt_mib(x):
    return "-" if x is None else f"{x / 2**20:.1f}"


def _table_head(*columns):
    """The header and separator lines of a Markdown table."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _failed_row(lead, error, n_columns):
    """A table row for a variant that failed: its ``lead`` cells, the error, empty cells."""
    cells = [*lead, f"failed: {(error or '')[:80]}"]
    return "| " + " | ".join(cells) + " |" + " |" * (n_columns - len(cells))


def _paired_note(paired):
    """`` (against its own round's peak: median, min-max)`` or nothing."""
    if not paired:
        return ""
    return (f" (against its own round's peak: {_fmt_pct(paired['median'])}, "
            f"{_fmt_pct(paired['min'])}-{_fmt_pct(paired['max'])})")


def _render_paired(results):
    """The ceiling workload's fits and bounds, each round against that round's peak."""
    res = results.get("training", {}).get(CEILING_WORKLOAD)
    if not res or not res.get("probes", {}).get("gemm-f64"):
        return []
    wid = CEILING_WORKLOAD
    rounds = res["probes"]
    L = [f"### {wid} against the GEMM peak of its own round\n",
         "A shared machine's speed drifts during a run. Each round of the table above also "
         f"timed, after its {wid} fits, the GEMM peak (fastest of {GEMM_PROBE_PRODUCTS} "
         "products per dtype), the fit's products alone and its optimizer steps alone; here "
         "each fit and bound is set against the peak of its own round (median and min-max "
         "over the rounds). The floor check below uses the stricter figure of the table "
         "above: the fit's median against the best peak of the whole run.\n",
         "Peak per round, GFLOP/s: " + "; ".join(
             f"{'float64' if d == 'f64' else 'float32'} "
             + ", ".join(f"{_gemm_gflops(t):.1f}" for t in rounds[f"gemm-{d}"])
             for d in DTYPES) + ".\n"]
    L += _table_head("variant", "of its round's peak", "min-max", "of the run's best peak")
    rows = [(r["label"], r.get("gemm_fraction_paired"), r.get("gemm_fraction"))
            for r in res["variants"].values() if r.get("gemm_fraction_paired")]
    for d in DTYPES:
        name = "float64" if d == "f64" else "float32"
        pa = results.get("products_alone", {}).get(wid, {}).get(d)
        if pa:
            rows.append((f"products alone {name}", pa.get("gemm_fraction_paired"),
                         pa.get("gemm_fraction")))
        oa = (results.get("optimizer_alone", {}).get(wid) or {}).get(d)
        if oa:
            rows.append((f"products + optimizer {name}",
                         oa.get("with_products_gemm_fraction_paired"),
                         oa.get("with_products_gemm_fraction")))
    for label, paired, best in rows:
        if not paired:
            continue
        L.append(f"| {label} | {_fmt_pct(paired['median'])} | {_fmt_pct(paired['min'])}-"
                 f"{_fmt_pct(paired['max'])} | {_fmt_pct(best)} |")
    L.append("")
    return L


def render_markdown(results):
    """``results.md``: the tables of one run, from the dict written to ``results.json``."""
    meta = results["meta"]
    v = meta["versions"]
    L = []
    title = "fastmlp benchmark results"
    if results["quick"]:
        title += " (QUICK mode: shrunk sizes, a harness check, not comparable figures)"
    L.append(f"# {title}\n")
    fin = f" (finished {meta['finished']})" if meta.get("finished") else ""
    L.append(f"- Date: {meta['date']}{fin}; git commit: {meta.get('git_commit') or 'unknown'}")
    L.append(f"- Machine: {meta['cpu']}, {meta['cpus_usable']} usable CPU(s); "
             f"load average at start {meta.get('loadavg_start')}, "
             f"at end {meta.get('loadavg_end')}")
    L.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in
                                        ("python", "fastmlp", "numpy", "scipy", "sklearn",
                                         "numba", "cython", "torch", "joblib")
                                        if v.get(k)))
    if not v.get("torch"):
        L.append("- PyTorch is not installed: its variants were skipped.")
    elif results.get("torch_skipped"):
        L.append(f"- PyTorch variants skipped: {results['torch_skipped']}")
    elif meta.get("torch_threads"):
        L.append(f"- PyTorch threads: {meta['torch_threads']}")
    L.append(f"- BLAS: {_blas_summary(meta)}" + (
        f"; limited to {results['blas_threads']} thread(s) for this run (--blas-threads)"
        if results.get("blas_threads") else "; default thread counts"))
    def _state(k, ok):
        if k in results["backends_run"]:
            return "ran"
        return "not selected" if ok else "not available"

    L.append("- fastmlp backends: " + ", ".join(
        f"{k} ({_state(k, ok)})" for k, ok in meta["backends"].items()))
    for k, err in meta.get("backend_errors", {}).items():
        L.append(f"  - {k}: {err}")
    L.append(f"- Command: `{results['command']}`")
    g = results.get("gemm")
    if g:
        L.append(f"- GEMM peak (numpy matmul {g['n']}x{g['n']}, best of the run): "
                 f"float64 {g['f64']['gflops']:.1f} GFLOP/s, "
                 f"float32 {g['f32']['gflops']:.1f} GFLOP/s")
    for wid, pa in results.get("products_alone", {}).items():
        rounds = len(pa["f64"]["times"])
        L.append(f"- {wid}'s matrix products alone (the shapes and count of one fit, numpy "
                 "matmul, no other work: the bound for a fit on this BLAS; one pass in each "
                 f"of the {rounds} training rounds of {wid}, after its fits, median): "
                 + ", ".join(
                     f"{'float64' if d == 'f64' else 'float32'} {_fmt_s(pa[d]['median'])} s, "
                     f"{pa[d]['gflops']:.1f} GFLOP/s in the training table's terms = "
                     f"{_fmt_pct(pa[d]['gemm_fraction'])} of the peak"
                     + _paired_note(pa[d].get("gemm_fraction_paired")) for d in DTYPES))
    for wid, oa in results.get("optimizer_alone", {}).items():
        if oa is None:
            L.append(f"- {wid}'s optimizer steps alone: not measured (it times the Cython "
                     "backend's step, and that backend did not load)")
            continue
        f = oa["f64"]
        L.append(f"- {wid}'s optimizer steps alone (Cython's fused step on one thread, "
                 f"{f['steps']} steps over {f['n_params']:,} parameters, no other work): "
                 + "; ".join(
                     f"{'float64' if d == 'f64' else 'float32'} {_fmt_s(oa[d]['median'])} s "
                     f"({oa[d]['bytes_per_s'] / 1e9:.1f} GB/s of parameter, gradient and "
                     f"moment traffic), products + optimizer "
                     f"{_fmt_pct(oa[d]['with_products_gemm_fraction'])} of the peak"
                     + _paired_note(oa[d].get("with_products_gemm_fraction_paired"))
                     for d in DTYPES)
                 + " (the bound for a fit whose optimizer does not overlap its products)")
    L.append("")

    tr = results.get("training")
    if tr:
        reps = results["repeats"]
        L.append("## Training\n")
        L.append(f"Seconds per `fit`, median and min-max of {reps} interleaved run(s). "
                 "Ratios are of medians (higher = faster than the reference); GFLOP/s is "
                 "6 x n_samples x n_parameters x epochs / median, and its fraction is of the "
                 "GEMM peak of the same dtype. Final loss: `loss_` after the last epoch "
                 "(scikit-learn and fastmlp start from the same weights and agree to "
                 "rounding; PyTorch draws its own initial weights). Peak memory: MiB traced "
                 "by tracemalloc during an extra one-epoch fit (Python and NumPy "
                 "allocations; not BLAS, compiled code's own mallocs or PyTorch).\n")
        L += _table_head("workload", "variant", "median s", "min-max s", "vs sklearn f64",
                         "vs fastmlp numpy", "GFLOP/s", "of GEMM peak", "final loss",
                         "peak MiB")
        for wid, res in tr.items():
            w = res["workload"]
            wl = f"{wid} {w['name']} ({w['n_samples']} x {w['n_features']}, {w['epochs_run']} ep)"
            for r in res["variants"].values():
                if r.get("error") and not r.get("times"):
                    L.append(_failed_row((wl, r["label"]), r["error"], 10))
                    continue
                loss = "-" if r.get("loss") is None else f"{r['loss']:.4g}"
                L.append(
                    f"| {wl} | {r['label']} | {_fmt_s(r['median'])} | "
                    f"{_fmt_s(r['min'])}-{_fmt_s(r['max'])} | "
                    f"{_fmt_x(r.get('speedup_vs_sklearn_f64'))} | "
                    f"{_fmt_x(r.get('speedup_vs_numpy'))} | {r['gflops']:.2f} | "
                    f"{_fmt_pct(r.get('gemm_fraction'))} | {loss} | "
                    f"{_fmt_mib(r.get('mem_peak_bytes'))} |")
        L.append("")
        L += _render_paired(results)

    pr = results.get("predict")
    if pr:
        n1 = max((st["n"] for r in pr["variants"].values()
                  for op, st in r["ops"].items() if op.endswith("_1")), default=0)
        L.append("## Prediction (W1 model, float64)\n")
        L.append(f"Median time per call; one row: {n1} calls, each timed alone; all rows: "
                 f"{pr['n_rows_all']} rows. Through the public API (input validation "
                 "included), except PyTorch's bare forward.\n")
        L += _table_head("variant", "predict 1 row", "predict_proba 1 row", "predict all rows",
                         "predict_proba all rows", "1-row predict vs sklearn")
        for key, r in pr["variants"].items():
            if r.get("error"):
                L.append(_failed_row((r["label"],), r["error"], 6))
                continue
            o = r["ops"]
            label = r["label"] + (" (bare forward)" if key.startswith("torch") else "")
            L.append(f"| {label} | {_fmt_us(o['predict_1']['median'])} | "
                     f"{_fmt_us(o['proba_1']['median'])} | "
                     f"{_fmt_ms(o['predict_all']['median'])} | "
                     f"{_fmt_ms(o['proba_all']['median'])} | "
                     f"{_fmt_x(o['predict_1'].get('speedup_vs_sklearn'))} |")
        L.append("")

    cs = results.get("cold_start")
    if cs:
        L.append("## Cold start\n")
        L.append(f"A fresh `python` process that imports the library, fits W1 "
                 f"({cs['epochs']} epochs) and predicts one row, timed as a whole process; "
                 f"median and min-max of {results['cold_runs']} interleaved runs. `python` is "
                 "an empty interpreter for reference; 'first' is the first run of the "
                 "session (it may include writing JIT caches). fastmlp's modules are "
                 "byte-compiled first, as `pip install` leaves them"
                 + ("" if cs.get("bytecode", True) else " (**failed**: some were not, and "
                    "their processes compiled them)") + ". Phases, medians in seconds, from "
                 "wall-clock marks in the script: start (the interpreter, to the script's "
                 "first line), import (the library's `MLPClassifier`), data (importing and "
                 "loading digits), fit + predict, exit (the rest: the interpreter's final "
                 "garbage collections and teardown grow with everything imported).\n")
        L += _table_head("variant", "median s", "min-max s", "first s", "vs sklearn",
                         "backend used", "start", "import", "data", "fit + predict", "exit")
        for key, r in cs["variants"].items():
            if not r.get("times"):
                L.append(_failed_row((key,), r.get("error"), 11))
                continue
            ratio = r.get("ratio_vs_sklearn")
            ph = r.get("phase_medians") or {}
            L.append(f"| {key} | {_fmt_s(r['median'])} | {_fmt_s(r['min'])}-{_fmt_s(r['max'])}"
                     f" | {_fmt_s(r['first'])} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x the time'} | "
                     f"{r.get('backend_used') or '-'} | "
                     + " | ".join(_fmt_s(ph[k]) if k in ph else "-" for k in COLD_PHASES)
                     + " |")
        L.append("")

    gs = results.get("gridsearch")
    if gs:
        L.append("## GridSearchCV scaling (joblib threading backend)\n")
        L.append(f"W1 data, grid {gs['grid']} ({gs['cv']}-fold CV, {gs['epochs']} epochs, "
                 "refit=False), median seconds (min-max); speedup = n_jobs=1 / n_jobs=2.\n")
        L += _table_head("variant", "n_jobs=1 s", "n_jobs=2 s", "speedup")
        for key, r in gs["variants"].items():
            if "speedup" not in r:
                L.append(_failed_row((key,), r.get("error"), 4))
                continue
            a, b = r["n_jobs_1_stats"], r["n_jobs_2_stats"]
            L.append(f"| {key} | {_fmt_s(a['median'])} ({_fmt_s(a['min'])}-{_fmt_s(a['max'])})"
                     f" | {_fmt_s(b['median'])} ({_fmt_s(b['min'])}-{_fmt_s(b['max'])}) | "
                     f"{r['speedup']:.2f}x |")
        L.append("")
    gf = results.get("grid_fit_scaling")
    if gf and gf["variants"]:
        L.append("### One fit of the grid: what caps the ratio\n")
        L.append(f"The grid's (64,) candidate, {gf['rows']} rows, {gf['epochs']} epochs; "
                 f"median ms per fit (min-max) over {gf['rounds']} rounds of "
                 f"{gf['fits_per_thread']} fits per thread. "
                 + "; ".join(f"*{k.replace('_', ' ')}*: {v}"
                             for k, v in gf["settings"].items()) + ".\n")
        L.append("Thread scaling = one core / two in threads (how fits in threads scale); "
                 "split gain = one core / alone (what a lone fit already takes from the "
                 "second core); ratio cap = alone / two in threads (the search's "
                 "n_jobs=1 / n_jobs=2 with nothing but fits in it).\n")
        L += _table_head("variant", "alone ms", "one core ms", "two in threads ms",
                         "thread scaling", "split gain", "ratio cap")
        for key, r in gf["variants"].items():
            if r.get("error"):
                L.append(_failed_row((key,), r["error"], 7))
                continue
            cells = [f"{s['median'] * 1e3:.1f} ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f})"
                     for s in (r[f"{k}_stats"] for k in GRID_FIT_SETTINGS)]
            L.append(f"| {key} | " + " | ".join(cells) + f" | {r['thread_scaling']:.2f}x | "
                     f"{r['split_gain']:.2f}x | {r['ratio_cap']:.2f}x |")
        L.append("")

    fl = results.get("floors")
    if fl:
        L.append("## Against the floors of issue 4 (informational, never asserted)\n")
        if results["quick"]:
            L.append("Quick mode: these are not the workloads the floors are defined on.\n")
        L += _table_head("check", "backend", "measured", "floor", "met")
        for f in fl:
            m = f["measured"]
            if m is None:
                ms = "-"
            elif f["unit"] == "frac":
                ms = _fmt_pct(m)
            elif f["unit"] == "us":
                ms = f"{m:.1f} us"
            else:
                ms = _fmt_x(m)
            fs = _fmt_pct(f["floor"]) if f["unit"] == "frac" else (
                f"{f['floor']:g} us" if f["unit"] == "us" else f"{f['floor']:g}x")
            met = "-" if f["met"] is None else ("yes" if f["met"] else "**no**")
            L.append(f"| {f['check']} | {f['backend']} | {ms} | {fs} | {met} |")
        L.append("")
    if results.get("png"):
        L.append(f"![speedup vs scikit-learn float64]({results['png']})\n")
    if results.get("notes"):
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in results["notes"])
        L.append("")
    return "\n".join(L)


_COLORS = {"sklearn": "#7f7f7f", "numpy": "#1f77b4", "numba": "#2ca02c",
           "cython": "#d62728", "torch": "#9467bd"}


def plot_speedups(results, path):
    """``speedup.png``: speedup vs scikit-learn float64 per workload and variant, log scale.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global state).

    Returns
    -------
    bool
        False when matplotlib is missing or there is nothing to plot.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    tr = results.get("training") or {}
    wids = [w for w in tr if tr[w]["variants"].get("sklearn-f64", {}).get("median")]
    keys = []
    for w in wids:
        for k, r in tr[w]["variants"].items():
            if k != "sklearn-f64" and r.get("speedup_vs_sklearn_f64") and k not in keys:
                keys.append(k)
    if not wids or not keys:
        return False
    fig = Figure(figsize=(max(7, 1.6 * len(wids) + 3), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        parts = k.split("-")
        fam = parts[1] if parts[0] == "fastmlp" else parts[0]
        xs, ys = [], []
        for j, w in enumerate(wids):
            s = tr[w]["variants"].get(k, {}).get("speedup_vs_sklearn_f64")
            if s:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(s)
        label = tr[wids[0]]["variants"].get(k, {}).get("label") or k
        ax.bar(xs, ys, width=width, color=_COLORS.get(fam, "#bcbd22"),
               hatch="//" if k.endswith("f32") else None, edgecolor="white", linewidth=0.3,
               label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(wids)))
    ax.set_xticklabels([f"{w}\n{tr[w]['workload']['name']}" for w in wids])
    ax.set_ylabel("speedup vs scikit-learn float64 (median)")
    title = "fastmlp training speed"
    if results["quick"]:
        title += " (quick mode)"
    if results.get("blas_threads"):
        title += f", BLAS and PyTorch limited to {results['blas_threads']} thread(s)"
    ax.set_title(f"{title}, {results['meta']['date'][:10]}")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return True


def _finite(o):
    """Non-finite floats become None: results.json stays strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


# ------------------------------------------------------------------------------------ main
def main(argv=None):
    """Run the benchmarks; write ``results.md``, ``results.json``, ``speedup.png``.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments after ``bench`` (see ``python -m fastmlp bench --help``).

    Returns
    -------
    int
        0 when every variant ran, 1 when some failed (the outputs are written either way).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    if args.blas_threads is None:
        return _run(args, argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.blas_threads):
        return _run(args, argv)


def _run(args, argv):
    import fastmlp

    os.makedirs(args.out, exist_ok=True)
    status = fastmlp.available_backends()
    backends = [b for b, err in status.items() if err is None]
    notes = []
    if args.backends:
        wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
        for b in wanted:
            if b not in status:
                raise SystemExit(f"unknown backend {b!r}; choose from {', '.join(status)}")
            if status[b] is not None:
                notes.append(f"backend {b} was asked for but is not available: {status[b]}")
        backends = [b for b in wanted if status.get(b) is None]
    torch_skipped = None
    if args.no_torch:
        torch_skipped = "--no-torch was given"
    elif not bw.torch_available():
        torch_skipped = "PyTorch is not installed"
    use_torch = torch_skipped is None
    if use_torch and args.blas_threads is not None:
        import torch

        torch.set_num_threads(args.blas_threads)
    if torch_skipped:
        notes.append(f"PyTorch variants skipped: {torch_skipped}.")
    _log(f"backends: {', '.join(backends) or 'none'}; torch: "
         f"{'yes' if use_torch else 'no (' + torch_skipped + ')'}; "
         f"{'QUICK; ' if args.quick else ''}repeats {args.repeats}")
    for b, err in status.items():
        if err:
            _log(f"backend {b} not available: {err}")

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    loadavg_start = _loadavg()
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if loadavg_start and ncpu and loadavg_start[0] > 0.75 * ncpu:
        # other work competes for the cores: threaded BLAS then waits for time slices and
        # small products get many times slower; say so next to the figures
        msg = (f"The machine was busy at the start (load average {loadavg_start[0]:.2f} on "
               f"{ncpu} CPUs): timings are unreliable; compare ratios within the run, and "
               "consider --blas-threads 1.")
        notes.append(msg)
        _log("WARNING: " + msg)
    results = {
        "schema": 1, "quick": bool(args.quick), "repeats": args.repeats,
        "cold_runs": args.cold_runs, "workloads": args.workloads,
        "sections": args.sections, "backends_run": backends,
        "command": "python -m fastmlp bench " + " ".join(argv),
        "blas_threads": args.blas_threads,
        "torch_skipped": torch_skipped, "notes": notes,
    }
    failed = False
    # quick mode: one product per dtype, once (the peak only has to exist, not be precise)
    gemm_reps = 1 if args.quick else 5
    _log(f"GEMM peak ({GEMM_N} x {GEMM_N})" + ("" if args.quick else ", before"))
    g1 = gemm_peak(gemm_reps)

    if "training" in args.sections:
        tr = {}
        for wid in args.workloads:
            _log(f"== {wid}: {bw.get_workload(wid).name}")
            probes = _ceiling_probes(wid, args.quick) if wid == CEILING_WORKLOAD else None
            tr[wid] = run_training(wid, _variants(backends, use_torch), args.repeats,
                                   args.quick, memory=not args.no_memory, probes=probes)
            del probes
            failed |= any(r.get("error") for r in tr[wid]["variants"].values())
        results["training"] = tr
    if args.quick:
        g2 = g1
    else:
        # the machine is shared: measure again after the long section, keep the better
        _log(f"GEMM peak ({GEMM_N} x {GEMM_N}), after")
        g2 = gemm_peak(gemm_reps)
    ceiling = results.get("training", {}).get(CEILING_WORKLOAD)
    rounds = ceiling["probes"] if ceiling else {}
    results["gemm"] = {"n": GEMM_N, "before": g1, "after": g2}
    for d in DTYPES:
        # the run's peak is the best product of the run: before, after, and every round
        times = (g1[d]["times"] + (g2[d]["times"] if g2 is not g1 else [])
                 + rounds.get(f"gemm-{d}", []))
        results["gemm"][d] = {"gflops": _gemm_gflops(min(times)), "times": times}
    if ceiling:
        _ceiling_bounds(results, args.quick)
    if "training" in results:
        _derive_training(results["training"], results["gemm"],
                         results.get("products_alone", {}))

    if "predict" in args.sections:
        _log("== prediction latency (W1 model)")
        results["predict"] = run_predict(backends, args.quick, use_torch)
        failed |= any(r.get("error") for r in results["predict"]["variants"].values())
    if "cold" in args.sections:
        _log("== cold start (fresh processes)")
        results["cold_start"] = run_cold_start(backends, args.cold_runs, args.quick,
                                               blas_threads=args.blas_threads)
        failed |= any(r.get("error") for r in results["cold_start"]["variants"].values())
    if "grid" in args.sections:
        _log("== GridSearchCV scaling")
        results["gridsearch"] = run_gridsearch(backends, 1 if args.quick else 3, args.quick)
        failed |= any(r.get("error") for r in results["gridsearch"]["variants"].values())
        _log("== GridSearchCV: one grid fit alone, on one core, two in threads")
        results["grid_fit_scaling"] = run_grid_fit_scaling(backends, args.quick)
        failed |= any(r.get("error")
                      for r in results["grid_fit_scaling"]["variants"].values())

    results["floors"] = check_floors(results)
    meta = machine_info(status, use_torch)
    meta["finished"] = meta["date"]
    meta["date"] = started  # the run's date is when it started
    meta["loadavg_start"] = loadavg_start
    meta["loadavg_end"] = _loadavg()
    results["meta"] = meta

    png = os.path.join(args.out, "speedup.png")
    if plot_speedups(results, png):
        results["png"] = "speedup.png"
    else:
        results["png"] = None
        notes.append("speedup.png not written (matplotlib missing or no training results).")
    md = render_markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(_finite(results), f, indent=1, default=_json_default, allow_nan=False)
    print(md)
    _log(f"wrote {args.out}/results.md, results.json"
         + (", speedup.png" if results["png"] else ""))
    return 1 if failed else 0
