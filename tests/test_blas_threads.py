"""BLAS held at one thread while a fit of a SPLIT_ONE_BLAS network trains.

Such a network (W3's shape) runs the halves of each batch in two threads, each calling BLAS
with products that a multithreaded BLAS would thread; ``fastmlp._blas_threads`` limits
every BLAS library to one thread for the fit (counted across overlapping fits) and gives the
counts back afterwards, however the fit ends.
"""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastmlp import MLPClassifier, _training
from fastmlp._blas_threads import ONE_BLAS_THREAD
from fastmlp.backends import get_backend


def _blas_threads():
    get_backend("cython")  # loads scipy's BLAS, the one the kernels call
    return {d["filepath"]: d["num_threads"] for d in threadpool_info()
            if d["user_api"] == "blas"}


def test_hold_limits_every_blas_and_restores():
    before = _blas_threads()
    assert before  # scipy's BLAS at least
    with ONE_BLAS_THREAD.hold(True) as limited:
        assert limited and ONE_BLAS_THREAD.active
        assert set(_blas_threads().values()) == {1}
    assert _blas_threads() == before
    assert not ONE_BLAS_THREAD.active
    with ONE_BLAS_THREAD.hold(False) as limited:
        assert not limited
        assert _blas_threads() == before


def test_overlapping_holds_share_one_limit_whatever_order_they_end_in():
    before = _blas_threads()
    first, second = ONE_BLAS_THREAD.hold(True), ONE_BLAS_THREAD.hold(True)
    first.__enter__()
    assert second.__enter__()
    first.__exit__(None, None, None)   # the first ends while the second still trains
    assert set(_blas_threads().values()) == {1}
    second.__exit__(None, None, None)
    assert _blas_threads() == before


def test_holds_from_threads():
    before = _blas_threads()
    barrier = threading.Barrier(3)
    seen = []

    def job():
        with ONE_BLAS_THREAD.hold(True):
            barrier.wait()
            seen.append(set(_blas_threads().values()))
            barrier.wait()

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == [{1}] * 3
    assert _blas_threads() == before


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 100))
    return X, (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)


def _spy_epochs(backend, monkeypatch):
    """Record each epoch's ``counters[SERIAL]`` and the BLAS thread counts it ran with."""
    real = backend.train_epoch
    seen = []

    def spy(*args):
        seen.append((int(args[11][_training.SERIAL]), set(_blas_threads().values())))
        return real(*args)

    monkeypatch.setattr(backend, "train_epoch", spy)
    return seen


@pytest.mark.parametrize("name", ["cython", "numba"])
@pytest.mark.parametrize("hidden, one_blas", [((256, 128), True), ((64,), False)])
def test_fit_holds_blas_only_for_networks_that_need_it(name, hidden, one_blas, monkeypatch):
    backend = get_backend(name)
    seen = _spy_epochs(backend, monkeypatch)
    monkeypatch.setattr(_training.RUNNING_FITS, "HOLD", 0.0)
    before = _blas_threads()
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=hidden, max_iter=2, batch_size=200, tol=0.0,
                        n_iter_no_change=3, random_state=0, backend=name)
    layout, params = est.fit(X, y)._network.layout, est._network.act_params
    assert (backend.split_kind(layout, params, 200, np.float64) == 2) == one_blas
    if one_blas:
        assert seen == [(2, {1}), (2, {1})]
    else:
        assert seen == [(0, set(before.values()))] * 2
    assert _blas_threads() == before


def test_split_min_rows_is_the_kernels():
    from fastmlp.kernels import numba_kernels as nk

    assert _training.SPLIT_MIN_ROWS == nk.SPLIT_MIN_ROWS


@pytest.mark.parametrize("name", ["cython", "numba"])
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("hidden, dtype", [((1024, 1024), np.float32),
                                           ((2048, 1024), np.float64)])
def test_large_fit_holds_blas_while_fits_overlap(name, overlap, hidden, dtype, monkeypatch):
    # batches left whole for the size of their products (float32: a half's 100 x 1024 x
    # 1024 products are over SPLIT_MAX_MNK_F32; float64: 2048 x 1024 weights are over
    # SPLIT_MAX_WEIGHTS_F64), too large for gemm_serial's blocks: alone the fit keeps BLAS's
    # threads; overlapping others, it holds BLAS at one thread to its end
    backend = get_backend(name)
    seen = _spy_epochs(backend, monkeypatch)
    if overlap:
        monkeypatch.setattr(_training.RUNNING_FITS, "serial", lambda: True)
    before = _blas_threads()
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=hidden, max_iter=2, batch_size=200,
                        tol=0.0, n_iter_no_change=3, random_state=0, backend=name)
    layout, params = est.fit(X.astype(dtype), y)._network.layout, est._network.act_params
    assert backend.split_kind(layout, params, 200, dtype) == 0
    if overlap:
        assert seen == [(1, {1}), (1, {1})]
    else:
        assert seen == [(0, set(before.values()))] * 2
    assert _blas_threads() == before
    assert not ONE_BLAS_THREAD.active


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_blas_threads_come_back_when_a_fit_fails(name, monkeypatch):
    backend = get_backend(name)
    before = _blas_threads()

    def fail(*args):
        assert set(_blas_threads().values()) == {1}
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(backend, "train_epoch", fail)
    X, y = _data()
    est = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=2, batch_size=200,
                        backend=name)
    with pytest.raises(RuntimeError, match="kernel failed"):
        est.fit(X, y)
    assert _blas_threads() == before
    assert not ONE_BLAS_THREAD.active


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_held_fit_equals_unheld_fit_to_rounding(name, monkeypatch):
    # where threadpoolctl cannot limit the BLAS, the halves run one after the other with
    # BLAS's own threads: the same model up to the rounding of a multithreaded GEMM
    X, y = _data()

    def fit():
        return MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=3, batch_size=200,
                             random_state=0, backend=name).fit(X, y)

    held = fit()
    monkeypatch.setattr(ONE_BLAS_THREAD, "_acquire", lambda: False)
    monkeypatch.setattr(ONE_BLAS_THREAD, "_release", lambda: None)
    unheld = fit()
    np.testing.assert_allclose(held.loss_curve_, unheld.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(held._theta, unheld._theta, rtol=1e-9, atol=1e-12)


def test_a_failing_threadpoolctl_does_not_fail_the_fit(monkeypatch):
    # the hold is a speed-up: if threadpoolctl raises, the fit runs its halves one after
    # the other (warned once) and gives the same model up to rounding
    import threadpoolctl

    from fastmlp import _blas_threads

    def broken():
        raise OSError("no such library")

    X, y = _data()
    kwargs = dict(hidden_layer_sizes=(256, 128), max_iter=2, batch_size=200, random_state=0,
                  backend="cython")
    held = MLPClassifier(**kwargs).fit(X, y)
    limiter = _blas_threads._OneBlasThread()
    monkeypatch.setattr(_blas_threads, "ONE_BLAS_THREAD", limiter)
    monkeypatch.setattr(_training, "ONE_BLAS_THREAD", limiter)
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", broken)
    with pytest.warns(RuntimeWarning, match="could not limit the BLAS threads"):
        unheld = MLPClassifier(**kwargs).fit(X, y)
    np.testing.assert_allclose(held.loss_curve_, unheld.loss_curve_, rtol=1e-12)
    assert not limiter.active and limiter._count == 0
