"""fastmlp: multilayer perceptrons for scikit-learn users, with the hot loops in compiled code.

>>> from fastmlp import MLPClassifier   # instead of sklearn.neural_network.MLPClassifier
"""

from ._estimators import MLPClassifier, MLPRegressor
from .backends import available_backends

__version__ = "0.1.0"

__all__ = ["MLPClassifier", "MLPRegressor", "available_backends", "__version__"]
