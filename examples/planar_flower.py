"""The planar "flower": logistic regression against one tanh hidden layer of 4 units (seed 004).

Two classes of points lie on the petals of a rose curve r = 4 sin(4 t), alternating from
petal to petal, so no straight line separates them. Logistic regression (here an
MLPClassifier with no hidden layer: one sigmoid neuron) draws a line and gets about half of
them right; one hidden layer of 4 tanh units bends the boundary around the petals.

The data are generated as in the course assignment the seed borrows them from (400 points,
a = 4, noise 0.2 on the angle and on the radius, seed 1).

Run ``python examples/planar_flower.py``; it prints both training accuracies and writes
``planar_flower.png`` (both decision boundaries) when matplotlib is installed.
"""

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fastmlp import MLPClassifier


def make_flower(n_samples=400, petal_length=4.0, noise=0.2, seed=1):
    """Points on a rose curve, half of them per class.

    Class ``j`` (0 or 1) takes ``n_samples / 2`` angles ``t`` evenly spaced over
    ``[3.12 j, 3.12 (j + 1)]`` plus N(0, noise^2) noise, and radii
    ``r = petal_length * sin(4 t)`` plus N(0, noise^2) noise; a point is
    ``(r sin t, r cos t)``.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    y : ndarray of shape (n_samples,), int
    """
    rng = np.random.RandomState(seed)
    per_class = n_samples // 2
    X = np.zeros((2 * per_class, 2))
    y = np.zeros(2 * per_class, dtype=int)
    for j in range(2):
        rows = slice(j * per_class, (j + 1) * per_class)
        t = np.linspace(j * 3.12, (j + 1) * 3.12, per_class) + rng.randn(per_class) * noise
        r = petal_length * np.sin(4 * t) + rng.randn(per_class) * noise
        X[rows] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[rows] = j
    return X, y


def fit_models(X, y, max_iter=1000, backend="auto"):
    """Logistic regression (no hidden layer) and one tanh hidden layer of 4 units."""
    common = dict(solver="lbfgs", alpha=1e-4, max_iter=max_iter, random_state=0,
                  backend=backend)
    logistic = MLPClassifier(hidden_layer_sizes=(), **common)
    hidden = MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return logistic.fit(X, y), hidden.fit(X, y)


def _plot(models, titles, X, y, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x0, x1 = X[:, 0].min() - 1, X[:, 0].max() + 1
    y0, y1 = X[:, 1].min() - 1, X[:, 1].max() + 1
    xx, yy = np.meshgrid(np.linspace(x0, x1, 250), np.linspace(y0, y1, 250))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5))
    for ax, est, title in zip(axes, models, titles):
        z = est.predict(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
        ax.contourf(xx, yy, z, cmap="Spectral", alpha=0.8)
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="Spectral", edgecolors="k", s=12)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(quick=False, out_dir=".", backend="auto"):
    """Fit both models on the flower and compare their training accuracies.

    Parameters
    ----------
    quick : bool, default=False
        Fewer L-BFGS iterations (200 instead of 1000).
    out_dir : str or path-like, default="."
        Where the PNG goes.
    backend : str, default="auto"
        The fastmlp backend.

    Returns
    -------
    dict
        ``logistic_accuracy``, ``hidden_accuracy``, ``png``.
    """
    X, y = make_flower()
    logistic, hidden = fit_models(X, y, max_iter=200 if quick else 1000, backend=backend)
    acc_logistic = logistic.score(X, y)
    acc_hidden = hidden.score(X, y)
    print(f"logistic regression (no hidden layer): {acc_logistic:.1%} of the flower right")
    print(f"one hidden layer of 4 tanh units:      {acc_hidden:.1%} of the flower right")
    png = _plot([logistic, hidden],
                [f"logistic regression ({acc_logistic:.0%})",
                 f"4 tanh hidden units ({acc_hidden:.0%})"],
                X, y, Path(out_dir) / "planar_flower.png")
    if png:
        print(f"wrote {png}")
    return dict(logistic_accuracy=acc_logistic, hidden_accuracy=acc_hidden, png=png)


if __name__ == "__main__":
    main()
