"""One BLAS thread while fits whose split batches need it are training.

A mid-size network (W3's 100 -> 256 -> 128 -> 10 at 200 rows per batch) is trained fastest as
two half batches in two threads, each half's products on one core; but its half-batch
products are too large for scipy's OpenBLAS to keep on the calling thread by itself, and two
threads each calling a multithreaded GEMM on two cores contend (measured: 5x slower than one
thread). So while such a fit trains, the BLAS libraries of the process are limited to one
thread (threadpoolctl, as scikit-learn's ``KMeans`` does during its fit) and given back
their thread counts when the last such fit ends. Other code using BLAS in other threads of
the process meanwhile runs single-threaded.

The limit is counted, not nested: fits overlapping in threads share one limit, set by the
first and restored by the last, so the original counts come back whatever order the fits
end in. threadpoolctl lets only one thread at a time set a pthreads OpenBLAS's count (its
"controlling thread"; other threads' calls silently do nothing), and the fit that restores
may run in another thread than the one that limited: so the limit and the restore each take
that control under this module's lock and give it up at once.
"""

import contextlib
import os
import threading
import warnings

__all__ = ["ONE_BLAS_THREAD"]


class _OneBlasThread:
    """Process-wide, counted limit of the BLAS libraries to one thread.

    ``with ONE_BLAS_THREAD.hold(wanted) as limited:`` sets the limit when ``wanted`` (and
    nothing when not), and ``limited`` says whether every BLAS library of the process now
    runs one thread (False when threadpoolctl finds none, one refuses, or threadpoolctl
    raises, which is warned once: the kernels then run the halves of a batch one after the
    other, see ``counters[SERIAL]``).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self._limited = False
        self._limiter = None
        self._controller = None
        self._warned = False

    def _blas(self):
        # created on first use, once the kernels have loaded scipy's BLAS (building a
        # controller scans the loaded libraries: ~20 ms)
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller.select(user_api="blas")

    def _acquire(self):
        with self._lock:
            if self._count == 0:
                try:
                    blas = self._blas()
                    if blas.lib_controllers:
                        with _in_control():
                            self._limiter = blas.limit(limits=1)
                        self._limited = all(lib.num_threads == 1
                                            for lib in blas.lib_controllers)
                    else:
                        self._limiter, self._limited = None, False
                except Exception as exc:  # a performance hold must not fail a fit
                    self._limiter, self._limited = None, False
                    self._warn(exc)
            self._count += 1
            return self._limited

    def _warn(self, exc):
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"fastmlp could not limit the BLAS threads with threadpoolctl ({exc!r}); "
                "mini-batches of mid-size networks are split into halves that run one after "
                "the other instead of in two threads (the same model up to rounding, slower "
                "to train).", RuntimeWarning, stacklevel=4)

    def _release(self):
        with self._lock:
            self._count -= 1
            if self._count == 0 and self._limiter is not None:
                with _in_control():
                    self._limiter.restore_original_limits()
                self._limiter, self._limited = None, False

    @contextlib.contextmanager
    def hold(self, wanted):
        """Context manager: the limit while the block runs, if ``wanted``.

        Not in a process forked from the one that imported fastmlp (its kernels keep the
        halves on one thread there anyway, and the parent's lock state is not to be
        trusted).
        """
        if not (wanted and os.getpid() == _IMPORT_PID):
            yield False
            return
        limited = self._acquire()
        try:
            yield limited
        finally:
            self._release()

    @property
    def active(self):
        """Whether the limit is set now (for tests)."""
        return self._count > 0 and self._limited


@contextlib.contextmanager
def _in_control():
    """Make this thread threadpoolctl's controlling thread of OpenBLAS for the block, and
    nobody's after it (another thread's own ``threadpool_limits`` can then take it)."""
    from threadpoolctl import OpenBLASController

    clear = getattr(OpenBLASController, "clear_controlling_thread", None)  # >= 3.6
    if clear is not None:
        clear(force=True)
    try:
        yield
    finally:
        if clear is not None:
            clear(force=False)


ONE_BLAS_THREAD = _OneBlasThread()
_IMPORT_PID = os.getpid()
