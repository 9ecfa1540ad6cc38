"""scikit-learn's estimator checks, for both estimators on every backend."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmlp import MLPClassifier, MLPRegressor

BACKENDS = ["numpy", "numba", "cython"]


def _estimators():
    # max_iter=100: the setting scikit-learn's own test-suite uses for its MLPs
    for backend in BACKENDS:
        yield MLPClassifier(max_iter=100, backend=backend)
        yield MLPRegressor(max_iter=100, backend=backend)


@parametrize_with_checks(list(_estimators()))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
