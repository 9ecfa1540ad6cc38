"""One BLAS thread per fit while several fits run at once in this process.

``GridSearchCV(..., n_jobs=2)`` with joblib's threading backend runs two fits in two Python
threads; the compiled kernels release the GIL, so both run at once. But each BLAS call of
each fit also asks OpenBLAS for its default number of threads (the number of cores), so two
fits on two cores start four threads that take turns: measured on 2 cores, ``n_jobs=2`` was
then *slower* than ``n_jobs=1`` (0.6-0.7x). joblib limits the inner BLAS threads of its
process-based backends; for threads nobody does. scikit-learn's ``KMeans`` limits BLAS to
one thread for the duration of its fit for the same reason.

:func:`fit_slot` does that for fastmlp: while two or more fastmlp fits run concurrently in
this process, every BLAS library is limited to one thread (through ``threadpoolctl``); when
the last concurrent fit ends the original limits come back. A fit that runs alone is never
limited and never pays for it (``threadpoolctl`` is only touched when a second fit starts).

The limit is process-wide while it holds, like ``threadpoolctl.threadpool_limits``: other
code calling BLAS from other threads during that time also runs on one BLAS thread.
OpenBLAS reads its thread count at each call, so lowering it while another thread is inside
a call is safe (that call finishes with the threads it started with).
"""

import contextlib
import threading

__all__ = ["fit_slot", "concurrent_fits"]

_lock = threading.Lock()
_active = 0
_limiter = None
_controller = None


def _limit_to_one():
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def concurrent_fits():
    """The number of fastmlp fits running now in this process."""
    return _active


@contextlib.contextmanager
def fit_slot():
    """Context manager around one fit: limits BLAS to one thread while others run too."""
    global _active, _limiter
    with _lock:
        _active += 1
        if _active == 2 and _limiter is None:
            _limiter = _limit_to_one()
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active <= 1 and _limiter is not None:
                limiter, _limiter = _limiter, None
                limiter.restore_original_limits()
