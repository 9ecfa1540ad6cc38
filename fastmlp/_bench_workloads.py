"""The benchmark workloads W1-W6: data, estimator settings and the PyTorch equivalent.

This module is the single definition of the workloads of ``../shared/WORKLOADS.md`` used by
``python -m fastmlp bench`` (:mod:`fastmlp._bench`) and by the pytest-benchmark suite in
``benchmarks/``, so that both measure exactly the same work.

Nothing heavy is imported at module level: scikit-learn's dataset generators, PyTorch and the
estimators are imported inside the functions that need them (importing fastmlp must stay
cheap and free of side effects).
"""

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Workload",
    "WORKLOADS",
    "COMMON_PARAMS",
    "get_workload",
    "make_data",
    "estimator_params",
    "make_estimator",
    "fit_estimator",
    "layer_units",
    "n_params",
    "training_flops",
    "torch_available",
    "torch_fit",
    "torch_forward",
    "KERNEL_SIZES",
    "kernel_problem",
]

COMMON_PARAMS = {"alpha": 1e-4, "learning_rate_init": 1e-3, "shuffle": True, "random_state": 0}
"""Settings shared by every training workload (plus ``tol=0`` and ``n_iter_no_change``)."""


@dataclass(frozen=True)
class Workload:
    """One training workload of ``WORKLOADS.md``.

    Attributes
    ----------
    id : str
        ``'W1'`` .. ``'W6'``.
    name : str
        Short name (``'digits'``, ``'seed net'``, ...).
    data : str
        How the data is made (as written in ``WORKLOADS.md``).
    task : {'binary', 'multiclass', 'regression'}
    hidden : tuple of int
        ``hidden_layer_sizes``.
    activation : str
    solver : {'adam', 'sgd'}
    batch_size : int
    epochs : int
        Epochs of the full workload (every epoch runs: ``tol=0``).
    quick_rows : int
        Rows used in quick mode (the first rows of the full data).
    quick_epochs : int
        Epochs in quick mode.
    extra : dict
        Further estimator parameters (W5's momentum settings).
    """

    id: str
    name: str
    data: str
    task: str
    hidden: tuple
    activation: str
    solver: str
    batch_size: int
    epochs: int
    quick_rows: int
    quick_epochs: int
    extra: dict = field(default_factory=dict)

    def epochs_for(self, quick):
        """Epochs of the full (``quick=False``) or quick workload."""
        return self.quick_epochs if quick else self.epochs

    def describe(self):
        """Plain-data description (for results.json)."""
        return {
            "id": self.id, "name": self.name, "data": self.data, "task": self.task,
            "hidden_layer_sizes": list(self.hidden), "activation": self.activation,
            "solver": self.solver, "batch_size": self.batch_size, "epochs": self.epochs,
            "extra": dict(self.extra),
        }


WORKLOADS = {
    "W1": Workload(
        "W1", "digits", "load_digits() raw pixels 0..16 (1797 x 64)", "multiclass", (64,),
        "relu", "adam", 200, 100, quick_rows=1797, quick_epochs=3,
    ),
    "W2": Workload(
        "W2", "seed net",
        "X = rng.uniform(-1, 1, (20000, 2)), y = sin(3 x0) * cos(3 x1) > 0", "binary",
        (27, 31, 31), "relu", "adam", 32, 20, quick_rows=2000, quick_epochs=2,
    ),
    "W3": Workload(
        "W3", "medium",
        "make_classification(n_samples=50000, n_features=100, n_informative=50, "
        "n_classes=10, random_state=0)", "multiclass", (256, 128), "relu", "adam", 200, 5,
        quick_rows=4000, quick_epochs=1,
    ),
    "W4": Workload(
        "W4", "large", "X = rng.random((20000, 784)), y = rng.integers(0, 10, 20000)",
        "multiclass", (1024, 1024), "relu", "adam", 256, 2, quick_rows=512, quick_epochs=1,
    ),
    "W5": Workload(
        "W5", "online", "make_classification(n_samples=2000, n_features=10, random_state=0)",
        "binary", (16,), "tanh", "sgd", 1, 5, quick_rows=300, quick_epochs=1,
        extra={"momentum": 0.9, "nesterovs_momentum": True},
    ),
    "W6": Workload(
        "W6", "regression",
        "make_regression(n_samples=20000, n_features=20, noise=1.0, random_state=0), "
        "y standardised", "regression", (64, 64), "relu", "adam", 200, 20,
        quick_rows=2000, quick_epochs=2,
    ),
}
"""Workload id -> :class:`Workload`, in the order of ``WORKLOADS.md``."""


def get_workload(wid):
    """Return the :class:`Workload` called ``wid`` (case-insensitive), or raise ValueError."""
    key = str(wid).strip().upper()
    if key not in WORKLOADS:
        raise ValueError(f"Unknown workload {wid!r}; choose from {', '.join(WORKLOADS)}.")
    return WORKLOADS[key]


@functools.lru_cache(maxsize=None)
def _full_data(wid):
    # Built once per process: make_classification for W3 takes a noticeable fraction of a
    # second and every variant must see the very same arrays.
    if wid == "W1":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
    elif wid == "W2":
        rng = np.random.default_rng(0)
        X = rng.uniform(-1, 1, (20000, 2))
        y = (np.sin(3 * X[:, 0]) * np.cos(3 * X[:, 1]) > 0).astype(np.int64)
    elif wid == "W3":
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=50000, n_features=100, n_informative=50,
                                   n_classes=10, random_state=0)
    elif wid == "W4":
        rng = np.random.default_rng(0)
        X = rng.random((20000, 784))
        y = rng.integers(0, 10, 20000)
    elif wid == "W5":
        from sklearn.datasets import make_classification

        X, y = make_classification(n_samples=2000, n_features=10, random_state=0)
    elif wid == "W6":
        from sklearn.datasets import make_regression

        X, y = make_regression(n_samples=20000, n_features=20, noise=1.0, random_state=0)
        y = (y - y.mean()) / y.std()
    else:  # pragma: no cover - guarded by get_workload
        raise ValueError(wid)
    X = np.ascontiguousarray(X, dtype=np.float64)
    X.setflags(write=False)  # shared between variants: nobody may change it
    y = np.ascontiguousarray(y)
    y.setflags(write=False)
    return X, y


def make_data(wid, quick=False, dtype=np.float64):
    """The workload's data, C-contiguous.

    Parameters
    ----------
    wid : str
        Workload id.
    quick : bool, default=False
        If True, only the first ``quick_rows`` rows (quick mode: checks the harness, its
        numbers are not comparable with the full workload's).
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        dtype of ``X`` (the float32 variants cast before ``fit``).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), read-only when float64
    y : ndarray of shape (n_samples,), read-only
    """
    w = get_workload(wid)
    X, y = _full_data(w.id)
    if quick:
        X, y = X[: w.quick_rows], y[: w.quick_rows]
    if np.dtype(dtype) != X.dtype:
        X = np.ascontiguousarray(X, dtype=dtype)
    return X, y


def estimator_params(wid, epochs=None):
    """scikit-learn constructor parameters of a workload.

    Parameters
    ----------
    wid : str
    epochs : int, optional
        Defaults to the workload's full number of epochs. Every epoch runs
        (``tol=0``, ``n_iter_no_change=epochs + 1``).

    Returns
    -------
    dict
    """
    w = get_workload(wid)
    epochs = w.epochs if epochs is None else int(epochs)
    params = dict(
        hidden_layer_sizes=tuple(w.hidden), activation=w.activation, solver=w.solver,
        batch_size=w.batch_size, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
        **COMMON_PARAMS,
    )
    params.update(w.extra)
    return params


def make_estimator(lib, wid, epochs=None, backend=None):
    """An unfitted estimator for a workload.

    Parameters
    ----------
    lib : {'sklearn', 'fastmlp'}
    wid : str
    epochs : int, optional
    backend : str, optional
        fastmlp's ``backend`` (ignored for scikit-learn); default ``'auto'``.

    Returns
    -------
    estimator
    """
    w = get_workload(wid)
    params = estimator_params(wid, epochs)
    if lib == "sklearn":
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    elif lib == "fastmlp":
        from fastmlp import MLPClassifier, MLPRegressor

        params["backend"] = backend or "auto"
    else:
        raise ValueError(f"lib must be 'sklearn' or 'fastmlp', got {lib!r}")
    cls = MLPRegressor if w.task == "regression" else MLPClassifier
    return cls(**params)


def fit_estimator(est, X, y):
    """``est.fit(X, y)`` with the expected ``ConvergenceWarning`` silenced.

    The workloads run a fixed number of epochs on purpose, so the "maximum iterations reached"
    warning says nothing; printing it thousands of times would only add noise to timings.
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def layer_units(wid, n_features=None):
    """``[n_features, *hidden, n_outputs]`` of a workload's network."""
    w = get_workload(wid)
    if n_features is None:
        n_features = _full_data(w.id)[0].shape[1]
    if w.task == "multiclass":
        n_out = int(np.unique(_full_data(w.id)[1]).size)
    else:
        n_out = 1
    return [int(n_features), *map(int, w.hidden), n_out]


def n_params(wid):
    """Trainable parameters (weights and intercepts) of a workload's network.

    W2 gives 1973, the 2 -> 27 -> 31 -> 31 -> 1 network of the source tutorial.
    """
    units = layer_units(wid)
    return int(sum(a * b + b for a, b in zip(units[:-1], units[1:])))


def training_flops(wid, n_samples, epochs):
    """Floating-point operations of one fit: ``6 x n_samples x n_params x epochs``.

    The convention of ``WORKLOADS.md`` (2 for the forward product, 4 for the two backward
    products, per parameter and sample); activations and the optimizer are not counted.
    """
    return 6.0 * n_samples * n_params(wid) * epochs


# ------------------------------------------------------------------------------------ torch
def torch_available():
    """Whether PyTorch can be imported (imported here, never at module import)."""
    try:
        import torch  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def _torch_model(torch, wid, n_features, n_out, dtype):
    w = get_workload(wid)
    nn = torch.nn
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid}[w.activation]
    units = [n_features, *w.hidden, n_out]
    layers = []
    for l, (a, b) in enumerate(zip(units[:-1], units[1:])):
        lin = nn.Linear(a, b)
        # scikit-learn's initialisation: U(-bound, bound) for weights and intercepts, with
        # bound = sqrt(factor / (fan_in + fan_out)), factor 2 for logistic and 6 otherwise.
        factor = 2.0 if w.activation == "logistic" else 6.0
        bound = float(np.sqrt(factor / (a + b)))
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound)
            lin.bias.uniform_(-bound, bound)
        layers.append(lin)
        if l < len(units) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(dtype)


def torch_fit(wid, X, y, epochs=None, seed=0):
    """Train the workload's network with PyTorch on the CPU, as scikit-learn would.

    The same architecture and initialisation range, the same optimizer settings (Adam:
    ``lr=1e-3``, betas ``(0.9, 0.999)``, ``eps=1e-8``; SGD: ``lr=1e-3``, momentum 0.9,
    Nesterov), the same batch size, epochs and a fresh shuffle each epoch, the same losses
    (softmax cross-entropy, logistic cross-entropy, half squared error). scikit-learn's L2
    term ``0.5 alpha ||W||^2 / batch_rows`` becomes ``weight_decay = alpha / batch_size`` on
    the weights only (identical except on a shorter last batch). Uses PyTorch's default
    thread count.

    Parameters
    ----------
    wid : str
    X : ndarray of shape (n_samples, n_features), float32 or float64
        The model trains in this dtype.
    y : ndarray of shape (n_samples,)
    epochs : int, optional
    seed : int, default=0

    Returns
    -------
    model : torch.nn.Module
        With ``loss_``: the last epoch's mean loss plus the L2 term, comparable with
        scikit-learn's ``loss_``.
    """
    import torch
    import torch.nn.functional as F

    w = get_workload(wid)
    epochs = w.epochs if epochs is None else int(epochs)
    dtype = torch.float64 if X.dtype == np.float64 else torch.float32
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    X = np.ascontiguousarray(X)
    # torch refuses to wrap read-only arrays silently (the shared workload data is read-only)
    Xt = torch.from_numpy(X if X.flags.writeable else X.copy())
    if w.task == "multiclass":
        classes, y_idx = np.unique(y, return_inverse=True)
        Yt = torch.from_numpy(y_idx.astype(np.int64))
        n_out = len(classes)
    else:
        Yt = torch.from_numpy(np.array(y, dtype=X.dtype))  # a writable copy
        n_out = 1
    model = _torch_model(torch, wid, X.shape[1], n_out, dtype)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    groups = [
        {"params": weights, "weight_decay": COMMON_PARAMS["alpha"] / w.batch_size},
        {"params": biases, "weight_decay": 0.0},
    ]
    lr = COMMON_PARAMS["learning_rate_init"]
    if w.solver == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=w.extra.get("momentum", 0.9),
                              nesterov=bool(w.extra.get("nesterovs_momentum", True)))
    n = Xt.shape[0]
    bs = w.batch_size
    model.train()
    loss_sum = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            xb, yb = Xt[idx], Yt[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            if w.task == "multiclass":
                loss = F.cross_entropy(out, yb)
            elif w.task == "binary":
                loss = F.binary_cross_entropy_with_logits(out[:, 0], yb)
            else:
                loss = 0.5 * F.mse_loss(out[:, 0], yb)
            loss.backward()
            opt.step()
            # scikit-learn computes every batch's loss too (for loss_curve_): same work
            loss_sum += loss.item() * idx.shape[0]
    model.eval()
    with torch.no_grad():
        l2 = sum(float((p * p).sum()) for p in weights)
    # comparable with scikit-learn's loss_: last epoch's mean batch loss plus its L2 term
    # (here with the final weights and the full batch size)
    model.loss_ = loss_sum / n + 0.5 * COMMON_PARAMS["alpha"] * l2 / bs
    return model


def torch_forward(model, X, proba=True):
    """A bare PyTorch forward (no input validation): probabilities or predicted indices.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`torch_fit` (a multiclass workload).
    X : torch.Tensor
    proba : bool, default=True
        Softmax probabilities if True, else the argmax.
    """
    import torch

    with torch.no_grad():
        out = model(X)
        return torch.softmax(out, dim=1) if proba else out.argmax(dim=1)


# ------------------------------------------------------------------------ kernel problems
KERNEL_SIZES = {"full": dict(rows=256, n_in=256, width=256, n_out=8),
                "quick": dict(rows=32, n_in=16, width=16, n_out=4)}
"""Sizes of the kernel-level problems of ``benchmarks/test_kernels.py``."""


def kernel_problem(activation="relu", dtype=np.float64, quick=False, loss_code=0, seed=0):
    """Arrays for calling a backend's entry points directly on a one-hidden-layer network.

    The network is ``n_in -> width (activation) -> n_out (identity)``: with a narrow output
    layer, the cost is that of the hidden layer (its GEMM, then bias + activation; in the
    backward pass the activation derivative, the weight-gradient GEMM and the bias sums).

    Parameters
    ----------
    activation : str
        Any hidden activation of :mod:`fastmlp.activations`.
    dtype : {numpy.float64, numpy.float32}
    quick : bool
        Tiny sizes (``KERNEL_SIZES['quick']``) for harness checks.
    loss_code : int, default=0
        ``counters[LOSS]`` (0 = squared error, which pairs with the identity output).
    seed : int

    Returns
    -------
    dict
        ``net`` (the :class:`fastmlp._network.Network`), ``theta``, ``grad``, ``opt_state``,
        ``layout``, ``act_params``, ``X``, ``Y``, ``out``, ``hyper``, ``counters``, ``rows``.
        The caller sizes ``work`` with the backend's own ``workspace_size``.
    """
    from ._network import Network

    s = KERNEL_SIZES["quick" if quick else "full"]
    dtype = np.dtype(dtype)
    net = Network([s["n_in"], s["width"], s["n_out"]], [activation], [{}], "identity")
    rng = np.random.default_rng(seed)
    theta = (0.1 * rng.standard_normal(net.n_params)).astype(dtype)
    for view, p in zip(net.slope_views(theta), net.act_params):
        if view is not None:  # learnable PReLU slopes start at their initial value
            view[...] = p[0]
    X = rng.standard_normal((s["rows"], s["n_in"])).astype(dtype)
    Y = rng.standard_normal((s["rows"], s["n_out"])).astype(dtype)
    # hyper: [LR, MOMENTUM, BETA_1, BETA_2, EPSILON, ALPHA]
    hyper = np.array([1e-3, 0.9, 0.9, 0.999, 1e-8, 1e-4], dtype=np.float64)
    # counters: [SOLVER, NESTEROV, ADAM_T, STEP, SEED, LOSS, SERIAL]
    counters = np.array([1, 0, 0, 0, 12345, loss_code, 0], dtype=np.int64)
    return dict(
        net=net, theta=theta, grad=np.zeros_like(theta),
        opt_state=np.zeros((2, net.n_params), dtype=dtype), layout=net.layout,
        act_params=net.act_params, X=X, Y=Y,
        out=np.empty((s["rows"], s["n_out"]), dtype=dtype), hyper=hyper, counters=counters,
        rows=s["rows"],
    )
