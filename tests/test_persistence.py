"""Persistence: pickle and joblib round trips, and fastmlp's pickle-free format
(``est.save(path)`` / ``fastmlp.load(path)``), including optimizer state and hostile files."""

import copy
import io
import json
import os
import pickle
import zipfile

import joblib
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.preprocessing import LabelBinarizer

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor
from fastmlp._network import Network
from fastmlp._optim import OptimizerState

BACKENDS = ["numpy", "numba", "cython"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rs = np.random.RandomState(0)
X = _rs.randn(40, 3)
_TASKS = {
    "binary-str": (MLPClassifier, np.array(["no", "yes"])[(X[:, 0] > 0).astype(int)], {}),
    "multiclass-obj": (MLPClassifier,
                       np.array(["a", "b", "c"], dtype=object)[np.arange(40) % 3], {}),
    "bool": (MLPClassifier, X[:, 1] > 0, {}),
    "multilabel": (MLPClassifier, np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(int), {}),
    "regression": (MLPRegressor, np.c_[X[:, 0], X[:, 1] * X[:, 2]], {}),
    "poisson": (MLPRegressor, np.exp(0.3 * X[:, 0]), {"loss": "poisson"}),
}
_SOLVERS = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
                         n_iter_no_change=1, tol=10.0),
    "lbfgs": dict(solver="lbfgs"),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _fit(task, solver, backend, dtype=np.float64, **extra):
    cls, y, kw = _TASKS[task]
    params = dict(hidden_layer_sizes=(5, 4), max_iter=6, random_state=1, backend=backend)
    params.update(kw)
    params.update(_SOLVERS[solver])
    params.update(extra)
    return cls(**params).fit(X.astype(dtype), y), y


def _pickle(est):
    return pickle.loads(pickle.dumps(est))


def _joblib(est, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    return joblib.load(path)


def _fastmlp(est, tmp_path):
    path = tmp_path / "model.fmlp"
    est.save(path)
    return fastmlp.load(path)


def _round_trip(how, est, tmp_path):
    if how == "pickle":
        return _pickle(est)
    if how == "joblib":
        return _joblib(est, tmp_path)
    return _fastmlp(est, tmp_path)


def _assert_same_value(a, b, key):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), key
        assert_array_equal(a, b, err_msg=key, strict=True)
    elif isinstance(a, list) and a and isinstance(a[0], np.ndarray):
        assert len(a) == len(b), key
        for x, y in zip(a, b):
            assert_array_equal(x, y, err_msg=key, strict=True)
    elif isinstance(a, Network):
        assert a == b, key
        assert_array_equal(a.layout, b.layout)
        assert_array_equal(a.act_params, b.act_params)
    elif isinstance(a, OptimizerState):
        assert isinstance(b, OptimizerState), key
        assert vars(a).keys() == vars(b).keys(), key
        for k in vars(a):
            _assert_same_value(getattr(a, k), getattr(b, k), f"{key}.{k}")
    elif isinstance(a, LabelBinarizer):
        assert vars(a).keys() == vars(b).keys(), key
        for k in vars(a):
            _assert_same_value(getattr(a, k), getattr(b, k), f"{key}.{k}")
    elif isinstance(a, np.random.RandomState):
        sa, sb = a.get_state(), b.get_state()
        assert sa[0] == sb[0] and sa[2:] == sb[2:], key
        assert_array_equal(sa[1], sb[1])
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), key
    else:
        assert type(a) is type(b) or (isinstance(a, (int, float)) and a == b), (key, a, b)
        assert a == b, (key, a, b)


def _assert_same_state(a, b, ignore=("_views",)):
    """Every attribute of ``a`` (parameters and fitted state) equals ``b``'s."""
    assert set(vars(a)) - set(ignore) == set(vars(b)) - set(ignore)
    for key in vars(a):
        if key in ignore:
            continue
        if key == "_random_state" and not isinstance(a.random_state, np.random.RandomState):
            # drawn afresh from random_state (None or a seed) by every fit and partial_fit
            continue
        _assert_same_value(getattr(a, key), getattr(b, key), key)


def _assert_views(est):
    for arr in est.coefs_ + est.intercepts_:
        assert np.shares_memory(arr, est._theta)
    saved = est._theta[0]
    est._theta[0] = saved + 1.0
    assert est.coefs_[0].flat[0] == saved + 1.0
    est._theta[0] = saved


def _assert_predicts_identically(a, b, y, dtype=np.float64):
    Xd = X.astype(dtype)
    pa, pb = a.predict(Xd), b.predict(Xd)
    assert_array_equal(pa, pb, strict=True)
    if isinstance(a, MLPClassifier):
        assert_array_equal(a.predict_proba(Xd), b.predict_proba(Xd), strict=True)
        assert_array_equal(a.predict_log_proba(Xd), b.predict_log_proba(Xd), strict=True)
    assert a.score(Xd, y) == b.score(Xd, y)


# ================================================================== round trips, all kinds
@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", list(_SOLVERS))
@pytest.mark.parametrize("task", list(_TASKS))
def test_round_trip_predicts_identically_and_keeps_state(backend, task, solver, dtype, how,
                                                         tmp_path):
    est, y = _fit(task, solver, backend, dtype)
    loaded = _round_trip(how, est, tmp_path)
    assert type(loaded) is type(est)
    _assert_same_state(est, loaded)
    _assert_views(loaded)
    _assert_predicts_identically(est, loaded, y, dtype)
    assert loaded.coefs_[0].dtype == dtype


@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
@pytest.mark.parametrize("solver", ["adam", "sgd-adaptive"])
@pytest.mark.parametrize("task", ["binary-str", "multiclass-obj", "multilabel", "regression"])
def test_partial_fit_after_round_trip(backend, task, solver, how, tmp_path):
    est, y = _fit(task, solver, backend)
    if solver == "sgd-adaptive":
        # the adaptive schedule has divided the rate: that state must travel too
        assert est._optimizer.learning_rate < est.learning_rate_init
    loaded = _round_trip(how, est, tmp_path)
    for _ in range(2):
        est.partial_fit(X, y)
        loaded.partial_fit(X, y)
    _assert_same_state(est, loaded)
    _assert_predicts_identically(est, loaded, y)


@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
@pytest.mark.parametrize("solver", list(_SOLVERS))
def test_warm_start_after_round_trip(backend, solver, how, tmp_path):
    est, y = _fit("multiclass-obj", solver, backend)
    loaded = _round_trip(how, est, tmp_path)
    for e in (est, loaded):
        e.set_params(warm_start=True, max_iter=3)
        e.fit(X, y)
    _assert_same_state(est, loaded)
    _assert_predicts_identically(est, loaded, y)
    # and warm-start continued from the saved weights, not from scratch
    fresh, _ = _fit("multiclass-obj", solver, backend, max_iter=3)
    assert not np.array_equal(fresh._theta, loaded._theta)


def test_joblib_memory_mapped_model_keeps_training(backend, tmp_path):
    # joblib.load(..., mmap_mode="r") (and joblib's parallel workers) hand back read-only
    # arrays; the model must still predict and, as a model that "keeps training", partial_fit
    est, y = _fit("regression", "adam", backend)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path, mmap_mode="r")
    _assert_predicts_identically(est, loaded, y)
    est.partial_fit(X, y)
    loaded.partial_fit(X, y)
    _assert_predicts_identically(est, loaded, y)
    assert_array_equal(est._theta, loaded._theta)


@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
def test_clone_after_round_trip(backend, how, tmp_path):
    est, y = _fit("binary-str", "adam", backend)
    loaded = _round_trip(how, est, tmp_path)
    fresh = clone(loaded)
    assert not hasattr(fresh, "coefs_")
    assert fresh.get_params() == est.get_params()
    refit = fresh.fit(X, y)
    _assert_same_state(est, refit)


@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
def test_round_trip_takes_replaced_coefs(backend, how, tmp_path):
    # a user may assign new arrays to coefs_ / intercepts_; they are part of the model
    est, y = _fit("regression", "adam", backend)
    est.coefs_[0] = est.coefs_[0] * 2.0
    est.intercepts_[-1] = est.intercepts_[-1] + 1.0
    expected = est.predict(X)
    loaded = _round_trip(how, est, tmp_path)
    assert_array_equal(loaded.predict(X), expected)
    _assert_views(loaded)


@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
def test_round_trip_unfitted(how, tmp_path):
    est = MLPClassifier(hidden_layer_sizes=[7, 3], activation=["tanh", "maxout"],
                        activation_params=[{}, {"k": 3}], n_iter_no_change=np.inf,
                        backend="numpy", early_stopping=True)
    loaded = _round_trip(how, est, tmp_path)
    assert not hasattr(loaded, "coefs_")
    assert loaded.get_params() == est.get_params()
    assert type(loaded.get_params()["hidden_layer_sizes"]) is list


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("how", ["pickle", "joblib", "fastmlp"])
def test_round_trip_exotic_configuration(backend, how, tmp_path):
    y = np.arange(40) % 3
    est = MLPClassifier(hidden_layer_sizes=(6, 5, 4), activation=["prelu", "rrelu", "maxout"],
                        activation_params=[{"init": 0.1}, {"lower": 0.1, "upper": 0.2},
                                           {"k": 3}],
                        init="he_normal", max_iter=4, random_state=np.random.RandomState(2),
                        backend=backend, early_stopping=True, validation_fraction=0.2)
    import pandas as pd

    est.fit(pd.DataFrame(X, columns=["u", "v", "w"]), y)
    loaded = _round_trip(how, est, tmp_path)
    _assert_same_state(est, loaded)
    _assert_predicts_identically(est, loaded, y)
    assert_array_equal(loaded.feature_names_in_, ["u", "v", "w"])
    # a RandomState passed as random_state keeps its position: refits draw the same numbers
    for e in (est, loaded):
        e.set_params(early_stopping=False, max_iter=2)
        e.fit(X, y)
    assert_array_equal(est._theta, loaded._theta)


# ================================================================== the fastmlp format
def test_save_uses_the_path_as_given_and_leaves_no_temporary_files(tmp_path):
    est, y = _fit("regression", "adam", "numpy")
    path = tmp_path / "my.model"
    est.save(path)
    est.save(str(path))  # overwriting is atomic (rename of a finished temporary file)
    assert sorted(os.listdir(tmp_path)) == ["my.model"]
    assert_array_equal(fastmlp.load(str(path)).predict(X), est.predict(X))
    buf = io.BytesIO()
    est.save(buf)
    buf.seek(0)
    assert_array_equal(fastmlp.load(buf).predict(X), est.predict(X))


def test_saved_file_is_json_and_numeric_arrays_only(tmp_path):
    est, y = _fit("multiclass-obj", "adam", "numpy")
    path = tmp_path / "m.fmlp"
    est.save(path)
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(["model_json.npy", "theta.npy", "best_theta.npy", "moments.npy",
                            "classes.npy", "lb_classes.npy"])
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            assert npz[name].dtype.kind in "biufU", name
        doc = json.loads(npz["model_json"].tobytes().decode("utf-8"))
    assert doc["class"] == "MLPClassifier"
    assert doc["fastmlp_version"] == fastmlp.__version__
    assert doc["params"]["solver"] == "adam"
    assert doc["fitted"]["network"]["layer_units"] == [3, 5, 4, 3]


def test_save_of_a_loaded_model_is_identical(backend, tmp_path):
    est, y = _fit("multiclass-obj", "sgd-adaptive", backend, early_stopping=True)
    first, second = io.BytesIO(), io.BytesIO()
    est.save(first)
    first.seek(0)
    fastmlp.load(first).save(second)
    a, b = _members(first.getvalue()), _members(second.getvalue())
    assert a.keys() == b.keys()
    for k in a:
        assert_array_equal(a[k], b[k], strict=True)


def test_too_many_layers_refused():
    est = MLPRegressor(hidden_layer_sizes=(2,), max_iter=1, backend="numpy").fit(X, X[:, 0])
    buf = io.BytesIO()
    est.save(buf)
    members = _members(buf.getvalue())
    doc = _doc(members)
    doc["params"]["hidden_layer_sizes"] = [1] * 20000
    with pytest.raises(ValueError, match="implausibly large"):
        _load_bytes(_pack(_with_doc(members, doc)))


def test_callable_init_cannot_be_saved(tmp_path):
    def my_init(rng, fan_in, fan_out, dtype):
        return rng.uniform(-0.1, 0.1, (fan_in, fan_out)).astype(dtype)

    est = MLPRegressor(hidden_layer_sizes=(3,), init=my_init, max_iter=2, backend="numpy")
    est.fit(X, X[:, 0])
    with pytest.raises(ValueError, match=r"(?s)init=.*callable.*pickle"):
        est.save(tmp_path / "m.fmlp")
    assert not os.listdir(tmp_path)


def test_unsupported_labels_cannot_be_saved(tmp_path):
    est, y = _fit("binary-str", "adam", "numpy")
    est.classes_ = np.array([(1, 2), "x"], dtype=object)
    with pytest.raises(ValueError, match="labels"):
        est.save(tmp_path / "m.fmlp")


def test_save_rejects_other_objects(tmp_path):
    from sklearn.neural_network import MLPClassifier as SkMLP

    with pytest.raises(TypeError, match="fastmlp"):
        fastmlp._persist.save(SkMLP(), tmp_path / "m.fmlp")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "nope.fmlp")


# ================================================================== hostile and broken files
@pytest.fixture(scope="module")
def good_bytes():
    est, y = _fit("multiclass-obj", "adam", "numpy")
    buf = io.BytesIO()
    est.save(buf)
    return buf.getvalue(), est


def _members(raw):
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _pack(members, **savez_kw):
    buf = io.BytesIO()
    np.savez(buf, **members, **savez_kw)
    return buf.getvalue()


def _doc(members):
    return json.loads(members["model_json"].tobytes().decode("utf-8"))


def _with_doc(members, doc):
    out = dict(members)
    out["model_json"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)
    return out


def _load_bytes(raw):
    return fastmlp.load(io.BytesIO(raw))


def test_good_bytes_load(good_bytes):
    raw, est = good_bytes
    assert_array_equal(_load_bytes(raw).predict_proba(X), est.predict_proba(X))
    # rewriting the members unchanged still loads: the tests below change one thing each
    assert_array_equal(_load_bytes(_pack(_members(raw))).predict(X), est.predict(X))


@pytest.mark.parametrize("raw", [b"", b"hello", b"PK\x03\x04" + b"\x00" * 40,
                                 b"\x93NUMPY" + b"\x00" * 40, b"{}"])
def test_garbage(raw):
    with pytest.raises(ValueError, match="not a valid fastmlp model file"):
        _load_bytes(raw)


def test_truncated(good_bytes):
    raw, _ = good_bytes
    for cut in sorted(set(np.linspace(1, len(raw) - 1, 40).astype(int))):
        with pytest.raises(ValueError, match="not a valid fastmlp model file"):
            _load_bytes(raw[:cut])


def test_corrupted_bytes(good_bytes):
    raw, est = good_bytes
    expected = est.predict_proba(X)
    rs = np.random.RandomState(0)
    n_errors = 0
    for pos in rs.choice(len(raw), 60, replace=False):
        bad = bytearray(raw)
        bad[pos] ^= 0xFF
        try:
            loaded = _load_bytes(bytes(bad))
        except ValueError as exc:
            assert "not a valid fastmlp model file" in str(exc)
            n_errors += 1
        else:
            # a flipped byte in a field the reader ignores (a timestamp, say): same model
            assert_array_equal(loaded.predict_proba(X), expected)
    assert n_errors > 40  # data and headers are checked (CRC, shapes), not ignored


class _Boom:
    """Unpickling this object would create a directory: the proof of code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_plain_pickle_is_refused_and_not_executed(good_bytes, tmp_path):
    marker = tmp_path / "executed"
    for payload in (pickle.dumps(_Boom(marker)), pickle.dumps(good_bytes[1]),
                    pickle.dumps(_Boom(marker), protocol=0)):
        with pytest.raises(ValueError, match="not a valid fastmlp model file"):
            _load_bytes(payload)
    assert not marker.exists()


@pytest.mark.parametrize("member", ["theta", "model_json", "classes", "moments", "extra"])
def test_object_array_inside_is_refused_and_not_executed(good_bytes, tmp_path, member):
    marker = tmp_path / "executed"
    members = _members(good_bytes[0])
    members[member] = np.array([_Boom(marker), 1], dtype=object)
    raw = _pack(members)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match="(?i)object|unknown array"):
        _load_bytes(raw)
    assert not marker.exists()


def test_unknown_member(good_bytes):
    members = _members(good_bytes[0])
    members["theta_extra"] = np.zeros(3)
    with pytest.raises(ValueError, match="unknown array 'theta_extra'"):
        _load_bytes(_pack(members))


def test_compressed_archive_refused(good_bytes):
    buf = io.BytesIO()
    np.savez_compressed(buf, **_members(good_bytes[0]))
    with pytest.raises(ValueError, match="compressed"):
        _load_bytes(buf.getvalue())


def test_single_npy_refused(good_bytes):
    buf = io.BytesIO()
    np.save(buf, _members(good_bytes[0])["theta"])
    with pytest.raises(ValueError, match=r"\.npy"):
        _load_bytes(buf.getvalue())


def _zip_with(members_raw):
    """A zip whose members are the given raw .npy bytes (to forge headers)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members_raw.items():
            zf.writestr(name + ".npy", data)
    return buf.getvalue()


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_huge_declared_shape_is_refused_without_allocating(good_bytes):
    members = {k: _npy_bytes(v) for k, v in _members(good_bytes[0]).items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**15,)})
    members["theta"] = header.getvalue() + b"\x00" * 64
    with pytest.raises(ValueError, match="declares shape"):
        _load_bytes(_zip_with(members))


def test_huge_layer_sizes_are_refused(good_bytes):
    members = _members(good_bytes[0])
    doc = _doc(members)
    doc["params"]["hidden_layer_sizes"] = {"__tuple__": [10**12, 10**12]}
    doc["fitted"]["network"]["layer_units"] = [3, 10**12, 10**12, 3]
    with pytest.raises(ValueError, match="implausibly large|shape"):
        _load_bytes(_pack(_with_doc(members, doc)))


def _mutations():
    """(name, function changing the members in place, expected message regex)."""

    def doc_change(f):
        def apply(members):
            doc = _doc(members)
            f(doc)
            members.update(_with_doc(members, doc))
        return apply

    def setitem(path, value):
        def f(doc):
            d = doc
            for p in path[:-1]:
                d = d[p]
            d[path[-1]] = value
        return f

    def delitem(path):
        def f(doc):
            d = doc
            for p in path[:-1]:
                d = d[p]
            del d[path[-1]]
        return f

    def array(name, value):
        def apply(members):
            members[name] = value(members)
        return apply

    def drop(name):
        def apply(members):
            del members[name]
        return apply

    def raw_json(text):
        def apply(members):
            members["model_json"] = np.frombuffer(text, dtype=np.uint8)
        return apply

    return [
        ("unknown class", doc_change(setitem(["class"], "os.system")), "unknown estimator"),
        ("sklearn class", doc_change(setitem(["class"], "LogisticRegression")),
         "unknown estimator"),
        ("unknown top key", doc_change(setitem(["__reduce__"], "x")), "unknown key"),
        ("unknown parameter", doc_change(setitem(["params", "exec"], "print(1)")),
         "unknown key"),
        ("bad parameter value", doc_change(setitem(["params", "solver"], "rmsprop")),
         "solver"),
        ("bad parameter type", doc_change(setitem(["params", "alpha"], {"a": 1})),
         "alpha"),
        ("bad tagged value", doc_change(setitem(["params", "alpha"],
                                                {"__class__": "builtins.eval"})), "alpha"),
        ("unknown attribute", doc_change(setitem(["fitted", "attributes", "__class__"], 1)),
         "unknown key"),
        ("missing attribute", doc_change(delitem(["fitted", "attributes", "n_outputs_"])),
         "lacks"),
        ("bad attribute", doc_change(setitem(["fitted", "attributes", "n_iter_"], "many")),
         "n_iter_"),
        ("negative int", doc_change(setitem(["fitted", "attributes", "t_"], -3)), "t_"),
        ("huge int", doc_change(setitem(["fitted", "attributes", "_step"], 2**80)), "_step"),
        ("bad backend", doc_change(setitem(["fitted", "attributes", "backend_"], "evil")),
         "backend_"),
        ("wrong features", doc_change(setitem(["fitted", "attributes", "n_features_in_"], 4)),
         "network|shape"),
        ("network mismatch", doc_change(setitem(["fitted", "network", "hidden_activations"],
                                                ["tanh", "tanh"])), "network"),
        ("bad dtype", doc_change(setitem(["fitted", "dtype"], "object")), "dtype"),
        ("dtype mismatch", doc_change(setitem(["fitted", "dtype"], "float32")), "dtype"),
        ("bad y_type", doc_change(setitem(["fitted", "label_binarizer", "y_type_"],
                                          "continuous")), "label binarizer"),
        ("format", doc_change(setitem(["format"], "pickle")), "format"),
        ("future version", doc_change(setitem(["format_version"], 2)), "format_version 2"),
        ("optimizer solver", doc_change(setitem(["fitted", "optimizer", "solver"], "evil")),
         "solver"),
        ("optimizer rate", doc_change(setitem(["fitted", "optimizer", "learning_rate"],
                                              float("nan"))), "learning_rate"),
        ("not an object", raw_json(b"[1, 2, 3]"), "not an object"),
        ("not json", raw_json(b"{'a': 1}"), "cannot be parsed"),
        ("not utf-8", raw_json(b'{"a": "\xff\xfe"}'), "cannot be parsed"),
        ("deep nesting", raw_json(b"[" * 100000 + b"]" * 100000), "nested|parsed"),
        ("missing json", drop("model_json"), "missing"),
        ("missing theta", drop("theta"), "'theta' is missing"),
        ("missing moments", drop("moments"), "'moments' is missing"),
        ("short theta", array("theta", lambda m: m["theta"][:-1]), "'theta' has shape"),
        ("2-D theta", array("theta", lambda m: m["theta"].reshape(1, -1)), "'theta' has shape"),
        ("int theta", array("theta", lambda m: m["theta"].astype(np.int64)), "dtype"),
        ("float16 theta", array("theta", lambda m: m["theta"].astype(np.float16)), "dtype"),
        ("nan theta", array("theta", lambda m: np.full_like(m["theta"], np.nan)), "finite"),
        ("complex theta", array("theta", lambda m: m["theta"].astype(complex)), "dtype"),
        ("bytes theta", array("theta", lambda m: np.frombuffer(b"x" * 8, "S8")), "dtype"),
        ("record theta", array("theta", lambda m: np.zeros(3, dtype=[("a", "<f8")])),
         "records|dtype"),
        ("moments shape", array("moments", lambda m: m["moments"][:1]), "'moments' has shape"),
        ("moments dtype", array("moments", lambda m: m["moments"].astype(np.float32)),
         "dtype"),
        ("best_theta shape", array("best_theta", lambda m: m["best_theta"][:3]),
         "'best_theta' has shape"),
        ("classes count", array("lb_classes", lambda m: m["lb_classes"][:2]), "classes"),
        ("classes 2-D", array("classes", lambda m: m["classes"].reshape(1, -1)), "classes"),
        ("empty classes", array("classes", lambda m: m["classes"][:0]), "classes"),
        ("stray keys array", array("random_state_keys", lambda m: np.zeros(624, np.uint32)),
         "random_state_keys"),
    ]


@pytest.mark.parametrize("mutation", _mutations(), ids=lambda m: m[0])
def test_hostile_or_inconsistent_content(good_bytes, mutation):
    name, apply, pattern = mutation
    members = _members(good_bytes[0])
    apply(members)
    with pytest.raises(ValueError, match="not a valid fastmlp model file") as info:
        _load_bytes(_pack(members))
    assert __import__("re").search(pattern, str(info.value)), str(info.value)


def test_regressor_file_cannot_claim_classes(tmp_path):
    est, y = _fit("regression", "adam", "numpy")
    buf = io.BytesIO()
    est.save(buf)
    members = _members(buf.getvalue())
    members["classes"] = np.array([0, 1])
    with pytest.raises(ValueError, match="regressor has no classes"):
        _load_bytes(_pack(members))


def test_big_endian_arrays_are_read(good_bytes):
    raw, est = good_bytes
    members = _members(raw)
    for k in ("theta", "best_theta", "moments"):
        members[k] = members[k].astype(">f8")
    loaded = _load_bytes(_pack(members))
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert loaded._theta.dtype == np.float64 and loaded._theta.dtype.isnative


def test_unavailable_backend_falls_back_with_a_warning(good_bytes, monkeypatch):
    from fastmlp import backends

    raw, est = good_bytes
    members = _members(raw)
    doc = _doc(members)
    doc["fitted"]["attributes"]["backend_"] = "cython"
    monkeypatch.setitem(backends._errors, "cython", "not built here (test)")
    monkeypatch.delitem(backends._loaded, "cython", raising=False)
    with pytest.warns(UserWarning, match="cython"):
        loaded = _load_bytes(_pack(_with_doc(members, doc)))
    assert loaded.backend_ != "cython"
    assert_array_equal(loaded.predict(X), est.predict(X))


def test_deepcopy_keeps_views(backend):
    est, y = _fit("regression", "adam", backend)
    dup = copy.deepcopy(est)
    _assert_views(dup)
    assert not np.shares_memory(dup._theta, est._theta)
    _assert_predicts_identically(est, dup, y)
