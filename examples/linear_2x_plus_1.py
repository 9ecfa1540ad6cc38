"""y = 2x + 1 with a network without hidden layers (seed 004, "25 or bust").

With no hidden layer, an MLPRegressor is a single linear neuron, ``y = w x + b``, trained
here as in the seed by full-batch gradient descent on half the squared error. It should find
w = 2 and b = 1, and so predict 25 at x = 12 (outside the training range).

Run ``python examples/linear_2x_plus_1.py``; it prints the learned weight, bias and the
prediction at 12, and writes ``linear_2x_plus_1.png`` (the loss curve) when matplotlib is
installed.
"""

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fastmlp import MLPRegressor

X = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0]).reshape(-1, 1)
Y = 2 * X.ravel() + 1


def fit_line(epochs=500, backend="auto"):
    """Full-batch gradient descent (with momentum) on y = 2x + 1.

    Returns
    -------
    MLPRegressor
    """
    est = MLPRegressor(hidden_layer_sizes=(), solver="sgd", batch_size=len(X),
                       learning_rate_init=0.05, momentum=0.9, alpha=0.0, max_iter=epochs,
                       tol=0.0, n_iter_no_change=epochs, shuffle=False, random_state=0,
                       backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, Y)


def _plot(est, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.5))
    ax1.semilogy(est.loss_curve_)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    xs = np.linspace(-2, 13, 50).reshape(-1, 1)
    ax2.plot(xs, est.predict(xs), label="network")
    ax2.scatter(X, Y, label="training data")
    ax2.scatter([12], est.predict([[12.0]]), marker="x", s=80, label="x = 12")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(quick=False, out_dir=".", backend="auto"):
    """Fit y = 2x + 1 and predict at x = 12.

    Parameters
    ----------
    quick : bool, default=False
        Fewer epochs (200 instead of 500).
    out_dir : str or path-like, default="."
        Where the PNG goes.
    backend : str, default="auto"
        The fastmlp backend.

    Returns
    -------
    dict
        ``weight``, ``bias``, ``prediction_at_12``, ``loss_curve``, ``summary``, ``png``.
    """
    est = fit_line(epochs=200 if quick else 500, backend=backend)
    text = est.summary()
    print(text)
    w, b = float(est.coefs_[0][0, 0]), float(est.intercepts_[0][0])
    at_12 = float(est.predict([[12.0]])[0])
    print(f"learned y = {w:.6f} x + {b:.6f} (target y = 2 x + 1)")
    print(f"prediction at x = 12: {at_12:.6f} (target 25)")
    png = _plot(est, Path(out_dir) / "linear_2x_plus_1.png")
    if png:
        print(f"wrote {png}")
    return dict(weight=w, bias=b, prediction_at_12=at_12, loss_curve=list(est.loss_curve_),
                summary=text, png=png)


if __name__ == "__main__":
    main()
