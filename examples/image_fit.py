"""A 2 -> 27 -> 31 -> 31 -> 1 ReLU network fitted to an image (seed 004, section 5).

The network maps pixel coordinates (x, y) to the pixel's value (ink or not), so once
trained it *is* the image, at any resolution. The seed fits the same architecture (1973
trainable parameters) to an intercepted two-colour message, starting with a large learning
rate and lowering it as training converges. Here the picture is drawn with NumPy (a face
with two eyes and a smile, no downloads), and the learning rate decays in stages: each stage
sets a smaller ``learning_rate_init`` with ``set_params`` and continues with ``partial_fit``
(the optimizer state carries over between calls).

Run ``python examples/image_fit.py``; it prints ``summary()``, the loss per stage, and writes
``image_fit.png`` (the original next to the reconstruction, rendered at twice the
resolution) when matplotlib is installed.
"""

import warnings
from pathlib import Path

import numpy as np

from fastmlp import MLPClassifier

# (learning rate, epochs) of each stage, as the seed's decaying schedule
STAGES = [(0.01, 150), (0.003, 150), (0.001, 150), (0.0003, 100)]
QUICK_STAGES = [(0.01, 30), (0.003, 20), (0.001, 10)]


def draw_image(size=48):
    """A two-colour picture: a disc (the face) with two round eyes and a smile cut out.

    Returns
    -------
    image : ndarray of shape (size, size), values 0 or 1
    """
    c = np.linspace(-1, 1, size)
    x, y = np.meshgrid(c, -c)  # y up
    face = x**2 + y**2 < 0.85**2
    eyes = ((x - 0.32) ** 2 + (y - 0.25) ** 2 < 0.15**2) | \
           ((x + 0.32) ** 2 + (y - 0.25) ** 2 < 0.15**2)
    r = np.sqrt(x**2 + (y - 0.05) ** 2)
    smile = (np.abs(r - 0.5) < 0.09) & (y < -0.1)
    return (face & ~eyes & ~smile).astype(int)


def pixel_grid(size):
    """Coordinates in [-1, 1]^2 of a size x size grid, one row per pixel (row-major)."""
    c = np.linspace(-1, 1, size)
    x, y = np.meshgrid(c, -c)
    return np.c_[x.ravel(), y.ravel()]


def fit_image(image, stages=STAGES, backend="auto", random_state=0):
    """Fit the 2-27-31-31-1 ReLU network to ``image`` with a decaying learning rate.

    Returns
    -------
    est : MLPClassifier
    losses : list of (learning_rate, loss at the end of the stage)
    """
    X = pixel_grid(image.shape[0])
    y = image.ravel()
    est = MLPClassifier(hidden_layer_sizes=(27, 31, 31), activation="relu", solver="adam",
                        batch_size=64, random_state=random_state, backend=backend)
    losses = []
    first = True
    for lr, epochs in stages:
        est.set_params(learning_rate_init=lr)
        for _ in range(epochs):
            if first:
                est.partial_fit(X, y, classes=np.array([0, 1]))
                losses.append((lr, est.loss_))  # the loss after the first epoch
                first = False
            else:
                est.partial_fit(X, y)
        losses.append((lr, est.loss_))
    return est, losses


def _plot(image, est, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fine = 2 * image.shape[0]
    recon = est.predict_proba(pixel_grid(fine))[:, 1].reshape(fine, fine)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4))
    a.imshow(image, cmap="gray_r", vmin=0, vmax=1)
    a.set_title(f"original ({image.shape[0]} x {image.shape[1]})")
    b.imshow(recon, cmap="gray_r", vmin=0, vmax=1)
    b.set_title(f"network, rendered at {fine} x {fine}")
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(quick=False, out_dir=".", backend="auto"):
    """Draw the image, fit the network, print the summary and the losses, write the PNG.

    Parameters
    ----------
    quick : bool, default=False
        A 24 x 24 image and a shorter schedule instead of 48 x 48.
    out_dir : str or path-like, default="."
        Where the PNG goes.
    backend : str, default="auto"
        The fastmlp backend.

    Returns
    -------
    dict
        ``n_params`` (from the summary), ``summary``, ``losses`` (learning rate, loss) with
        the loss after the first epoch first, ``pixel_accuracy``, ``png``.
    """
    image = draw_image(24 if quick else 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. a backend fallback notice
        est, losses = fit_image(image, QUICK_STAGES if quick else STAGES, backend=backend)
    text = est.summary()
    print(text)
    n_params = int(text.rsplit(":", 1)[1])
    print(f"loss after the first epoch: {losses[0][1]:.4f}")
    for lr, loss in losses[1:]:
        print(f"  stage with learning_rate_init={lr:g}: loss {loss:.4f}")
    accuracy = float(est.score(pixel_grid(image.shape[0]), image.ravel()))
    print(f"pixels right: {accuracy:.1%}")
    png = _plot(image, est, Path(out_dir) / "image_fit.png")
    if png:
        print(f"wrote {png}")
    return dict(n_params=n_params, summary=text, losses=losses, pixel_accuracy=accuracy,
                png=png)


if __name__ == "__main__":
    main()
