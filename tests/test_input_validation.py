"""Bad input gets the exception a scikit-learn user expects, with a message that says what is
wrong; unusual but valid input just works. Every test runs on every backend."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from fastmlp import MLPClassifier, MLPRegressor

BACKENDS = ["numpy", "numba", "cython"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _data(n=30, n_features=3, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, n_features)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def _clf(backend, **kw):
    kw.setdefault("hidden_layer_sizes", (4,))
    kw.setdefault("max_iter", 3)
    kw.setdefault("random_state", 0)
    return MLPClassifier(backend=backend, **kw)


def _reg(backend, **kw):
    kw.setdefault("hidden_layer_sizes", (4,))
    kw.setdefault("max_iter", 3)
    kw.setdefault("random_state", 0)
    return MLPRegressor(backend=backend, **kw)


def _weights_equal(a, b):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(x, y)


# ------------------------------------------------------------------------ bad X and y
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make", [_clf, _reg])
def test_non_finite_X_rejected(backend, make, value):
    X, y = _data()
    X[3, 1] = value
    what = "NaN" if np.isnan(value) else "infinity"
    with pytest.raises(ValueError, match=f"Input X contains {what}"):
        make(backend).fit(X, y)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_y_rejected_regressor(backend, value):
    X, y = _data()
    y = y.astype(float)
    y[5] = value
    what = "NaN" if np.isnan(value) else "infinity"
    with pytest.raises(ValueError, match=f"Input y contains {what}"):
        _reg(backend).fit(X, y)


def test_nan_y_rejected_classifier(backend):
    X, y = _data()
    y = y.astype(float)
    y[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _clf(backend).fit(X, y)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_X_rejected_at_predict(backend, value):
    X, y = _data()
    clf = _clf(backend).fit(X, y)
    X[0, 0] = value
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba):
        with pytest.raises(ValueError, match="Input X contains"):
            method(X)


@pytest.mark.parametrize("make", [_clf, _reg])
def test_empty_X_rejected(backend, make):
    with pytest.raises(ValueError, match="0 sample"):
        make(backend).fit(np.empty((0, 3)), np.empty(0))


@pytest.mark.parametrize("make", [_clf, _reg])
def test_one_dimensional_X_rejected(backend, make):
    X, y = _data()
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        make(backend).fit(X[:, 0], y)


@pytest.mark.parametrize("make", [_clf, _reg])
def test_inconsistent_lengths_rejected(backend, make):
    X, y = _data()
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[30, 29\]"):
        make(backend).fit(X, y[:-1])


@pytest.mark.parametrize("make", [_clf, _reg])
def test_wrong_number_of_features_at_predict(backend, make):
    X, y = _data()
    est = make(backend).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3 features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 4 features"):
        est.predict(np.hstack([X, X[:, :1]]))


@pytest.mark.parametrize("make", [_clf, _reg])
def test_predict_before_fit(backend, make):
    X, _ = _data()
    est = make(backend)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(X)
    if make is _clf:
        for method in (est.predict_proba, est.predict_log_proba):
            with pytest.raises(NotFittedError):
                method(X)


@pytest.mark.parametrize(
    "param, value, listed",
    [
        ("activation", "swishy", ["relu", "tanh", "logistic", "gelu", "maxout"]),
        ("init", "kaiming", ["he_normal", "glorot_uniform", "sklearn"]),
        ("backend", "cuda", ["auto", "numpy", "numba", "cython"]),
        ("solver", "rmsprop", ["lbfgs", "sgd", "adam"]),
        ("learning_rate", "cosine", ["constant", "invscaling", "adaptive"]),
    ],
)
@pytest.mark.parametrize("make", [_clf, _reg])
def test_unknown_option_lists_the_options(backend, make, param, value, listed):
    X, y = _data()
    kw = {"backend": backend, param: value}
    with pytest.raises(InvalidParameterError) as info:
        make(**kw).fit(X, y)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert param in msg and value in msg
    for option in listed:
        assert repr(option) in msg, (option, msg)


def test_unknown_activation_in_per_layer_list(backend):
    X, y = _data()
    with pytest.raises(ValueError, match="swishy"):
        _clf(backend, hidden_layer_sizes=(4, 3), activation=["relu", "swishy"]).fit(X, y)


def test_partial_fit_unseen_labels(backend):
    X, y = _data()
    clf = _clf(backend).partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`"):
        clf.partial_fit(X, y + 1)


def test_partial_fit_needs_classes_first(backend):
    X, y = _data()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        _clf(backend).partial_fit(X, y)


def test_too_few_samples_for_early_stopping_regressor(backend):
    X, y = _data(n=8)
    with pytest.raises(ValueError, match="validation set is too small"):
        _reg(backend, early_stopping=True, validation_fraction=0.1).fit(X, y)


@pytest.mark.parametrize(
    "y", [np.array([0, 1] * 4), np.array([0] + [1] * 7)], ids=["balanced", "one-of-a-class"]
)
def test_too_few_samples_for_early_stopping_classifier(backend, y):
    # scikit-learn raises train_test_split's ValueError here ("test_size = 1 should be ..."
    # or "The least populated class ..."), which names neither early_stopping nor
    # validation_fraction: the user never passed a test_size. The message must say what to
    # change.
    X, _ = _data(n=8)
    with pytest.raises(ValueError) as info:
        _clf(backend, early_stopping=True, validation_fraction=0.1).fit(X, y)
    msg = str(info.value)
    assert "validation_fraction" in msg or "early_stopping" in msg, msg


def test_poisson_rejects_negative_targets(backend):
    X, _ = _data()
    y = X[:, 0]
    with pytest.raises(ValueError, match=r"poisson.*non-negative"):
        _reg(backend, loss="poisson").fit(X, y)
    _reg(backend, loss="poisson").fit(X, np.abs(y))  # zero and positive targets are fine


def test_partial_fit_lbfgs_regressor_is_attribute_error(backend):
    # intended difference: scikit-learn 1.9's MLPRegressor exposes partial_fit for lbfgs
    X, y = _data()
    with pytest.raises(AttributeError, match="partial_fit"):
        _reg(backend, solver="lbfgs").partial_fit(X, y.astype(float))


# ---------------------------------------------------------------- inputs that just work
@pytest.mark.parametrize(
    "labels",
    [
        np.array(["no", "yes"]),
        np.array(["no", "yes"], dtype=object),
        np.array([False, True]),
    ],
    ids=["str", "object", "bool"],
)
def test_label_types(backend, labels):
    X, y = _data()
    ref = _clf(backend).fit(X, y)
    clf = _clf(backend).fit(X, labels[y])
    assert_array_equal(clf.classes_, labels)
    _weights_equal(clf, ref)  # sorted labels binarise exactly as 0/1
    pred = clf.predict(X)
    assert_array_equal(pred, labels[ref.predict(X)])
    assert set(np.unique(pred)) <= set(labels)
    assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))


def test_string_labels_multiclass(backend):
    X, y = _data(n=45)
    y = np.arange(45) % 3
    names = np.array(["ant", "bee", "cat"])
    ref = _clf(backend).fit(X, y)
    clf = _clf(backend).fit(X, names[y])
    assert_array_equal(clf.predict(X), names[ref.predict(X)])
    assert clf.predict_proba(X).shape == (45, 3)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("make", [_clf, _reg])
def test_sparse_same_as_dense(backend, make, fmt):
    X, y = _data()
    X[np.abs(X) < 0.6] = 0.0
    dense = make(backend).fit(X, y)
    Xs = sp.csr_matrix(X).asformat(fmt)
    sparse = make(backend).fit(Xs, y)
    for a, b in zip(sparse.coefs_ + sparse.intercepts_, dense.coefs_ + dense.intercepts_):
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert_allclose(sparse.predict(Xs) if make is _reg else sparse.predict_proba(Xs),
                    dense.predict(X) if make is _reg else dense.predict_proba(X),
                    rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_fortran_and_strided_input(backend, solver):
    X, y = _data()
    ref = _clf(backend, solver=solver).fit(X, y)
    Xf = np.asfortranarray(X)
    assert not Xf.flags.c_contiguous
    big = np.zeros((60, 6))
    big[::2, ::2] = X
    strided = big[::2, ::2]
    assert not strided.flags.c_contiguous and np.shares_memory(strided, big)
    for Xo in (Xf, strided):
        est = _clf(backend, solver=solver).fit(Xo, y)
        _weights_equal(est, ref)
        assert_array_equal(est.predict_proba(Xo), ref.predict_proba(X))


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64, np.uint8])
def test_integer_input(backend, int_dtype):
    rs = np.random.RandomState(1)
    X = rs.randint(0, 5, size=(30, 3)).astype(int_dtype)
    y = (X[:, 0] > 2).astype(int)
    ref = _clf(backend).fit(X.astype(np.float64), y)
    clf = _clf(backend).fit(X, y)
    assert clf.coefs_[0].dtype == np.float64
    _weights_equal(clf, ref)
    assert_array_equal(clf.predict_proba(X), ref.predict_proba(X.astype(np.float64)))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_float32_stays_float32(backend, solver):
    X, y = _data()
    X32 = X.astype(np.float32)
    clf = _clf(backend, solver=solver).fit(X32, y)
    for a in clf.coefs_ + clf.intercepts_:
        assert a.dtype == np.float32
    assert clf.predict_proba(X32).dtype == np.float32
    assert clf.predict_log_proba(X32).dtype == np.float32
    # intended difference from scikit-learn: float64 input to a float32 model is cast to
    # float32 (scikit-learn would upcast the computation to float64)
    assert clf.predict_proba(X).dtype == np.float32
    reg = _reg(backend, solver=solver).fit(X32, X32[:, 0])
    assert reg.coefs_[0].dtype == np.float32
    assert reg.predict(X32).dtype == np.float32
    # float32 fits agree with float64 fits to float32 precision
    clf64 = _clf(backend, solver=solver).fit(X, y)
    assert_allclose(clf.predict_proba(X32), clf64.predict_proba(X), rtol=2e-3, atol=1e-4)


def test_pandas_feature_names(backend):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = _clf(backend).fit(df, y)
    assert_array_equal(clf.feature_names_in_, ["a", "b", "c"])
    ref = _clf(backend).fit(X, y)
    _weights_equal(clf, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_array_equal(clf.predict_proba(df), ref.predict_proba(X))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)
    renamed = pd.DataFrame(X, columns=["x", "b", "c"])
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(renamed)
    with pytest.warns(UserWarning, match="X has feature names, but"):
        ref.predict(df)


def _validated_only(monkeypatch):
    """Take the fast path of prediction away: everything goes through validate_data."""
    for cls in (MLPClassifier, MLPRegressor):
        monkeypatch.setattr(cls, "_kernel_ready", lambda self, X: None)


@pytest.mark.parametrize("make", [_clf, _reg])
def test_fast_prediction_path_equals_the_validating_one(backend, make, monkeypatch):
    """DataFrames with the fitted columns, float64 arrays for a float32 model and
    Fortran-ordered arrays skip validate_data; they give exactly what it gives."""
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    mixed = df.astype({"b": np.float32})  # float32 and float64 columns: float64 values
    est_df = make(backend).fit(df, y)
    est32 = make(backend).fit(X.astype(np.float32), y)
    est = make(backend).fit(X, y)
    cases = [(est_df, df), (est_df, df.iloc[:1]), (est_df, mixed), (est32, X),
             (est32, X[:1]), (est, np.asfortranarray(X)), (est32, np.asfortranarray(X))]
    methods = ["predict"] + (["predict_proba", "predict_log_proba"] if make is _clf else [])
    fast = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, (model, data) in enumerate(cases):
            assert model._kernel_ready(data) is not None, f"case {i} misses the fast path"
            for m in methods:
                fast[i, m] = getattr(model, m)(data)
        _validated_only(monkeypatch)
        for i, (model, data) in enumerate(cases):
            for m in methods:
                want = getattr(model, m)(data)
                assert fast[i, m].dtype == want.dtype
                assert_array_equal(fast[i, m], want, err_msg=f"case {i}, {m}")


def test_dataframes_outside_the_fast_path_keep_validate_datas_behaviour(backend):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = _clf(backend).fit(df, y)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df[["b", "a", "c"]])  # the same names, reordered
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[["a", "b"]])
    nan = df.copy()
    nan.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(nan)
    ints = pd.DataFrame((X * 10).astype(np.int64), columns=["a", "b", "c"])
    assert clf._kernel_ready(ints) is None
    assert_array_equal(clf.predict(ints), clf.predict(ints.astype(np.float64)))
    nullable = df.astype("Float64")  # pandas' extension dtype: values come as objects
    assert clf._kernel_ready(nullable) is None
    assert_array_equal(clf.predict(nullable), clf.predict(df))


@pytest.mark.parametrize("fmt", [None, "csr"])
def test_float64_beyond_float32_range_is_a_clear_error(backend, fmt):
    """A float32 model computes in float32: a finite float64 input, target or sample weight
    it cannot represent gets an error that says so, and no overflow warning."""
    X, y = _data()
    clf = _clf(backend).fit(X.astype(np.float32), y)
    reg = _reg(backend).fit(X.astype(np.float32), X[:, 0])
    row = np.array([[1e39, 0.0, 0.0]])
    if fmt:
        row = sp.csr_matrix(row)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in (clf.predict, clf.predict_proba, clf.predict_log_proba, reg.predict):
            with pytest.raises(ValueError, match="beyond the range of float32"):
                method(row)
        assert np.isfinite(clf.predict_proba(np.array([[3e38, 0.0, 0.0]]))).all()
        big = X.copy()
        big[0, 0] = 1e39
        if fmt:
            big = sp.csr_matrix(big)
        with pytest.raises(ValueError, match="beyond the range of float32"):
            clf.partial_fit(big, y)  # training continues in the weights' float32
        X32 = X.astype(np.float32)
        with pytest.raises(ValueError, match="^y has values beyond the range of float32"):
            _reg(backend).fit(X32, np.where(np.arange(len(y)) == 0, 1e39, 1.0))
        weights = np.ones(len(y))
        weights[0] = 1e39
        with pytest.raises(ValueError, match="^sample_weight has values beyond the range of "):
            _clf(backend).fit(X32, y, sample_weight=weights)


def test_pandas_target_series(backend):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    labels = pd.Series(np.array(["neg", "pos"])[y], dtype="category")
    clf = _clf(backend).fit(pd.DataFrame(X), labels)
    assert set(clf.predict(X)) <= {"neg", "pos"}
    reg = _reg(backend).fit(pd.DataFrame(X), pd.Series(X[:, 0]))
    assert reg.predict(X).shape == (30,)


# -------------------------------------------- label fast paths equal scikit-learn's results
_LABEL_SETS = {
    "multiclass int": np.arange(40) % 5,
    "binary int": np.arange(40) % 2,
    "strings": np.array(["b", "a", "c", "a"] * 10),
    "object strings": np.array(["n", "y"] * 20, dtype=object),
    "bool": np.arange(40) % 3 == 0,
    "integral floats": np.array([1.0, -2.0] * 20),
    "one class": np.array(["only"] * 40),
    "multilabel": (np.arange(80).reshape(40, 2) % 3 == 0).astype(int),
}


@pytest.mark.parametrize("labels", list(_LABEL_SETS))
def test_label_indicator_and_score_equal_sklearn(labels):
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import LabelBinarizer

    y = _LABEL_SETS[labels]
    est = MLPClassifier()
    est._label_binarizer = LabelBinarizer().fit(y)
    for part in (y, y[:7]):
        want = est._label_binarizer.transform(part).astype(bool)
        got = est._indicator(part)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_array_equal(got, want)
    if labels == "one class":
        return  # a classifier needs two classes
    X = np.random.RandomState(0).randn(40, 3)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0,
                        backend="cython").fit(X, y)
    cases = [(y, None), (y[::-1], None), (y, np.linspace(0.5, 2, 40))]
    if y.ndim == 1:  # a search over a DataFrame scores pandas Series folds
        pd = pytest.importorskip("pandas")
        cases += [(pd.Series(y), None), (pd.Series(y[::-1], index=np.arange(40)[::-1]), None),
                  (pd.Series(y, dtype="category"), None)]
    for yy, sw in cases:
        got = est.score(X, yy, sample_weight=sw)
        assert type(got) is float
        assert got == accuracy_score(yy, est.predict(X), sample_weight=sw)
