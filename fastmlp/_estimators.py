"""scikit-learn estimators: parameters, validation, labels, state. No math here.

``MLPClassifier`` and ``MLPRegressor`` accept every parameter of scikit-learn's estimators
of the same name, with the same defaults and validation, plus:

- ``activation`` may be any name of :data:`fastmlp.activations.HIDDEN_ACTIVATIONS` or a list
  with one name per hidden layer; ``activation_params`` sets their parameters;
- ``init`` chooses the initialisation (:mod:`fastmlp.initializers`);
- ``backend`` chooses where the hot loops run (``'auto'``, ``'numpy'``, ``'numba'``,
  ``'cython'``); ``backend_`` names the one used.

All weights and biases live in one flat vector; ``coefs_`` and ``intercepts_`` are views into
it (rebuilt after unpickling).
"""

import warnings
from abc import ABC, abstractmethod
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.base import is_classifier
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _training
from ._errors import NonFiniteOutputError
from ._network import Network
from .activations import ALIASES, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, resolve_activation
from .backends import BACKENDS, choose_backend, get_backend
from .initializers import INITIALIZERS, initialize_layer

_STOCHASTIC_SOLVERS = ["sgd", "adam"]
_ACTIVATION_NAMES = set(HIDDEN_ACTIVATIONS) | set(ALIASES)
_PREDICT_CHUNK = 4096


class BaseMultilayerPerceptron(BaseEstimator, ABC):
    """Base class of :class:`MLPClassifier` and :class:`MLPRegressor`."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(_ACTIVATION_NAMES), list, tuple],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "activation_params": [None, dict, list, tuple],
        "init": [StrOptions(set(INITIALIZERS)), callable],
        "backend": [StrOptions({"auto"} | set(BACKENDS))],
    }

    @abstractmethod
    def __init__(self, hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
                 learning_rate_init, power_t, max_iter, loss, shuffle, random_state, tol,
                 verbose, warm_start, momentum, nesterovs_momentum, early_stopping,
                 validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun,
                 activation_params, init, backend):
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.activation_params = activation_params
        self.init = init
        self.backend = backend

    # ------------------------------------------------------------------ parameters
    def _hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if np.any(np.array(sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        return [int(s) for s in sizes]

    def _hidden_activations(self, n_hidden):
        """One activation name and one parameter dict per hidden layer."""
        acts = self.activation
        if isinstance(acts, str):
            acts = [acts] * n_hidden
        else:
            acts = list(acts)
            if len(acts) != n_hidden:
                raise ValueError(
                    f"activation has {len(acts)} entries but there are {n_hidden} hidden "
                    "layers: give one activation name per hidden layer, or a single name."
                )
        names = [resolve_activation(a).name for a in acts]
        params = self.activation_params
        if params is None:
            per_layer = [{} for _ in names]
        elif isinstance(params, dict):
            known = {p for n in names for p in HIDDEN_ACTIVATIONS[n].params}
            unknown = set(params) - known
            if unknown:
                raise ValueError(
                    f"activation_params has {sorted(unknown)}, which no hidden activation "
                    f"({sorted(set(names))}) takes. Parameters by activation: "
                    + _params_help()
                )
            per_layer = [
                {k: v for k, v in params.items() if k in HIDDEN_ACTIVATIONS[n].params}
                for n in names
            ]
        else:
            per_layer = [dict(p or {}) for p in params]
            if len(per_layer) != len(names):
                raise ValueError(
                    f"activation_params has {len(per_layer)} entries but there are "
                    f"{len(names)} hidden layers: give one dict per hidden layer, or one dict."
                )
            for n, p in zip(names, per_layer):
                unknown = set(p) - set(HIDDEN_ACTIVATIONS[n].params)
                if unknown:
                    raise ValueError(
                        f"activation_params for a {n!r} layer has {sorted(unknown)}; "
                        f"it takes {list(HIDDEN_ACTIVATIONS[n].params) or 'no parameters'}."
                    )
        for n, p in zip(names, per_layer):
            _check_activation_params(n, p)
        return names, per_layer

    # -------------------------------------------------------------- flat parameters
    def _set_views(self):
        net = self._network
        self.coefs_ = net.coef_views(self._theta)
        self.intercepts_ = net.intercept_views(self._theta)

    def _views_intact(self):
        """True while ``coefs_`` and ``intercepts_`` are still the views into ``_theta``."""
        theta = self._theta
        for arr in self.coefs_:
            if arr.base is not theta:
                return False
        for arr in self.intercepts_:
            if arr.base is not theta:
                return False
        return True

    def _sync_theta(self):
        """Copy back ``coefs_`` / ``intercepts_`` that a user replaced, restore the views."""
        if self._views_intact():
            return
        net = self._network
        for view, new in zip(net.coef_views(self._theta), self.coefs_):
            if view is not new:
                view[...] = new
        for view, new in zip(net.intercept_views(self._theta), self.intercepts_):
            if view is not new:
                view[...] = new
        self._set_views()

    def __getstate__(self):
        state = super().__getstate__()
        if "_theta" in state:
            self._sync_theta()
            state = dict(state)
            for key in ("coefs_", "intercepts_"):
                state.pop(key, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_theta" in state:
            # joblib.load(mmap_mode='r') hands back read-only arrays; training writes in place
            for name in ("_theta", "_best_theta"):
                arr = self.__dict__.get(name)
                if arr is not None and not arr.flags.writeable:
                    setattr(self, name, np.array(arr))
            opt = self.__dict__.get("_optimizer")
            if opt is not None and not opt.moments.flags.writeable:
                opt.moments = np.array(opt.moments)
            self._set_views()

    # --------------------------------------------------------------------- fitting
    def _initialize(self, y, layer_units, dtype, hidden_acts, hidden_params):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"

        net = Network(layer_units, hidden_acts, hidden_params, self.out_activation_)
        theta = np.empty(net.n_params, dtype=dtype)
        if self.init == "zeros":
            warnings.warn(
                "init='zeros' starts every unit of a layer identical, and gradient descent "
                "keeps them identical: the network can only learn what one unit per layer "
                "can. Use it to see why networks need random initialisation.",
                UserWarning,
            )
        for l, (W, b) in enumerate(zip(net.coef_views(theta), net.intercept_views(theta))):
            # the range of scikit-learn's initialisation depends on the layer's activation
            act = hidden_acts[min(l, len(hidden_acts) - 1)] if hidden_acts else (
                self.activation if isinstance(self.activation, str) else "relu")
            coef, intercept = initialize_layer(
                self.init, self._random_state, W.shape[0], W.shape[1], dtype, act
            )
            W[...] = coef
            b[...] = intercept
        for s, a, p in zip(net.slope_views(theta), net.activations, net.act_params):
            if s is not None:
                s[...] = p[0]
        self._network = net
        self._theta = theta
        self._set_views()
        self._best_theta = theta.copy()
        self._step = 0
        self._rrelu_seed = (
            int(self._random_state.randint(np.iinfo(np.int32).max)) if net.has_rrelu else 0
        )
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _prepare_fit(self, X, y, sample_weight=None, incremental=False):
        """Validate, initialise on first use, choose the backend; train nothing.

        Returns
        -------
        backend : module
            The backend module (``backend_`` names it).
        X : ndarray or CSR matrix, Y : ndarray, sample_weight : ndarray or None
            Training data in the dtype of the weights (``Y`` 2-D, float).
        """
        hidden_layer_sizes = self._hidden_layer_sizes()
        hidden_acts, hidden_params = self._hidden_activations(len(hidden_layer_sizes))
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype, hidden_acts, hidden_params)
        else:
            self._sync_theta()
            expected = Network(layer_units, hidden_acts, hidden_params, self.out_activation_)
            if expected != self._network:
                raise ValueError(
                    "warm_start and partial_fit continue training the same network, but the "
                    f"layers now are {layer_units} with {hidden_acts}, and the fitted network "
                    f"has {self._network.layer_units} with "
                    f"{self._network.hidden_activations}. Set warm_start=False to start over."
                )
        dtype = self._theta.dtype
        X = _as_model_dtype(X, dtype)  # a warm start keeps the dtype of the fitted weights
        if sample_weight is not None:
            sample_weight = _as_model_dtype(sample_weight, dtype, "sample_weight")

        self.backend_ = choose_backend(self.backend, X)
        backend = get_backend(self.backend_)
        self._work_per_row = int(backend.workspace_size(self._network.layout, 1))
        if sp.issparse(X) and self.backend_ != "numpy":
            X = X.toarray()  # compiled kernels take dense rows
        Y = np.ascontiguousarray(_as_model_dtype(y, dtype, "y"))
        return backend, X, Y, sample_weight

    def _fit(self, X, y, sample_weight=None, incremental=False):
        backend, X, Y, sample_weight = self._prepare_fit(X, y, sample_weight, incremental)
        if self.solver in _STOCHASTIC_SOLVERS:
            _training.fit_stochastic(self, backend, X, Y, sample_weight, incremental)
        elif self.solver == "lbfgs":
            _training.fit_lbfgs(self, backend, X, Y, sample_weight)

        if not np.isfinite(self._theta).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {ndarray, sparse matrix} of shape (n_samples, n_features)
            The input data. float32 input trains in float32.
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            Returns a trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                " optimizers. %s is not stochastic." % self.solver
            )
        return True

    # ------------------------------------------------------------------- toolbox
    def summary(self):
        """A text table of the layers: units, activation, trainable parameters, and the total.

        Returns
        -------
        str
        """
        from ._summary import summary

        return summary(self)

    def save(self, path):
        """Save the configuration, weights and optimizer state without pickle.

        The file holds JSON and numeric arrays only; :func:`fastmlp.load` reads it back and
        accepts nothing else, so loading an untrusted file cannot execute code.

        Parameters
        ----------
        path : str or path-like
        """
        from ._persist import save

        return save(self, path)

    # ------------------------------------------------------------------ prediction
    def _kernel_ready(self, X):
        """``X`` as an array the kernels can take without ``validate_data``, else ``None``.

        The common cases of prediction need none of ``validate_data``'s conversions, which
        cost tens of microseconds for an array and over a millisecond for a DataFrame:

        - a 2-D float64 or float32 NumPy array of the model's width, for a model fitted
          without feature names. It is passed as it is when it is C-contiguous in the
          model's dtype, else copied into that layout and dtype;
        - a pandas DataFrame whose columns are exactly ``feature_names_in_`` (names and
          order) and whose values are float64 or float32, for a model fitted with those
          names. Its values are copied the same way.

        Anything else (lists, other dtypes, sparse, wrong width, other columns, a DataFrame
        for a model fitted without names or an array for one fitted with them) returns
        ``None``. It then goes through the full validation, with its errors and warnings.
        NaN and inf, and float64 values beyond float32's range for a float32 model, are
        caught by the backend's ``forward``, which checks ``X`` before computing (status 1).
        :meth:`_forward_kernels` then returns ``None`` and the caller takes the validating
        path, which raises the error.
        """
        d = self.__dict__
        theta = d.get("_theta")
        if theta is None:
            return None
        if type(X) is not np.ndarray:
            X = _frame_values(X, d.get("feature_names_in_"))
            if X is None:
                return None
        elif "feature_names_in_" in d:
            return None  # validate_data warns that X has no feature names
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != self.n_features_in_:
            return None
        if X.dtype != theta.dtype or not X.flags.c_contiguous:
            if X.dtype != np.float64 and X.dtype != np.float32:
                return None
            with np.errstate(over="ignore"):  # out of float32's range: inf, status 1
                X = np.ascontiguousarray(X, dtype=theta.dtype)
        return X

    def _outputs(self, X, apply_output=True):
        """Output-layer activations (or logits) for the public prediction methods: the
        kernels straight away when :meth:`_kernel_ready` accepts ``X``, else through
        ``validate_data`` (:meth:`_forward_pass_fast`), which raises its errors."""
        Xk = self._kernel_ready(X)
        out = None if Xk is None else self._forward_kernels(Xk, apply_output)
        if out is None:
            check_is_fitted(self)
            out = self._forward_pass_fast(X, apply_output=apply_output)
        return out

    def _validate_predict_input(self, X):
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        X = _as_model_dtype(X, self._theta.dtype)
        if sp.issparse(X):
            X = X.tocsr()
        return X

    def _forward_pass_fast(self, X, check_input=True, apply_output=True):
        """Output-layer activations (or logits) for ``X``."""
        if check_input:
            X = self._validate_predict_input(X)
        else:
            X = _as_model_dtype(X, self._theta.dtype)
        out = self._forward_kernels(X, apply_output)
        if out is None:
            raise ValueError("Input X contains NaN or infinity; remove or impute those "
                             "values before predicting.")
        return out

    def _forward_kernels(self, X, apply_output):
        """Run the backend's ``forward`` on ``X`` (buffers allocated per call, so several
        threads can predict with one model).

        Returns ``None`` when ``X`` holds NaN or inf (the backend checks, status 1), so the
        fast path of ``predict`` can hand such input to the validating path.
        """
        self._sync_theta()
        net = self._network
        theta = self._theta
        backend = get_backend(self.backend_)
        n = X.shape[0]
        out = np.empty((n, self.n_outputs_), dtype=theta.dtype)
        # one row (the latency case) uses the workspace size cached at fit
        size = self.__dict__.get("_work_per_row") if n == 1 else None
        chunk = 1
        if size is None:
            if n == 0:
                return out
            chunk = min(n, _PREDICT_CHUNK)
            serial_rows = _training.serial_chunk_rows(net.layout)
            if serial_rows is not None:
                # a small network: chunks whose products stay on this thread. OpenBLAS's
                # threads gain little on them, and once woken they spin for a while,
                # taking the cores from the next fit's threads (a search scoring its
                # folds between fits ran 2x slower)
                chunk = min(chunk, serial_rows)
            size = backend.workspace_size(net.layout, chunk)
        work = np.empty(size, dtype=theta.dtype)
        if self.backend_ == "numpy":
            with np.errstate(all="ignore"):
                status = backend.forward(theta, net.layout, net.act_params, X, out,
                                         apply_output, chunk, work)
        else:  # compiled kernels raise no floating-point warnings
            status = backend.forward(theta, net.layout, net.act_params, X, out, apply_output,
                                     chunk, work)
        if status == 1:
            return None
        if status:
            with np.errstate(all="ignore"):
                # logits overflowed: clip them into the finite range, then apply the output
                # activation (softmax subtracts the row maximum, so it stays finite)
                backend.forward(theta, net.layout, net.act_params, X, out, False, chunk, work)
                _clip_logits(out)
                if apply_output:
                    OUTPUT_ACTIVATIONS[self.out_activation_].forward(out, out, None)
            bad_rows = int(np.isnan(out).any(axis=1).sum())
            if bad_rows:
                # a hidden layer overflowed to +-inf and the next layer added inf - inf:
                # there is no prediction to give, only NaN
                raise NonFiniteOutputError(
                    f"The network's activations overflowed on {bad_rows} of these {n} rows: "
                    "its largest weight is "
                    f"{float(np.abs(theta).max()):.3g}, and it has no finite prediction for "
                    "them. Predict on inputs scaled as the training data was, or retrain with a "
                    "lower learning_rate_init or a larger alpha.")
        return out

    def _score_with_function(self, X, y, sample_weight, score_function):
        """Private score method without input validation: NaN when the network has no
        finite prediction for some row, and -inf rather than an overflow warning when the
        predictions are too large to square (r2). Other predictions are finite: that is
        the contract of :meth:`_forward_kernels`."""
        try:
            y_pred = self._predict(X, check_input=False)
        except NonFiniteOutputError:
            return np.nan
        with np.errstate(over="ignore", invalid="ignore"):
            return score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


_SCALE_HINT = {"X": "the features", "y": "the targets", "sample_weight": "the sample weights"}


def _as_model_dtype(X, dtype, name="X"):
    """``X`` (finite, dense or sparse) in ``dtype``, the dtype of the model's weights.

    ``name`` (``"X"``, ``"y"`` or ``"sample_weight"``) is the argument the error names.

    Raises
    ------
    ValueError
        If a float64 value is beyond the range of a float32 model: a clear error instead of
        an overflow warning and an infinite input.
    """
    if X.dtype == dtype:
        return X
    with np.errstate(over="ignore"):
        cast = X.astype(dtype)
    if X.dtype.kind == "f" and X.dtype.itemsize > dtype.itemsize and not np.isfinite(
            cast.data if sp.issparse(cast) else cast).all():
        raise ValueError(
            f"{name} has values beyond the range of {dtype} (largest finite "
            f"{float(np.finfo(dtype).max):.4g}), the dtype of this model's weights, set by the "
            f"X it is fitted on. Scale {_SCALE_HINT[name]}, or fit the model on float64 data.")
    return cast


def _one_output_flat(y_pred):
    """A regressor's predictions: shape (n_samples,) for one output, as scikit-learn's."""
    return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred


def _frame_values(X, names):
    """The values of a pandas DataFrame whose columns are exactly ``names``, as an array
    (float64 or float32 values only); ``None`` for anything else, which takes
    ``validate_data``'s path."""
    if names is None or type(X).__name__ != "DataFrame" or not type(X).__module__.startswith(
            "pandas"):
        return None
    columns = X.columns
    if len(columns) != len(names) or columns.tolist() != names.tolist():
        return None
    values = X.to_numpy()  # mixed or extension dtypes give object (or other) arrays
    if values.dtype != np.float64 and values.dtype != np.float32:
        return None
    return values


def _clip_logits(z):
    """Clip logits into +-max/4 in place, so differences of two of them stay finite."""
    limit = z.dtype.type(np.finfo(z.dtype).max / 4)
    # minimum and maximum: np.clip with scalar bounds costs several times as much
    np.minimum(z, limit, out=z)
    return np.maximum(z, -limit, out=z)


def _check_activation_params(name, params):
    act = HIDDEN_ACTIVATIONS[name]
    for key, value in params.items():
        lo, hi = act.bounds.get(key, (None, None))
        if not isinstance(value, Real) or not np.isfinite(value):
            raise ValueError(f"activation_params[{key!r}] must be a finite number, got {value!r}.")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"activation_params[{key!r}] = {value} is out of range for {name}.")
    if name == "maxout" and int(params.get("k", 2)) != params.get("k", 2):
        raise ValueError("activation_params['k'] of maxout must be a whole number of pieces.")
    if name == "rrelu":
        lo = params.get("lower", act.defaults[0])
        hi = params.get("upper", act.defaults[1])
        if lo > hi:
            raise ValueError(f"rrelu needs lower <= upper, got lower={lo}, upper={hi}.")


def _params_help():
    return "; ".join(
        f"{n}: {', '.join(a.params)}" for n, a in HIDDEN_ACTIVATIONS.items() if a.params
    ) + "."


_PARAMS_DOC = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element represents the number of neurons in the ith hidden layer.

    activation : str or list of str, default='relu'
        Activation function of the hidden layers: one name for every hidden layer, or a list
        with one name per hidden layer. scikit-learn's four:

        - 'identity': f(z) = z
        - 'logistic': f(z) = 1 / (1 + exp(-z))
        - 'tanh': f(z) = tanh(z)
        - 'relu': f(z) = max(z, 0)

        and the rest of the zoo ('leaky_relu', 'prelu', 'rrelu', 'elu', 'selu', 'softplus',
        'swish' (alias 'silu'), 'gelu', 'gelu_tanh', 'hard_sigmoid', 'hard_tanh', 'maxout'),
        each documented with its formula in :mod:`fastmlp.activations`.

    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        The solver for weight optimization: 'lbfgs' (scipy's L-BFGS-B, full batch),
        'sgd' (stochastic gradient descent with momentum), 'adam' (Kingma and Ba).

    alpha : float, default=0.0001
        Strength of the L2 regularization term, divided by the (weighted) sample size when
        added to the loss.

    batch_size : int, default='auto'
        Size of minibatches for stochastic optimizers; 'auto' means min(200, n_samples).

    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning rate schedule of 'sgd': constant, ``learning_rate_init / (t + 1)^power_t``
        with t the number of samples seen, or divided by 5 whenever the loss stalls.

    learning_rate_init : float, default=0.001
        The initial learning rate ('sgd' and 'adam'). A value changed with ``set_params``
        between ``partial_fit`` calls takes effect at the next call.

    power_t : float, default=0.5
        The exponent of the 'invscaling' schedule.

    max_iter : int, default=200
        Maximum number of epochs (stochastic solvers) or iterations ('lbfgs').

    shuffle : bool, default=True
        Whether to shuffle samples in each epoch ('sgd' and 'adam').

    random_state : int, RandomState instance or None, default=None
        Random numbers for the initial weights, the early-stopping split and the shuffles,
        drawn in scikit-learn's order.

    tol : float, default=1e-4
        Tolerance for the optimization (see ``n_iter_no_change``).

    verbose : bool, default=False
        Whether to print progress messages to stdout.

    warm_start : bool, default=False
        Reuse the solution of the previous call to fit as initialization.

    momentum : float, default=0.9
        Momentum of 'sgd', in [0, 1].

    nesterovs_momentum : bool, default=True
        Whether to use Nesterov's momentum ('sgd' with momentum > 0).

    early_stopping : bool, default=False
        Set aside ``validation_fraction`` of the training data (stratified for single-output
        classification) and stop when its score stops improving by ``tol`` for
        ``n_iter_no_change`` epochs; the best weights are restored.

    validation_fraction : float, default=0.1
        Proportion of training data set aside for early stopping.

    beta_1 : float, default=0.9
        Exponential decay rate of Adam's first moment, in [0, 1).

    beta_2 : float, default=0.999
        Exponential decay rate of Adam's second moment, in [0, 1).

    epsilon : float, default=1e-8
        Value for numerical stability in Adam.

    n_iter_no_change : int, default=10
        Maximum number of epochs to not meet ``tol`` improvement ('sgd' and 'adam').

    max_fun : int, default=15000
        Maximum number of loss function calls ('lbfgs').

    activation_params : dict or list of dict, default=None
        Numeric parameters of the hidden activations: one dict for every layer (each key
        goes to the layers whose activation takes it) or one dict per hidden layer.
        'leaky_relu': negative_slope (0.01); 'prelu': init (0.25); 'rrelu': lower (1/8),
        upper (1/3); 'elu': alpha (1.0); 'swish': beta (1.0); 'maxout': k (2).

    init : str or callable, default='sklearn'
        Weight initialisation (see :mod:`fastmlp.initializers`): 'sklearn' (scikit-learn's
        Glorot-uniform, the drop-in default), 'glorot_uniform', 'glorot_normal',
        'he_uniform', 'he_normal', 'lecun_normal', 'normal', 'uniform', 'zeros', or a
        callable ``(rng, fan_in, fan_out, dtype) -> ndarray of shape (fan_in, fan_out)``.

    backend : {'auto', 'numpy', 'numba', 'cython'}, default='auto'
        Where the hot loops run. 'numpy' is the pure-NumPy reference; 'numba' and 'cython'
        run each epoch and each prediction in compiled code. 'auto' picks by the rule of
        :func:`fastmlp.backends.choose_backend`.
"""

_ATTRS_DOC = """
    loss_ : float
        The current loss computed with the loss function.
    best_loss_ : float or None
        The minimum loss reached by the solver throughout fitting (None with early stopping).
    loss_curve_ : list of shape (n_iter_,)
        The loss at the end of each epoch (stochastic solvers).
    validation_scores_ : list of shape (n_iter_,) or None
        The validation score at each epoch (only with early stopping).
    best_validation_score_ : float or None
        The best validation score (only with early stopping).
    t_ : int
        The number of training samples seen by the solver during fitting.
    coefs_ : list of shape (n_layers - 1,)
        Weight matrices, ``coefs_[i]`` of shape (fan_in, fan_out); views into one flat vector.
    intercepts_ : list of shape (n_layers - 1,)
        Bias vectors, views into the same flat vector.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit (only when X has string feature names).
    n_iter_ : int
        The number of iterations the solver has run.
    n_layers_ : int
        Number of layers.
    n_outputs_ : int
        Number of outputs.
    out_activation_ : str
        Name of the output activation function.
    backend_ : str
        The backend that ran the fit.
"""


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multi-layer perceptron classifier: a drop-in for scikit-learn's ``MLPClassifier``.

    Optimizes the log-loss (softmax for multiclass, logistic for binary and multilabel
    targets) with L-BFGS, SGD or Adam, with the hot loops in compiled code.

    Parameters
    ----------"""
        + _PARAMS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output."""
        + _ATTRS_DOC
        + """
    Examples
    --------
    >>> from fastmlp import MLPClassifier
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(n_samples=100, random_state=1)
    >>> clf = MLPClassifier(random_state=1, max_iter=300).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """
    )

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 activation_params=None, init="sklearn", backend="auto"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss="log_loss", shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            activation_params=activation_params, init=init, backend=backend,
        )

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)

        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}. Pass every "
                    "class in `classes` on the first call to partial_fit."
                )
        return X, self._indicator(y)

    def _indicator(self, y):
        """``LabelBinarizer.transform(y).astype(bool)``; for one label per sample (binary or
        multiclass) built directly, which saves its input validation (~3 ms a fit, with the
        GIL held: the cost that limits fits in parallel threads). ``y``'s labels are known
        to be in ``classes_`` (checked by the caller, or ``classes_`` came from ``y``)."""
        lb = self._label_binarizer
        if y.ndim != 1 or lb.y_type_ not in ("binary", "multiclass") or lb.sparse_output:
            return lb.transform(y).astype(bool)
        idx = np.searchsorted(lb.classes_, y)
        if lb.y_type_ == "binary":
            return (idx == 1).reshape(-1, 1)  # one column: y == classes_[1]
        Y = np.zeros((y.shape[0], len(lb.classes_)), dtype=bool)
        Y[np.arange(y.shape[0]), idx] = True
        return Y

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray, shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        return self._labels(self._outputs(X))

    def _predict(self, X, check_input=True):
        return self._labels(self._forward_pass_fast(X, check_input=check_input))

    def _labels(self, y_prob):
        """Class labels from output probabilities (LabelBinarizer's thresholds, without its
        overhead for the single-output cases)."""
        classes = self.classes_
        if self.out_activation_ == "softmax":
            return classes[y_prob.argmax(axis=1)]
        if self.n_outputs_ == 1 and len(classes) == 2:
            # rint(p) is 1 exactly when p > 0.5 for p in [0, 1] (0.5 rounds to even, 0):
            # LabelBinarizer's threshold, without NumPy's slower comparison with a scalar
            return classes[np.rint(y_prob.ravel()).astype(np.intp)]
        if self.n_outputs_ == 1:
            y_prob = y_prob.ravel()
        return self._label_binarizer.inverse_transform(y_prob)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on the given test data and labels (``accuracy_score``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Test samples.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True labels for ``X``.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            Mean accuracy of ``self.predict(X)`` w.r.t. ``y``.
        """
        labels = y
        if type(y).__name__ == "Series" and type(y).__module__.startswith("pandas"):
            labels = y.to_numpy()  # a search over a DataFrame scores Series folds
        if (sample_weight is None and type(labels) is np.ndarray and labels.ndim == 1
                and labels.dtype.kind in "iubU" and hasattr(self, "classes_")
                and self.classes_.ndim == 1
                and labels.dtype.kind == self.classes_.dtype.kind):
            # labels of the same kind as classes_, one per sample: the fraction predicted
            # right, without accuracy_score's target-type checks (~3 ms a call, GIL held,
            # once per fold in a search); the same number
            y_pred = self.predict(X)
            if y_pred.shape == labels.shape:
                return float(np.mean(y_pred == labels))
        return super().score(X, y, sample_weight=sample_weight)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, accuracy_score)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit; required on the first call.

        Returns
        -------
        self : object
            Trained MLP model.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The predicted probability of each class, in the order of ``classes_``.
        """
        y_pred = self._outputs(X)
        if self.n_outputs_ == 1:
            proba = np.empty((y_pred.shape[0], 2), dtype=y_pred.dtype)
            proba[:, 1] = y_pred[:, 0]
            np.subtract(1, y_pred[:, 0], out=proba[:, 0])
            return proba
        return y_pred

    def predict_log_proba(self, X):
        """Log of probability estimates, computed from the logits (never -inf).

        ``log_softmax(z) = z - max(z) - log(sum(exp(z - max(z))))`` for multiclass, and
        ``log(sigmoid(z)) = -log(1 + exp(-z))`` for binary and multilabel outputs, so a
        probability that rounds to 0 still has a finite log.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
            The log-probability of each class, in the order of ``classes_``.
        """
        z = _clip_logits(self._outputs(X, apply_output=False))
        with np.errstate(under="ignore"):
            if self.out_activation_ == "softmax":
                z -= z.max(axis=1, keepdims=True)
                return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            log_p = -np.logaddexp(0, -z)  # log(sigmoid(z))
            if self.n_outputs_ == 1:
                return np.hstack([-np.logaddexp(0, z), log_p])  # log(1 - p) = log(sigmoid(-z))
            return log_p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multi-layer perceptron regressor: a drop-in for scikit-learn's ``MLPRegressor``.

    Optimizes half the squared error (identity output) or half the Poisson deviance
    (exponential output) with L-BFGS, SGD or Adam, with the hot loops in compiled code.

    Parameters
    ----------
    loss : {'squared_error', 'poisson'}, default='squared_error'
        The loss; 'poisson' uses a log link (exp output) and requires ``y >= 0``.
"""
        + _PARAMS_DOC
        + """
    Attributes
    ----------"""
        + _ATTRS_DOC
        + """
    Examples
    --------
    >>> from fastmlp import MLPRegressor
    >>> from sklearn.datasets import make_regression
    >>> X, y = make_regression(n_samples=200, n_features=20, random_state=1)
    >>> reg = MLPRegressor(random_state=1, max_iter=50).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """
    )

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 activation_params=None, init="sklearn", backend="auto"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss=loss, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, activation_params=activation_params, init=init, backend=backend,
        )

    def predict(self, X):
        """Predict using the multi-layer perceptron model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        return _one_output_flat(self._outputs(X))

    def _predict(self, X, check_input=True):
        return _one_output_flat(self._forward_pass_fast(X, check_input=check_input))

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 of the prediction (``r2_score``).

        As scikit-learn's, except that predictions too large to square give -inf (or NaN)
        without an overflow warning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Test samples.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True values for ``X``.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            R^2 of ``self.predict(X)`` against ``y``.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            return super().score(X, y, sample_weight=sample_weight)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, r2_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError(
                "loss='poisson' requires non-negative targets (y >= 0): it models counts or "
                f"rates with a log link. y has {int(np.sum(y < 0))} negative value(s), the "
                f"smallest {y.min()!r}. Use loss='squared_error' or shift/transform y."
            )
        return X, y

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : ndarray of shape (n_samples,)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            Trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)


def _check_partial_fit_first_call(clf, classes=None):
    """True on the first call to partial_fit (and set ``classes_``), as scikit-learn."""
    if getattr(clf, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(clf, "classes_", None) is not None:
            if not np.array_equal(clf.classes_, unique_labels(classes)):
                raise ValueError(
                    "`classes=%r` is not the same as on last call "
                    "to partial_fit, was: %r" % (classes, clf.classes_)
                )
        else:
            clf.classes_ = unique_labels(classes)
            return True
    return False
