"""XOR with a 2-2-1 tanh network (seed 000, section 3.10).

XOR is the classic problem a single neuron (logistic regression) cannot solve: its two classes
are not separable by a line. Two tanh hidden units are enough, as in the seed's NumPy code,
which starts from uniform weights in [-1, 1] (``init='uniform'`` here).

A network this small has local minima on XOR: from some starting points the loss settles at
ln(2)/2 = 0.347, with two of the four points left at probability 0.5. The example therefore
restarts from the next ``random_state`` until the four points are fitted, and says how many
starts it took.

Run ``python examples/xor.py``; it prints the predictions and writes ``xor.png`` (the decision
boundary) when matplotlib is installed.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fastmlp import MLPClassifier

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0, 1, 1, 0])


def fit_xor(backend="auto", max_starts=20):
    """Fit a 2-2-1 tanh network to XOR, restarting from new random weights if needed.

    Returns
    -------
    est : MLPClassifier
        The first fit that classifies the four points correctly (or the last one tried).
    starts : int
        Number of fits it took.
    """
    for start in range(max_starts):
        est = MLPClassifier(hidden_layer_sizes=(2,), activation="tanh", init="uniform",
                            solver="lbfgs", alpha=0.0, max_iter=500, random_state=start,
                            backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, Y)
        if np.array_equal(est.predict(X), Y):
            break
    return est, start + 1


def _plot(est, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xx, yy = np.meshgrid(np.linspace(-0.5, 1.5, 200), np.linspace(-0.5, 1.5, 200))
    p = est.predict_proba(np.c_[xx.ravel(), yy.ravel()])[:, 1].reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.contourf(xx, yy, p, levels=20, cmap="RdBu_r", alpha=0.8)
    ax.contour(xx, yy, p, levels=[0.5], colors="k")
    ax.scatter(X[:, 0], X[:, 1], c=Y, cmap="RdBu_r", edgecolors="k", s=120)
    ax.set_title("XOR, 2-2-1 tanh network")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(quick=False, out_dir=".", backend="auto"):
    """Fit XOR, print the predictions, write ``xor.png``.

    Parameters
    ----------
    quick : bool, default=False
        Unused (the example is already fast); kept so every example has the same signature.
    out_dir : str or path-like, default="."
        Where the PNG goes.
    backend : str, default="auto"
        The fastmlp backend.

    Returns
    -------
    dict
        ``predictions``, ``probabilities``, ``accuracy``, ``starts``, ``loss``, ``png``
        (the path, or None without matplotlib).
    """
    from pathlib import Path

    est, starts = fit_xor(backend=backend)
    proba = est.predict_proba(X)[:, 1]
    pred = est.predict(X)
    print(f"2-2-1 tanh network on XOR ({starts} start(s), loss {est.loss_:.2e}):")
    for x, t, p, c in zip(X, Y, proba, pred):
        print(f"  {x.astype(int)} -> P(1) = {p:.4f}, predicted {c}, target {t}")
    accuracy = float(np.mean(pred == Y))
    print(f"accuracy: {accuracy:.0%}")
    png = _plot(est, Path(out_dir) / "xor.png")
    if png:
        print(f"wrote {png}")
    return dict(predictions=pred, probabilities=proba, accuracy=accuracy, starts=starts,
                loss=est.loss_, png=png)


if __name__ == "__main__":
    main()
