"""fastmlp: multilayer perceptrons for scikit-learn users, with the hot loops in compiled code.

>>> from fastmlp import MLPClassifier   # instead of sklearn.neural_network.MLPClassifier
"""

from ._checkout import extend_path as _extend_path

# imported from the source checkout (the current directory shadows the installed package):
# take fastmlp.kernels from the installation (see fastmlp._checkout)
__path__ = _extend_path(__path__, __name__)

from ._estimators import MLPClassifier, MLPRegressor  # noqa: E402
from .backends import available_backends  # noqa: E402

__version__ = "0.1.0"

__all__ = ["MLPClassifier", "MLPRegressor", "available_backends", "check_gradients", "load",
           "__version__"]


def check_gradients(estimator, X, y, eps=1e-6, **kwargs):
    """Largest relative error between backpropagation and central differences.

    See :func:`fastmlp._gradcheck.check_gradients` for the parameters.
    """
    from ._gradcheck import check_gradients as _check

    return _check(estimator, X, y, eps=eps, **kwargs)


def load(path):
    """Load an estimator saved with ``estimator.save(path)`` (no pickle involved).

    See :func:`fastmlp._persist.load`.
    """
    from ._persist import load as _load

    return _load(path)
