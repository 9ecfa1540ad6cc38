"""Model summary: a text table of the layers and their trainable parameters (seed 004)."""

from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError

from ._network import FAN_IN, FAN_OUT, K, N_PRE, SLOPE_OFF, Network

__all__ = ["summary", "layer_table"]


def _format_activation(act, params):
    if not act.params:
        return act.name
    values = ", ".join(f"{p}={params[p]:g}" for p in act.params)
    return f"{act.name}({values})"


def _output_activation(est, n_outputs):
    """Output activation of an unfitted estimator, as ``_initialize`` will choose it."""
    if not is_classifier(est):
        return "exp" if getattr(est, "loss", None) == "poisson" else "identity"
    # one output: binary; several: softmax (multiclass) or logistic (multilabel), decided
    # by the targets, which are not known yet
    return "logistic" if n_outputs == 1 else None


def _network_of(est, n_features, n_outputs):
    """The fitted network, or the one ``fit`` would build for the given sizes."""
    if hasattr(est, "_network") and hasattr(est, "_theta"):
        return est._network, None
    missing = [name for name, v in (("n_features", n_features), ("n_outputs", n_outputs))
               if v is None]
    if missing:
        raise NotFittedError(
            f"This {type(est).__name__} is not fitted yet, so the number of inputs and "
            "outputs (which fit reads from X and y) is unknown. Call fit first, or pass "
            f"{' and '.join(missing)} to fastmlp._summary.summary(est, n_features=..., "
            "n_outputs=...)."
        )
    sizes = est._hidden_layer_sizes()
    acts, params = est._hidden_activations(len(sizes))
    out = _output_activation(est, n_outputs)
    units = [int(n_features)] + sizes + [int(n_outputs)]
    # the parameter count does not depend on the output activation, only its label does
    net = Network(units, acts, params, out or "softmax")
    return net, ("softmax or logistic" if out is None else None)


def layer_table(est, n_features=None, n_outputs=None):
    """The rows of :func:`summary` as data.

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        Fitted, or unfitted with ``n_features`` and ``n_outputs`` given.
    n_features, n_outputs : int, default=None
        Sizes of the input and output layers of an unfitted estimator (ignored once fitted).

    Returns
    -------
    rows : list of dict
        One dict per layer (input, each hidden layer, output) with keys ``layer``,
        ``units``, ``activation``, ``weights``, ``biases``, ``slopes`` and ``params``
        (the layer's trainable parameters, ``weights + biases + slopes``).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted and ``n_features`` or ``n_outputs`` is missing.
    """
    net, out_label = _network_of(est, n_features, n_outputs)
    rows = [dict(layer="input", units=int(net.layout[0, FAN_IN]), activation="",
                 weights=0, biases=0, slopes=0, params=0)]
    n_weight_layers = len(net.layout)
    for l, (row, act) in enumerate(zip(net.layout, net.activations)):
        last = l == n_weight_layers - 1
        fan_in, units, n_pre = int(row[FAN_IN]), int(row[FAN_OUT]), int(row[N_PRE])
        weights = fan_in * n_pre  # a maxout unit has K pieces, each with its own weights
        biases = n_pre
        slopes = units if row[SLOPE_OFF] >= 0 else 0
        if last:
            label = out_label or act.name
        else:
            params = dict(zip(act.params, act.defaults))
            params.update(net.hidden_params[l])
            if act.kind == "maxout":
                params["k"] = int(row[K])
            label = _format_activation(act, params)
        rows.append(dict(layer="output" if last else f"hidden {l + 1}", units=units,
                         activation=label, weights=weights, biases=biases, slopes=slopes,
                         params=weights + biases + slopes))
    return rows


def summary(est, n_features=None, n_outputs=None):
    r"""A text table of the layers of a multilayer perceptron and its trainable parameters.

    One line per layer (input, each hidden layer, output) with its number of units, its
    activation (with its parameters) and its trainable parameters, then the total. A dense
    layer with :math:`n_{in}` inputs and :math:`n` units has

    .. math::

        n_{in}\, n k + n k + s

    parameters: the weights, the biases, and :math:`s = n` learnable slopes for ``prelu``
    (0 otherwise), where :math:`k` is the number of affine pieces of a ``maxout`` unit (1 for
    every other activation). For the 2 -> 27 -> 31 -> 31 -> 1 network of seed 004 the total
    is :math:`81 + 868 + 992 + 32 = 1973`.

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        A fitted estimator, or an unfitted one together with ``n_features`` and
        ``n_outputs``.
    n_features : int, default=None
        Number of inputs of an unfitted estimator (ignored once fitted).
    n_outputs : int, default=None
        Number of output units of an unfitted estimator (ignored once fitted): 1 for a
        binary classifier or a single-target regressor, the number of classes (multiclass)
        or of labels (multilabel), the number of targets (multi-output regression).

    Returns
    -------
    table : str
        The table, ending with ``Total trainable parameters: <n>``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted and ``n_features`` or ``n_outputs`` is missing.

    Examples
    --------
    >>> from fastmlp import MLPRegressor
    >>> from fastmlp._summary import summary
    >>> est = MLPRegressor(hidden_layer_sizes=(27, 31, 31))
    >>> print(summary(est, n_features=2, n_outputs=1).splitlines()[-1])
    Total trainable parameters: 1973
    """
    rows = layer_table(est, n_features, n_outputs)
    fitted = hasattr(est, "_network") and hasattr(est, "_theta")
    header = ["Layer", "Units", "Activation", "Weights", "Biases", "Slopes", "Parameters"]
    cells = [header] + [
        [r["layer"], str(r["units"]), r["activation"] or "-", str(r["weights"]),
         str(r["biases"]), str(r["slopes"]), str(r["params"])]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    left = {0, 2}  # text columns; numbers are right-aligned

    def line(c):
        return "  ".join(v.ljust(w) if i in left else v.rjust(w)
                         for i, (v, w) in enumerate(zip(c, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    total = sum(r["params"] for r in rows)
    title = f"{type(est).__name__} ({'fitted' if fitted else 'not fitted'})"
    out = [title, line(cells[0]), rule] + [line(c) for c in cells[1:]] + [rule]
    out.append(f"Total trainable parameters: {total}")
    return "\n".join(out)
