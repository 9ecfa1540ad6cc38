"""Per-fit time of one GridSearchCV-sized fit, alone or several at once in threads.

The fit is one of the grid of ``python -m fastmlp bench``'s GridSearchCV section: (64,)
units on W1's digits, 1198 rows (a 3-fold training split), 50 epochs. The GridSearchCV
ratio ``n_jobs=2`` / ``n_jobs=1`` mixes two things: how well fits in threads run in
parallel, and how much a lone fit already uses the second core (its split batches). Run::

    python benchmarks/grid_fit_scaling.py cython 1 10   # alone, as it runs
    python benchmarks/grid_fit_scaling.py cython 2 10   # two fits at once in threads
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 taskset -c 0 \\
        python benchmarks/grid_fit_scaling.py cython 1 10   # alone on one core

Each run does ``N`` fits in each of ``T`` threads, five times, and prints the median and
minimum wall time per fit (total time over ``T * N``). Figures: benchmarks/RESULTS.md.
"""

import sys
import threading
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits

from fastmlp import MLPClassifier


def main(backend, n_threads, fits_per_thread, repeats=5):
    X, y = load_digits(return_X_y=True)
    X, y = X[:1198], y[:1198]

    def fit():
        MLPClassifier((64,), max_iter=50, tol=0.0, n_iter_no_change=51, random_state=0,
                      backend=backend).fit(X, y)

    def worker():
        for _ in range(fits_per_thread):
            fit()

    fit()  # compile / load, warm caches
    per_fit = []
    for _ in range(repeats):
        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        per_fit.append((time.perf_counter() - t) / (n_threads * fits_per_thread))
    print(f"{backend} threads={n_threads}: per fit median {np.median(per_fit) * 1e3:.1f} ms, "
          f"min {min(per_fit) * 1e3:.1f} ms")


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # 50 epochs end with a ConvergenceWarning
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
