"""Saving and loading estimators without pickle.

A model file is a NumPy ``.npz`` archive (an uncompressed zip of ``.npy`` arrays) holding

- ``model_json``: a ``uint8`` array with the UTF-8 bytes of one JSON document: the format
  name and version, the class name, the fastmlp version, the constructor parameters, and, for a
  fitted estimator, the network description and every fitted scalar or list attribute;
- numeric arrays: ``theta`` (all weights and biases, one flat vector in the dtype of the
  training data), ``best_theta``, ``moments`` (the optimizer's moment vectors), ``classes`` and
  ``lb_classes`` (class labels as numeric, boolean or fixed-width unicode arrays — never
  object arrays) and ``random_state_keys`` (the Mersenne-Twister key of a ``RandomState``
  passed as ``random_state``).

:func:`load` trusts nothing in the file. It reads arrays only with
``np.load(..., allow_pickle=False)``, inspects each array's header (dtype and shape) before
reading it, accepts only the member names, JSON keys, class names and parameter names it
knows, checks every array's dtype and shape against what the JSON implies, and rebuilds the
network from the parameters to check that the weights fit it. Anything else — a truncated or
corrupted archive, a pickle, an object array, an unknown key, a wrong shape, a huge declared
size — raises a :class:`ValueError` that says what is wrong. Nothing in the file is executed
or imported.
"""

import io
import json
import math
import os
import tempfile
import warnings
import zipfile
from numbers import Integral, Real

import numpy as np

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastmlp-model"
"""Value of the ``format`` key of the JSON document."""

FORMAT_VERSION = 1
"""Version of the file layout written by :func:`save` (the only one :func:`load` reads)."""

_JSON_MEMBER = "model_json"
_MEMBERS = {"model_json", "theta", "best_theta", "moments", "classes", "lb_classes",
            "random_state_keys"}
_MAX_JSON_BYTES = 256 * 2**20
_MAX_UNITS = 2**31  # per layer; keeps every product of the layout within int64
_MAX_LAYERS = 10_000
_INT64_MAX = 2**63 - 1
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CLASS_KINDS = "biufU"  # bool, signed/unsigned int, float, unicode
_OUT_ACTIVATIONS = ("identity", "logistic", "softmax", "exp")
_Y_TYPES = ("binary", "multiclass", "multilabel-indicator")
_LR_SCHEDULES = ("constant", "invscaling", "adaptive")


class _Invalid(Exception):
    """Internal: a problem with the file; turned into a ValueError by :func:`load`."""


# ============================================================================ JSON helpers
def _is_int(v):
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v):
    return isinstance(v, Real) and not isinstance(v, (bool, np.bool_))


def _encode_param(name, value, arrays):
    """A constructor parameter as JSON data (tuples and RandomState instances tagged)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if _is_int(value):
        return int(value)
    if _is_real(value):
        return float(value)
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state(legacy=True)
        if kind != "MT19937":  # pragma: no cover - RandomState only has MT19937
            raise ValueError(f"Cannot save a RandomState with a {kind} generator.")
        arrays["random_state_keys"] = np.asarray(keys, dtype=np.uint32)
        return {"__random_state__": {"pos": int(pos), "has_gauss": int(has_gauss),
                                     "cached_gaussian": float(cached)}}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_param(name, v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode_param(name, v, arrays) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.ndim == 1:
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode_param(name, v, arrays) for k, v in value.items()}}
    if callable(value):
        raise ValueError(
            f"Cannot save {name}={value!r}: a callable is code, and the fastmlp file format "
            "stores data only. Use one of the named options of this parameter, or pickle "
            "the estimator (pickle/joblib) if you trust whoever will load it."
        )
    raise ValueError(
        f"Cannot save {name}={value!r} (type {type(value).__name__}): the fastmlp file "
        "format stores parameters that are None, booleans, numbers, strings, and lists, "
        "tuples or dicts of those."
    )


def _decode_param(name, value, arrays, depth=0):
    """Inverse of :func:`_encode_param`; raises :class:`_Invalid` on anything unexpected."""
    if depth > 8:
        raise _Invalid(f"parameter {name!r} is nested too deeply")
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_decode_param(name, v, arrays, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) == 1 and "__tuple__" in value:
        items = value["__tuple__"]
        if not isinstance(items, list):
            raise _Invalid(f"parameter {name!r}: a tagged tuple must hold a list")
        return tuple(_decode_param(name, v, arrays, depth + 1) for v in items)
    if isinstance(value, dict) and len(value) == 1 and "__dict__" in value:
        items = value["__dict__"]
        if not isinstance(items, dict):
            raise _Invalid(f"parameter {name!r}: a tagged dict must hold an object")
        return {k: _decode_param(name, v, arrays, depth + 1) for k, v in items.items()}
    if isinstance(value, dict) and set(value) == {"__ndarray__", "dtype"}:
        try:
            dtype = np.dtype(value["dtype"]) if isinstance(value["dtype"], str) else None
        except TypeError:
            dtype = None
        items = value["__ndarray__"]
        if (dtype is None or dtype.kind not in "biuf" or not isinstance(items, list)
                or not all(isinstance(v, (bool, int, float)) for v in items)):
            raise _Invalid(f"parameter {name!r}: bad tagged array")
        return np.asarray(items, dtype=dtype)
    if isinstance(value, dict) and set(value) == {"__random_state__"}:
        if name != "random_state":
            raise _Invalid(f"parameter {name!r} cannot be a RandomState")
        st = value["__random_state__"]
        if not isinstance(st, dict) or set(st) != {"pos", "has_gauss", "cached_gaussian"}:
            raise _Invalid("random_state: bad RandomState description")
        keys = arrays.get("random_state_keys")
        if keys is None:
            raise _Invalid("random_state is a RandomState but 'random_state_keys' is missing")
        _check_array("random_state_keys", keys, shape=(624,), dtypes=(np.dtype(np.uint32),))
        pos, has_gauss, cached = st["pos"], st["has_gauss"], st["cached_gaussian"]
        if not (_is_int(pos) and 0 <= pos <= 624 and has_gauss in (0, 1)
                and _is_real(cached) and math.isfinite(cached)):
            raise _Invalid("random_state: bad RandomState description")
        rs = np.random.RandomState()
        rs.set_state(("MT19937", keys.astype(np.uint32), int(pos), int(has_gauss),
                      float(cached)))
        return rs
    raise _Invalid(f"parameter {name!r} has an unexpected value {_short(value)}")


def _short(value, n=80):
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _plain(value):
    """NumPy scalars (and lists of them) as plain Python numbers for JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# ====================================================================== fitted attributes
def _v_int(lo=0):
    def check(v):
        return _is_int(v) and lo <= v <= _INT64_MAX
    return check


def _v_float(v):
    return _is_real(v)


def _v_float_or_none(v):
    return v is None or _is_real(v)


def _v_float_list(v):
    return isinstance(v, list) and all(_is_real(x) for x in v)


def _v_float_list_or_none(v):
    return v is None or _v_float_list(v)


def _v_choice(options):
    def check(v):
        return isinstance(v, str) and v in options
    return check


def _v_str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# name -> validator of the JSON value; every one is optional (a solver sets only some)
_ATTRIBUTES = {
    "n_iter_": _v_int(),
    "t_": _v_int(),
    "n_outputs_": _v_int(1),
    "n_layers_": _v_int(2),
    "n_features_in_": _v_int(1),
    "out_activation_": _v_choice(_OUT_ACTIVATIONS),
    "backend_": lambda v: isinstance(v, str),  # checked against the registry below
    "loss_": _v_float,
    "best_loss_": _v_float_or_none,
    "loss_curve_": _v_float_list,
    "validation_scores_": _v_float_list_or_none,
    "best_validation_score_": _v_float_or_none,
    "feature_names_in_": _v_str_list,
    "_no_improvement_count": _v_int(),
    "_step": _v_int(),
    "_rrelu_seed": _v_int(),
}
_REQUIRED_ATTRIBUTES = ("n_outputs_", "n_layers_", "n_features_in_", "out_activation_",
                        "backend_", "n_iter_", "t_", "_step", "_rrelu_seed")

_FITTED_KEYS = {"dtype", "network", "attributes", "optimizer", "label_binarizer",
                "classes_kind"}
_TOP_KEYS = {"format", "format_version", "class", "fastmlp_version", "params", "fitted"}


def _estimator_classes():
    from ._estimators import MLPClassifier, MLPRegressor

    return {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}


# =================================================================================== save
def save(est, path):
    """Save an estimator's configuration, weights and optimizer state without pickle.

    The file is a NumPy ``.npz`` archive holding one JSON document (class, fastmlp version,
    constructor parameters, network description, fitted scalar and list attributes) and
    numeric arrays (the flat weight vector, the best weights kept for early stopping, the
    optimizer's moments, the class labels). It is written to a temporary file next to
    ``path`` and then renamed, so an interrupted save never leaves a half-written model
    under ``path``. Read it back with :func:`load` (or :func:`fastmlp.load`).

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        A fastmlp estimator, fitted or not.
    path : str, path-like or writable binary file object
        Where to write. The name is used as given (no ``.npz`` suffix is added).

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If a parameter cannot be stored as data: a callable ``init``, an object that is
        not a number, string, list, tuple or dict, or class labels that are neither
        numbers, booleans nor strings.
    TypeError
        If ``est`` is not a fastmlp estimator.

    See Also
    --------
    load : read a model saved by this function.

    Examples
    --------
    >>> import numpy as np, fastmlp, tempfile, os
    >>> X = np.random.RandomState(0).randn(20, 3); y = (X[:, 0] > 0).astype(int)
    >>> clf = fastmlp.MLPClassifier((5,), max_iter=5, backend="numpy").fit(X, y)
    ... # doctest: +SKIP
    >>> path = os.path.join(tempfile.mkdtemp(), "model.fmlp")  # doctest: +SKIP
    >>> clf.save(path)  # doctest: +SKIP
    >>> (fastmlp.load(path).predict(X) == clf.predict(X)).all()  # doctest: +SKIP
    True
    """
    classes = _estimator_classes()
    name = type(est).__name__
    if name not in classes or not isinstance(est, classes[name]):
        raise TypeError(
            f"save() takes a fastmlp MLPClassifier or MLPRegressor, got {type(est).__name__}."
        )
    arrays = {}
    params = {}
    for key, value in est.get_params(deep=False).items():
        params[key] = _encode_param(key, value, arrays)

    fitted = None
    if hasattr(est, "_theta"):
        fitted = _describe_fitted(est, arrays)

    from . import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        "fastmlp_version": __version__,
        "params": params,
        "fitted": fitted,
    }
    text = json.dumps(doc, allow_nan=True, sort_keys=True)
    arrays[_JSON_MEMBER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    if hasattr(path, "write"):
        np.savez(path, **arrays)
        return None
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return None


def _describe_fitted(est, arrays):
    est._sync_theta()  # take coefs_ / intercepts_ a user replaced, as pickling does
    theta = est._theta
    arrays["theta"] = theta
    if getattr(est, "_best_theta", None) is not None:
        arrays["best_theta"] = est._best_theta
    attributes = {}
    for key in _ATTRIBUTES:
        if hasattr(est, key):
            value = getattr(est, key)
            if key == "feature_names_in_":
                value = [str(v) for v in value]
            attributes[key] = _plain(value)

    optimizer = None
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        arrays["moments"] = opt.moments
        optimizer = {
            "solver": opt.solver,
            "learning_rate_init": float(opt.learning_rate_init),
            "learning_rate": float(opt.learning_rate),
            "lr_schedule": opt.lr_schedule,
            "power_t": float(opt.power_t),
            "adam_t": int(opt.adam_t),
        }

    label_binarizer = None
    classes_kind = None
    if hasattr(est, "classes_"):
        arrays["classes"], classes_kind = _encode_classes(est.classes_)
        lb = est._label_binarizer
        lb_classes, _ = _encode_classes(lb.classes_)
        arrays["lb_classes"] = lb_classes
        label_binarizer = {
            "neg_label": _plain(lb.neg_label),
            "pos_label": _plain(lb.pos_label),
            "sparse_output": bool(lb.sparse_output),
            "y_type_": lb.y_type_,
            "sparse_input_": bool(lb.sparse_input_),
        }
    return {
        "dtype": theta.dtype.name,
        "network": _json_ready(est._network.describe()),
        "attributes": attributes,
        "optimizer": optimizer,
        "label_binarizer": label_binarizer,
        "classes_kind": classes_kind,
    }


def _encode_classes(classes):
    """Class labels as a numeric, boolean or unicode array, and whether they were objects."""
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"Cannot save classes_ of shape {classes.shape}: expected 1-D.")
    if classes.dtype.kind in _CLASS_KINDS:
        return classes, "array"
    if classes.dtype.kind == "O":
        items = classes.tolist()
        if all(isinstance(v, str) for v in items):
            return np.array(items, dtype=str) if items else np.array([], dtype="<U1"), "object"
        if all(isinstance(v, (bool, np.bool_)) for v in items):
            return np.array(items, dtype=bool), "object"
        if all(_is_int(v) for v in items):
            return np.array(items, dtype=np.int64), "object"
        if all(_is_real(v) for v in items):
            return np.array(items, dtype=np.float64), "object"
    raise ValueError(
        f"Cannot save class labels of dtype {classes.dtype} ({_short(classes.tolist())}): the "
        "fastmlp file format stores labels that are numbers, booleans or strings."
    )


# =================================================================================== load
def load(path):
    """Load an estimator saved with :func:`save` (``estimator.save(path)``).

    The file is read as data only: ``np.load(..., allow_pickle=False)``, every array's
    dtype and shape checked before use, only known class names, parameter names and keys
    accepted. The estimator is rebuilt so that it predicts exactly as the saved one and
    keeps training from the saved state (``partial_fit`` continues with the saved optimizer
    moments and learning rate; ``warm_start=True`` continues from the saved weights).

    Parameters
    ----------
    path : str, path-like or readable binary file object
        A file written by :func:`save`.

    Returns
    -------
    estimator : MLPClassifier or MLPRegressor
        The estimator, fitted if the saved one was.

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        If ``path`` cannot be opened.
    ValueError
        If the file is not a fastmlp model file, or is truncated, corrupted or
        inconsistent (an object array or a pickle inside, an unknown key, class or
        parameter, an array whose dtype or shape does not match the network, a size larger
        than the file, non-finite weights). The message says what is wrong.

    Warns
    -----
    UserWarning
        If the backend that trained the model does not load here; ``backend_`` is then
        resolved again as for ``backend='auto'``.

    See Also
    --------
    save : write a model.
    """
    if hasattr(path, "read"):
        return _load_fileobj(path, "the file object")
    path = os.fspath(path)
    with open(path, "rb") as fh:  # FileNotFoundError & co. propagate as they are
        return _load_fileobj(fh, repr(path))


def _load_fileobj(fh, where):
    try:
        raw = fh.read()
    except OSError as exc:
        raise ValueError(f"Cannot read a fastmlp model from {where}: {exc}") from exc
    if not isinstance(raw, bytes):
        raise ValueError(f"{where} must be opened in binary mode.")
    try:
        return _load_bytes(raw)
    except _Invalid as exc:
        raise ValueError(f"{where} is not a valid fastmlp model file: {exc}.") from None
    except MemoryError:
        raise ValueError(
            f"{where} is not a valid fastmlp model file: it declares more data than fits "
            "in memory."
        ) from None
    except RecursionError:
        raise ValueError(
            f"{where} is not a valid fastmlp model file: its JSON is nested too deeply."
        ) from None
    except Exception as exc:  # zip, npy and JSON parsers; anything unforeseen
        raise ValueError(
            f"{where} is not a valid fastmlp model file (it may be truncated or corrupted): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _load_bytes(raw):
    if not raw.startswith(b"PK\x03\x04"):
        if raw.startswith(b"\x93NUMPY"):
            raise _Invalid("it is a single .npy array, not a .npz archive written by save()")
        if raw[:1] == b"\x80":
            raise _Invalid("it looks like a pickle, which fastmlp never loads")
        raise _Invalid("it is not a zip (.npz) archive")
    arrays = _read_arrays(raw)
    doc = _read_json(arrays.pop(_JSON_MEMBER, None))
    return _rebuild(doc, arrays)


def _read_arrays(raw):
    """Every member of the archive, each header checked before its data is read."""
    buf = io.BytesIO(raw)
    with np.load(buf, allow_pickle=False) as npz:
        if not isinstance(npz, np.lib.npyio.NpzFile):  # pragma: no cover - checked above
            raise _Invalid("it is not a .npz archive")
        zf = npz.zip
        infos = zf.infolist()
        names = []
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise _Invalid(f"unexpected member {_short(info.filename)} in the archive")
            name = info.filename[:-4]
            if name not in _MEMBERS:
                raise _Invalid(f"unknown array {_short(name)} in the archive (known: "
                               f"{sorted(_MEMBERS)})")
            if name in names:
                raise _Invalid(f"array {name!r} appears twice in the archive")
            names.append(name)
            if info.compress_type != zipfile.ZIP_STORED:
                raise _Invalid(f"array {name!r} is compressed; fastmlp writes (and reads) "
                               "uncompressed archives only")
            if info.file_size != info.compress_size or info.file_size > len(raw):
                raise _Invalid(f"array {name!r} declares {info.file_size} bytes, more than "
                               "the file holds")
            _check_header(zf, info, name)
        out = {}
        for name in names:
            out[name] = _native(npz[name])
    return out


def _check_header(zf, info, name):
    """Read one member's .npy header; refuse objects and sizes that the member cannot hold."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _Invalid(f"array {name!r} has an unsupported .npy version {version}")
        header_len = f.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Invalid(f"array {name!r} holds Python objects or records ({dtype}); only "
                       "numeric, boolean and unicode arrays are accepted")
    if dtype.kind not in _CLASS_KINDS:
        raise _Invalid(f"array {name!r} has dtype {dtype}; only numeric, boolean and "
                       "unicode arrays are accepted")
    if len(shape) > 2 or any((not _is_int(s)) or s < 0 for s in shape):
        raise _Invalid(f"array {name!r} has an unexpected shape {shape}")
    n_bytes = math.prod(int(s) for s in shape) * dtype.itemsize
    if n_bytes != info.file_size - header_len:
        raise _Invalid(f"array {name!r} declares shape {shape} ({n_bytes} bytes) but holds "
                       f"{info.file_size - header_len} bytes")


def _read_json(arr):
    if arr is None:
        raise _Invalid(f"the '{_JSON_MEMBER}' document is missing")
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise _Invalid(f"'{_JSON_MEMBER}' must be a 1-D uint8 array")
    if arr.size > _MAX_JSON_BYTES:
        raise _Invalid(f"'{_JSON_MEMBER}' is larger than {_MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Invalid(f"its JSON document cannot be parsed ({exc})") from None
    if not isinstance(doc, dict):
        raise _Invalid("its JSON document is not an object")
    if doc.get("format") != FORMAT:
        raise _Invalid(f"its JSON 'format' is {_short(doc.get('format'))}, not {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise _Invalid(
            f"it has format_version {_short(doc.get('format_version'))}; this fastmlp reads "
            f"version {FORMAT_VERSION} (save it again with a matching fastmlp)"
        )
    _check_keys("the JSON document", doc, _TOP_KEYS, _TOP_KEYS)
    return doc


def _check_keys(what, d, allowed, required=()):
    if not isinstance(d, dict):
        raise _Invalid(f"{what} must be a JSON object")
    unknown = set(d) - set(allowed)
    if unknown:
        raise _Invalid(f"{what} has unknown key(s) {_short(sorted(map(str, unknown)))}")
    missing = set(required) - set(d)
    if missing:
        raise _Invalid(f"{what} lacks key(s) {sorted(missing)}")


def _check_array(name, arr, shape=None, dtypes=None, ndim=None):
    if arr is None:
        raise _Invalid(f"array {name!r} is missing")
    if dtypes is not None and arr.dtype not in dtypes:
        raise _Invalid(f"array {name!r} has dtype {arr.dtype}, expected "
                       + " or ".join(str(d) for d in dtypes))
    if ndim is not None and arr.ndim != ndim:
        raise _Invalid(f"array {name!r} has shape {arr.shape}, expected {ndim} dimension(s)")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise _Invalid(f"array {name!r} has shape {arr.shape}, expected {tuple(shape)}")


def _native(arr):
    """A C-contiguous, native-byte-order copy (the archive may be big-endian)."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _rebuild(doc, arrays):
    classes = _estimator_classes()
    cls_name = doc["class"]
    if not isinstance(cls_name, str) or cls_name not in classes:
        raise _Invalid(f"unknown estimator class {_short(cls_name)} (known: "
                       f"{sorted(classes)})")
    cls = classes[cls_name]
    params_doc = doc["params"]
    _check_keys("'params'", params_doc, cls._get_param_names())
    params = {k: _decode_param(k, v, arrays) for k, v in params_doc.items()}
    if "random_state_keys" in arrays and not isinstance(params.get("random_state"),
                                                        np.random.RandomState):
        raise _Invalid("array 'random_state_keys' is present but random_state is not a "
                       "RandomState")
    est = cls(**params)
    try:
        est._validate_params()
    except ValueError as exc:
        raise _Invalid(f"a parameter is invalid: {exc}") from None

    fitted = doc["fitted"]
    if fitted is None:
        extra = set(arrays) - {"random_state_keys"}
        if extra:
            raise _Invalid(f"the model is not fitted but holds arrays {sorted(extra)}")
        return est
    _check_keys("'fitted'", fitted, _FITTED_KEYS, _FITTED_KEYS)
    _restore_fitted(est, fitted, arrays)
    return est


def _restore_fitted(est, fitted, arrays):
    from sklearn.base import is_classifier
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state

    from ._network import K, Network
    from ._optim import SOLVER_CODES, OptimizerState
    from .backends import BACKENDS, BackendUnavailableError, choose_backend, get_backend

    # ---- scalar and list attributes
    attrs = fitted["attributes"]
    _check_keys("'attributes'", attrs, _ATTRIBUTES, _REQUIRED_ATTRIBUTES)
    for key, value in attrs.items():
        if not _ATTRIBUTES[key](value):
            raise _Invalid(f"attribute {key} has an invalid value {_short(value)}")
    if attrs["backend_"] not in BACKENDS:
        raise _Invalid(f"backend_ {_short(attrs['backend_'])} is not one of {sorted(BACKENDS)}")
    if "feature_names_in_" in attrs and len(attrs["feature_names_in_"]) != \
            attrs["n_features_in_"]:
        raise _Invalid("feature_names_in_ does not have n_features_in_ names")

    # ---- the network, rebuilt from the parameters and checked against the description
    dtype_name = fitted["dtype"]
    if dtype_name not in ("float32", "float64"):
        raise _Invalid(f"dtype {_short(dtype_name)} is not float32 or float64")
    dtype = np.dtype(dtype_name)
    n_features, n_outputs = attrs["n_features_in_"], attrs["n_outputs_"]
    if n_features > _MAX_UNITS or n_outputs > _MAX_UNITS:
        raise _Invalid("n_features_in_ or n_outputs_ is implausibly large")
    try:
        hidden = est._hidden_layer_sizes()
        hidden_acts, hidden_params = est._hidden_activations(len(hidden))
    except (ValueError, TypeError, KeyError) as exc:
        raise _Invalid(f"the network parameters are invalid: {exc}") from None
    if any(h > _MAX_UNITS for h in hidden) or len(hidden) > _MAX_LAYERS:
        raise _Invalid("hidden_layer_sizes is implausibly large")
    out_act = attrs["out_activation_"]
    expected_out = (("exp" if est.loss == "poisson" else "identity") if not is_classifier(est)
                    else ("softmax", "logistic"))
    if out_act not in np.atleast_1d(expected_out):
        raise _Invalid(f"out_activation_ {out_act!r} does not fit a {type(est).__name__}")
    layer_units = [n_features] + hidden + [n_outputs]
    if attrs["n_layers_"] != len(layer_units):
        raise _Invalid(f"n_layers_ is {attrs['n_layers_']}, the parameters give "
                       f"{len(layer_units)} layers")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        net = Network(layer_units, hidden_acts, hidden_params, out_act)
    if not isinstance(fitted["network"], dict) or fitted["network"] != _plain_description(net):
        raise _Invalid("the network description does not match the parameters "
                       f"(file: {_short(fitted['network'], 200)}; parameters give "
                       f"{_short(_plain_description(net), 200)})")
    if np.any(net.layout[:, K] < 1) or np.any(net.layout[:, K] > _MAX_UNITS):
        raise _Invalid("maxout pieces out of range")
    n_params = _exact_n_params(net)

    # ---- arrays
    theta = arrays.get("theta")
    _check_array("theta", theta, shape=(n_params,), dtypes=_FLOAT_DTYPES)
    if theta.dtype != dtype:
        raise _Invalid(f"array 'theta' has dtype {theta.dtype}, the JSON says {dtype}")
    theta = _native(theta)
    if not np.isfinite(theta).all():
        raise _Invalid("the weights ('theta') are not all finite")
    if "best_theta" in arrays:
        _check_array("best_theta", arrays["best_theta"], shape=(n_params,), dtypes=(dtype,))
        best_theta = _native(arrays["best_theta"])
    else:
        best_theta = None

    opt_doc = fitted["optimizer"]
    optimizer = None
    if opt_doc is None:
        if "moments" in arrays:
            raise _Invalid("array 'moments' is present without an optimizer description")
    else:
        _check_keys("'optimizer'", opt_doc, {"solver", "learning_rate_init", "learning_rate",
                                             "lr_schedule", "power_t", "adam_t"},
                    {"solver", "learning_rate_init", "learning_rate", "lr_schedule",
                     "power_t", "adam_t"})
        if opt_doc["solver"] not in SOLVER_CODES:
            raise _Invalid(f"optimizer solver {_short(opt_doc['solver'])} is not one of "
                           f"{sorted(SOLVER_CODES)}")
        if opt_doc["lr_schedule"] not in _LR_SCHEDULES:
            raise _Invalid(f"optimizer lr_schedule {_short(opt_doc['lr_schedule'])} is unknown")
        for key in ("learning_rate_init", "learning_rate", "power_t"):
            if not (_is_real(opt_doc[key]) and math.isfinite(opt_doc[key])
                    and opt_doc[key] >= 0):
                raise _Invalid(f"optimizer {key} {_short(opt_doc[key])} is not a finite "
                               "non-negative number")
        if not _v_int()(opt_doc["adam_t"]):
            raise _Invalid("optimizer adam_t is not a non-negative integer")
        moments = arrays.get("moments")
        _check_array("moments", moments, shape=(2, n_params), dtypes=(dtype,))
        optimizer = OptimizerState(opt_doc["solver"], 0, dtype, opt_doc["learning_rate_init"],
                                   opt_doc["lr_schedule"], opt_doc["power_t"])
        optimizer.moments = _native(moments)
        optimizer.learning_rate = float(opt_doc["learning_rate"])
        optimizer.adam_t = int(opt_doc["adam_t"])

    lb_doc = fitted["label_binarizer"]
    if is_classifier(est):
        if lb_doc is None or fitted["classes_kind"] not in ("array", "object"):
            raise _Invalid("a classifier needs its label binarizer and classes")
        _check_keys("'label_binarizer'", lb_doc, {"neg_label", "pos_label", "sparse_output",
                                                  "y_type_", "sparse_input_"},
                    {"neg_label", "pos_label", "sparse_output", "y_type_", "sparse_input_"})
        if not (_is_int(lb_doc["neg_label"]) and _is_int(lb_doc["pos_label"])
                and lb_doc["neg_label"] < lb_doc["pos_label"]
                and isinstance(lb_doc["sparse_output"], bool)
                and isinstance(lb_doc["sparse_input_"], bool)
                and lb_doc["y_type_"] in _Y_TYPES):
            raise _Invalid(f"bad label binarizer {_short(lb_doc, 200)}")
        cls_arr = arrays.get("classes")
        lb_arr = arrays.get("lb_classes")
        for name, arr in (("classes", cls_arr), ("lb_classes", lb_arr)):
            _check_array(name, arr, ndim=1)
            if arr.dtype.kind not in _CLASS_KINDS or arr.shape[0] < 1:
                raise _Invalid(f"array {name!r} must hold at least one numeric, boolean or "
                               f"string label, got {arr.dtype} of shape {arr.shape}")
        y_type = lb_doc["y_type_"]
        n_lb = lb_arr.shape[0]
        if (y_type == "binary" and n_outputs != 1) or (
                y_type != "binary" and n_lb != n_outputs):
            raise _Invalid(f"{n_lb} classes ({y_type}) do not fit {n_outputs} output(s)")
        if (y_type == "multiclass") != (out_act == "softmax"):
            raise _Invalid(f"out_activation_ {out_act!r} does not fit {y_type} labels")
        lb = LabelBinarizer(neg_label=lb_doc["neg_label"], pos_label=lb_doc["pos_label"],
                            sparse_output=lb_doc["sparse_output"])
        lb.y_type_ = y_type
        lb.sparse_input_ = lb_doc["sparse_input_"]
        lb.classes_ = _decode_classes(lb_arr, fitted["classes_kind"])
        est._label_binarizer = lb
        est.classes_ = _decode_classes(cls_arr, fitted["classes_kind"])
    else:
        if lb_doc is not None or fitted["classes_kind"] is not None or \
                "classes" in arrays or "lb_classes" in arrays:
            raise _Invalid("a regressor has no classes")

    # ---- everything checked: set the state
    for key, value in attrs.items():
        if key == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        setattr(est, key, value)
    est._network = net
    est._theta = theta
    est._best_theta = best_theta if best_theta is not None else theta.copy()
    if optimizer is not None:
        est._optimizer = optimizer
    est._random_state = check_random_state(est.random_state)
    est._set_views()

    try:
        get_backend(est.backend_)
    except BackendUnavailableError as exc:
        new = choose_backend("auto")
        warnings.warn(
            f"The model was trained with backend {est.backend_!r}, which does not load here "
            f"({exc}). It will predict with backend {new!r}.",
            UserWarning,
            stacklevel=4,
        )
        est.backend_ = new
    # the prediction cache that fitting leaves (buffer size for one-row predictions)
    est._work_per_row = int(get_backend(est.backend_).workspace_size(net.layout, 1))


def _plain_description(net):
    """``Network.describe()`` as it reads back from JSON (floats stay floats)."""
    return json.loads(json.dumps(_json_ready(net.describe())))


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return _plain(value)


def _exact_n_params(net):
    """Length of theta computed with Python integers (no int64 overflow possible)."""
    from ._network import FAN_IN, FAN_OUT, K, N_PRE, SLOPE_OFF

    total = 0
    units = net.layer_units
    for l, row in enumerate(net.layout):
        fan_in, fan_out, k = units[l], units[l + 1], int(row[K])
        n_pre = fan_out * k
        if int(row[FAN_IN]) != fan_in or int(row[FAN_OUT]) != fan_out or \
                int(row[N_PRE]) != n_pre:
            raise _Invalid("the layer sizes overflow")
        total += fan_in * n_pre + n_pre
        if int(row[SLOPE_OFF]) >= 0:
            total += fan_out
    if total != net.n_params:
        raise _Invalid("the layer sizes overflow")
    return total


def _decode_classes(arr, kind):
    arr = _native(arr)
    if kind == "object":
        return arr.astype(object)
    return arr
