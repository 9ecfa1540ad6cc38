"""The benchmark harness (``python -m fastmlp bench``) runs and writes well-formed results.

Only the harness is checked: files exist, the JSON has the expected structure, timings are
finite and positive. No timing is compared with anything (a slow machine must not fail).
"""

import json
import math
import os
import threading

import pytest

from fastmlp import _bench, _bench_workloads


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # W1 in quick mode, NumPy backend only, one round, no cold start (tested below) and no
    # PyTorch: the smallest complete pass through the training, prediction and grid sections.
    # One BLAS thread: on a busy machine, spinning BLAS threads make small products 10x slower
    rc = _bench.main(["--quick", "--workloads", "W1", "--backends", "numpy", "--no-torch",
                      "--repeats", "1", "--sections", "training,predict,grid",
                      "--blas-threads", "1", "--out", str(out)])
    return rc, out


def test_files_written(bench_run):
    rc, out = bench_run
    assert rc == 0
    md = (out / "results.md").read_text()
    assert "| W1 digits" in md and "sklearn f64" in md and "fastmlp numpy f64" in md
    assert "QUICK" in md
    assert "### One fit of the grid: what caps the ratio" in md and "| fastmlp-numpy |" in md
    with open(out / "speedup.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_json_structure(bench_run):
    _, out = bench_run
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] is True and res["workloads"] == ["W1"] and res["blas_threads"] == 1
    meta = res["meta"]
    for key in ("date", "cpu", "versions", "blas", "backends"):
        assert key in meta
    for lib in ("python", "numpy", "scipy", "sklearn", "numba", "cython", "torch"):
        assert lib in meta["versions"]
    for d in ("f64", "f32"):
        assert _positive(res["gemm"][d]["gflops"])

    w1 = res["training"]["W1"]
    assert w1["workload"]["n_params"] == _bench_workloads.n_params("W1") == 4810
    assert set(w1["variants"]) == {"sklearn-f64", "sklearn-f32", "fastmlp-numpy-f64",
                                   "fastmlp-numpy-f32"}
    for r in w1["variants"].values():
        assert r["error"] is None
        assert len(r["times"]) == 1 and all(_positive(t) for t in r["times"])
        for key in ("median", "min", "max", "gflops", "gemm_fraction",
                    "speedup_vs_sklearn_f64", "speedup_vs_numpy", "mem_peak_bytes"):
            assert _positive(r[key]), key
        assert r["min"] <= r["median"] <= r["max"]
        assert math.isfinite(r["loss"])
    assert w1["variants"]["sklearn-f64"]["speedup_vs_sklearn_f64"] == 1.0

    pred = res["predict"]["variants"]
    assert set(pred) == {"sklearn-f64", "fastmlp-numpy-f64"}
    for r in pred.values():
        for op in ("predict_1", "proba_1", "predict_all", "proba_all"):
            assert _positive(r["ops"][op]["median"])
        assert r["ops"]["predict_1"]["n"] >= 1000

    grid = res["gridsearch"]["variants"]
    for r in grid.values():
        assert _positive(r["speedup"])
        assert all(_positive(t) for t in r["n_jobs_1"] + r["n_jobs_2"])

    per_fit = res["grid_fit_scaling"]
    assert per_fit["rows"] == 898  # W1's 1797 rows, one training split of the quick 2-fold CV
    r = per_fit["variants"]["fastmlp-numpy"]
    assert r["error"] is None
    for setting in ("alone", "one_core", "two_in_threads"):
        assert len(r[setting]) == per_fit["rounds"] == 1
        assert all(_positive(t) for t in r[setting])
        assert r[f"{setting}_stats"]["median"] == r[setting][0]
    assert r["thread_scaling"] == pytest.approx(r["one_core"][0] / r["two_in_threads"][0])
    assert r["split_gain"] == pytest.approx(r["one_core"][0] / r["alone"][0])
    assert r["ratio_cap"] == pytest.approx(r["alone"][0] / r["two_in_threads"][0])


def test_grid_fit_scaling_reports_a_failing_backend():
    # an error in a fit (here: in the first one, before any thread) is recorded, not timed
    res = _bench.run_grid_fit_scaling(["no-such-backend"], quick=True)
    r = res["variants"]["fastmlp-no-such-backend"]
    assert "no-such-backend" in r["error"] and "alone" not in r


def test_grid_fit_times_raises_an_error_from_a_thread(monkeypatch):
    # a fit that fails inside a worker thread must not leave a timing behind
    calls = []
    real = _bench_workloads.make_estimator

    def failing_after_warm_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("fit failed in a thread")
        return real(*args, **kwargs)

    monkeypatch.setattr(_bench_workloads, "make_estimator", failing_after_warm_up)
    with pytest.raises(RuntimeError, match="fit failed in a thread"):
        _bench.grid_fit_times("numpy", 2, 1, 1, epochs=1, cv=2)


def test_grid_fit_alone_runs_in_the_calling_thread(monkeypatch):
    # as GridSearchCV(n_jobs=1) does; two at once run in two new threads
    seen = []
    real = _bench_workloads.make_estimator

    def recording(*args, **kwargs):
        # the Thread objects, not get_ident(): a finished thread's ident can be reused
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(_bench_workloads, "make_estimator", recording)
    _bench.grid_fit_times("numpy", 1, 2, 1, epochs=1, cv=2)
    assert all(t is threading.current_thread() for t in seen)
    seen.clear()
    _bench.grid_fit_times("numpy", 2, 1, 1, epochs=1, cv=2)
    workers = seen[1:]
    assert len({id(t) for t in workers}) == 2
    assert threading.current_thread() not in workers


def test_cold_start_runs_fresh_processes():
    res = _bench.run_cold_start(
        [], runs=1, quick=True,
        variants=[("python", "python", "-"), ("sklearn", "sklearn", "-"),
                  ("fastmlp-numpy", "fastmlp", "numpy")],
        blas_threads=1,
    )
    for key, r in res["variants"].items():
        assert r["error"] is None, (key, r["error"])
        assert _positive(r["median"]) and _positive(r["ratio_vs_sklearn"])
    assert res["variants"]["fastmlp-numpy"]["backend_used"] == "numpy"
    assert res["variants"]["sklearn"]["backend_used"] is None
    # each process's phases add up to its wall time (the empty interpreter has none)
    assert "phases" not in res["variants"]["python"]
    for key in ("sklearn", "fastmlp-numpy"):
        r = res["variants"][key]
        assert set(r["phases"]) == set(_bench.COLD_PHASES)
        assert all(_positive(v[0]) for v in r["phases"].values())
        assert sum(v[0] for v in r["phases"].values()) == pytest.approx(r["times"][0],
                                                                         abs=0.05)
    # fastmlp's bytecode was written first (as pip install leaves it), so the processes load
    # it instead of compiling fastmlp's sources each time
    assert res["bytecode"] is True
    import importlib.util

    import fastmlp._estimators
    assert os.path.exists(importlib.util.cache_from_source(fastmlp._estimators.__file__))


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown workload"):
        _bench.main(["--workloads", "W9"])
    with pytest.raises(SystemExit):
        _bench.main(["--sections", "nope"])


def test_products_alone():
    # the ceiling of a workload: the products of one fit, timed by themselves
    res = _bench.products_alone("W1", quick=True, repeats=2)
    w = _bench_workloads.get_workload("W1")
    flops = _bench_workloads.training_flops("W1", w.quick_rows, w.quick_epochs)
    for d in ("f64", "f32"):
        r = res[d]
        assert len(r["times"]) == 2 and all(_positive(t) for t in r["times"])
        assert r["median"] == pytest.approx(sum(r["times"]) / 2)
        assert r["gflops"] == pytest.approx(flops / r["median"] / 1e9)


def test_optimizer_alone_takes_as_many_steps_as_a_fit():
    # the other half of W4's bound: one fused step per batch of every epoch, on the
    # workload's parameter count, timed by itself
    res = _bench.optimizer_alone("W1", quick=True, repeats=2)
    w = _bench_workloads.get_workload("W1")
    est = _bench_workloads.make_estimator("fastmlp", "W1", w.quick_epochs, "cython")
    _bench_workloads.fit_estimator(est, *_bench_workloads.make_data("W1", quick=True))
    steps = -(-w.quick_rows // w.batch_size) * w.quick_epochs
    n_params = sum(c.size + b.size for c, b in zip(est.coefs_, est.intercepts_))
    for d in ("f64", "f32"):
        r = res[d]
        assert r["steps"] == steps == est._optimizer.adam_t
        assert r["n_params"] == n_params
        assert len(r["times"]) == 2 and all(_positive(t) for t in r["times"])
        itemsize = 8 if d == "f64" else 4
        assert r["bytes_per_s"] == pytest.approx(
            7 * r["n_params"] * itemsize * steps / r["median"])


def test_report_states_the_optimizer_bound_or_that_it_is_missing(bench_run):
    # the header gives products + optimizer as a fraction of the peak, or says why not
    _, out = bench_run
    res = json.loads((out / "results.json").read_text())
    res["products_alone"] = {"W4": {d: {"times": [1.0] * 3, "median": 1.0, "gflops": 90.0,
                                        "gemm_fraction": 0.9}
                                    for d in ("f64", "f32")}}
    res["optimizer_alone"] = {"W4": {d: {"median": 0.25, "steps": 158, "n_params": 1863690,
                                         "bytes_per_s": 4e10,
                                         "with_products_gemm_fraction": 0.72}
                                     for d in ("f64", "f32")}}
    md = _bench.render_markdown(res)
    line = next(ln for ln in md.splitlines() if "optimizer steps alone" in ln)
    assert "158 steps over 1,863,690 parameters" in line
    assert line.count("products + optimizer 72.0 % of the peak") == 2
    assert line.count("40.0 GB/s") == 2
    res["optimizer_alone"] = {"W4": None}
    md = _bench.render_markdown(res)
    assert "W4's optimizer steps alone: not measured" in md


@pytest.mark.parametrize("n_lead", [1, 2])
def test_failed_row_has_as_many_cells_as_its_table(n_lead):
    # a failed variant's row must line up with the header, or the Markdown table breaks
    head, sep = _bench._table_head(*[f"c{i}" for i in range(6)])
    row = _bench._failed_row([f"v{i}" for i in range(n_lead)], "x" * 200, 6)
    assert head.count("|") == sep.count("|") == row.count("|") == 7
    assert f"failed: {'x' * 80} |" in row
    assert _bench._failed_row(["v"], None, 6).startswith("| v | failed:  |")


def test_probes_are_timed_once_per_round_after_the_fits(monkeypatch):
    # the peak and W4's bounds are timed in the same rounds as the fits they are read against
    fits_before = []  # how many fits had run when each probe ran
    fits = []

    def probe():
        fits_before.append(len(fits))
        return 0.5

    fit_variant = _bench._fit_variant

    def counting_fit(v, *args):
        model = fit_variant(v, *args)
        fits.append(v["key"])
        return model

    monkeypatch.setattr(_bench, "_fit_variant", counting_fit)
    variants = [v for v in _bench._variants(["numpy"], False) if v["dtype"] == "f64"]
    res = _bench.run_training("W1", variants, 2, True, memory=False, probes={"p": probe})
    assert res["probes"] == {"p": [0.5, 0.5]}
    # warm-up fits (2) + one round's fits (2) before the first probe, another round's after
    assert fits_before == [4, 6]


def _ceiling_results(fit_times, rounds):
    wid = _bench.CEILING_WORKLOAD
    res = {"training": {wid: {"variants": {
        "fastmlp-cython-f64": {"label": "fastmlp cython f64", "dtype": "f64",
                               "times": fit_times["f64"]},
        "fastmlp-cython-f32": {"label": "fastmlp cython f32", "dtype": "f32",
                               "times": fit_times["f32"]}},
        "probes": rounds}}}
    res["gemm"] = {d: {"gflops": 2.0 * 2048**3 / min(rounds[f"gemm-{d}"]) / 1e9}
                   for d in ("f64", "f32")}
    return res


def test_ceiling_bounds_pair_each_round_with_its_own_peak():
    wid = _bench.CEILING_WORKLOAD
    flops = _bench_workloads.training_flops(wid, *_bench._fit_size(wid, True)[:2])
    peak = 2.0 * 2048**3
    # round 2 is a slow minute of the machine: the peak and the fit both take twice as long
    rounds = {f"gemm-{d}": [peak / 1e11, peak / 5e10] for d in ("f64", "f32")}
    rounds.update({f"products-{d}": [flops / 0.95e11, flops / 0.475e11] for d in ("f64", "f32")})
    rounds.update({f"optimizer-{d}": [flops / 1e12, flops / 0.5e12] for d in ("f64", "f32")})
    fits = {d: [flops / 0.86e11, flops / 0.43e11] for d in ("f64", "f32")}
    res = _ceiling_results(fits, rounds)
    _bench._ceiling_bounds(res, True)
    for d in ("f64", "f32"):
        r = res["training"][wid]["variants"][f"fastmlp-cython-{d}"]
        assert r["gemm_fraction_paired"]["rounds"] == pytest.approx([0.86, 0.86])
        pa = res["products_alone"][wid][d]
        assert pa["gemm_fraction_paired"]["median"] == pytest.approx(0.95)
        # against the run's best peak the median products pass reads lower
        assert pa["gemm_fraction"] == pytest.approx(flops / pa["median"] / 1e11)
        assert pa["gemm_fraction"] < 0.95
        oa = res["optimizer_alone"][wid][d]
        both = 1 / (1 / 0.95e11 + 1 / 1e12) / 1e11
        assert oa["with_products_gemm_fraction_paired"]["median"] == pytest.approx(both)
        assert oa["steps"] == _bench._fit_steps(wid, True)
    md = "\n".join(_bench._render_paired(res))
    assert "### W4 against the GEMM peak of its own round" in md
    assert "| fastmlp cython f32 | 86.0 % | 86.0 %-86.0 % |" in md
    assert "| products alone float64 | 95.0 % |" in md
    # without the Cython backend there is no optimizer probe, and no bound from it
    rounds = {k: v for k, v in rounds.items() if not k.startswith("optimizer")}
    res = _ceiling_results(fits, rounds)
    _bench._ceiling_bounds(res, True)
    assert res["optimizer_alone"] == {wid: None}
