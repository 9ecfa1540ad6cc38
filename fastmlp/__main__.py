"""Command line: ``python -m fastmlp demo`` and ``python -m fastmlp bench``."""

import argparse
import sys
import time
import warnings


def demo(argv=None):
    """Fit the digits data with fastmlp (every backend) and scikit-learn; print accuracy and time.

    The first fit of each backend is reported separately from the median of the next ones:
    it includes loading compiled code (and, for Numba without a cache, compiling it).
    """
    parser = argparse.ArgumentParser(prog="python -m fastmlp demo")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per variant")
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    import fastmlp
    from fastmlp import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    params = dict(hidden_layer_sizes=(64,), max_iter=100, random_state=0)
    print(f"fastmlp {fastmlp.__version__}: digits, {X_train.shape[0]} training and "
          f"{X_test.shape[0]} test samples, MLP 64 -> 64 (relu) -> 10, adam, 100 epochs\n")

    variants = [("scikit-learn", lambda: SkMLPClassifier(**params))]
    status = fastmlp.available_backends()
    for name, reason in status.items():
        if reason is None:
            variants.append((f"fastmlp {name}", lambda n=name: MLPClassifier(**params, backend=n)))
    variants.append(("fastmlp auto", lambda: MLPClassifier(**params)))

    rows = []
    for label, make in variants:
        times, est = [], None
        for _ in range(1 + max(args.repeats, 1)):
            est = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                start = time.perf_counter()
                est.fit(X_train, y_train)
                times.append(time.perf_counter() - start)
        accuracy = est.score(X_test, y_test)
        backend = getattr(est, "backend_", "-")
        rows.append((label, backend, accuracy, times[0], float(np.median(times[1:]))))

    base = rows[0][4]
    print(f"{'variant':<18}{'backend_':<10}{'accuracy':>9}{'first fit s':>13}"
          f"{'fit s (median)':>16}{'speed-up':>10}")
    for label, backend, accuracy, first, median in rows:
        print(f"{label:<18}{backend:<10}{accuracy:>9.4f}{first:>13.3f}{median:>16.3f}"
              f"{base / median:>9.1f}x")
    missing = {n: r for n, r in status.items() if r is not None}
    for name, reason in missing.items():
        print(f"\nbackend {name!r} NOT AVAILABLE: {reason}", file=sys.stderr)
    return 0


def bench(argv=None):
    """Run the benchmark workloads (see ``python -m fastmlp bench --help``)."""
    from ._bench import main

    return main(argv)


COMMANDS = {"demo": demo, "bench": bench}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m fastmlp {demo,bench} [options]\n"
              "  demo   fit the digits data with fastmlp and scikit-learn, print accuracy and time\n"
              "  bench  run the benchmark workloads (W1-W6, prediction, cold start)",
              file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
