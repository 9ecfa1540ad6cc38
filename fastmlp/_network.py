"""The network as data: layer sizes, activation codes, one flat parameter vector.

A :class:`Network` is built once per fit from the layer sizes and the activations. It owns the
small integer/float arrays that compiled kernels read (``layout`` and ``act_params``, see
``docs/kernel_contract.md``) and knows where each layer's weights live in the flat vector
``theta``, so that ``coefs_[l]`` and ``intercepts_[l]`` can be views into it.
"""

import numpy as np

from .activations import OUTPUT_ACTIVATIONS, resolve_activation

# columns of ``layout``
FAN_IN, FAN_OUT, N_PRE, COEF_OFF, INTER_OFF, ACT, SLOPE_OFF, K = range(8)
N_LAYOUT_COLS = 8


class Network:
    """Shapes and offsets of a multilayer perceptron.

    Parameters
    ----------
    layer_units : list of int
        ``[n_features, hidden_1, ..., hidden_h, n_outputs]``.
    hidden_activations : list of str
        One activation name per hidden layer.
    hidden_params : list of dict
        One dict of activation parameters per hidden layer (missing keys take defaults).
    out_activation : str
        Output activation (``identity``, ``logistic``, ``softmax`` or ``exp``).

    Attributes
    ----------
    layout : ndarray of shape (n_layers - 1, 8), dtype int64
    act_params : ndarray of shape (n_layers - 1, 2), dtype float64
    n_params : int
        Length of ``theta``.
    """

    def __init__(self, layer_units, hidden_activations, hidden_params, out_activation):
        self.layer_units = [int(u) for u in layer_units]
        self.hidden_activations = list(hidden_activations)
        self.hidden_params = [dict(p) for p in hidden_params]
        self.out_activation = out_activation
        n_layers = len(self.layer_units) - 1
        acts = [resolve_activation(a) for a in self.hidden_activations]
        acts.append(OUTPUT_ACTIVATIONS[out_activation])
        self.activations = acts

        layout = np.zeros((n_layers, N_LAYOUT_COLS), dtype=np.int64)
        act_params = np.zeros((n_layers, 2), dtype=np.float64)
        fan_in = self.layer_units[0]
        for l, act in enumerate(acts):
            units = self.layer_units[l + 1]
            params = dict(zip(act.params, act.defaults))
            if l < n_layers - 1:
                params.update(self.hidden_params[l])
            k = int(params.get("k", 1)) if act.kind == "maxout" else 1
            layout[l, FAN_IN] = fan_in
            layout[l, FAN_OUT] = units
            layout[l, N_PRE] = units * k
            layout[l, ACT] = act.code
            layout[l, K] = k
            for j, name in enumerate(act.params[:2]):
                if name != "k":
                    act_params[l, j] = params[name]
            fan_in = units

        # theta: every coef matrix, then every intercept vector (scikit-learn's _pack order),
        # then the learnable PReLU slopes.
        offset = 0
        for l in range(n_layers):
            layout[l, COEF_OFF] = offset
            offset += layout[l, FAN_IN] * layout[l, N_PRE]
        self.n_coef_params = int(offset)
        for l in range(n_layers):
            layout[l, INTER_OFF] = offset
            offset += layout[l, N_PRE]
        for l in range(n_layers):
            if acts[l].kind == "prelu":
                layout[l, SLOPE_OFF] = offset
                offset += layout[l, FAN_OUT]
            else:
                layout[l, SLOPE_OFF] = -1
        self.n_params = int(offset)
        self.layout = layout
        self.act_params = act_params

    @property
    def n_layers(self):
        """Number of layers including input and output (scikit-learn's ``n_layers_``)."""
        return len(self.layer_units)

    @property
    def has_rrelu(self):
        return any(a.kind == "rrelu" for a in self.activations)

    def coef_shape(self, l):
        return (int(self.layout[l, FAN_IN]), int(self.layout[l, N_PRE]))

    def coef_views(self, vec):
        """Weight matrices of every layer as views into the flat vector ``vec``."""
        out = []
        for l in range(len(self.layout)):
            fi, npre = self.coef_shape(l)
            off = int(self.layout[l, COEF_OFF])
            out.append(vec[off : off + fi * npre].reshape(fi, npre))
        return out

    def intercept_views(self, vec):
        """Intercept vectors of every layer as views into ``vec``."""
        out = []
        for l in range(len(self.layout)):
            off = int(self.layout[l, INTER_OFF])
            out.append(vec[off : off + int(self.layout[l, N_PRE])])
        return out

    def slope_views(self, vec):
        """Learnable PReLU slopes as views into ``vec`` (``None`` for other layers)."""
        out = []
        for l in range(len(self.layout)):
            off = int(self.layout[l, SLOPE_OFF])
            out.append(None if off < 0 else vec[off : off + int(self.layout[l, FAN_OUT])])
        return out

    def coef_mask(self):
        """Boolean mask of ``theta`` entries that are weights (the L2 penalty applies to them)."""
        mask = np.zeros(self.n_params, dtype=bool)
        mask[: self.n_coef_params] = True
        return mask

    def describe(self):
        """Plain data that rebuilds this network (for pickling and :func:`fastmlp.load`)."""
        return {
            "layer_units": self.layer_units,
            "hidden_activations": self.hidden_activations,
            "hidden_params": self.hidden_params,
            "out_activation": self.out_activation,
        }

    @classmethod
    def from_description(cls, d):
        return cls(d["layer_units"], d["hidden_activations"], d["hidden_params"],
                   d["out_activation"])

    def __eq__(self, other):
        return isinstance(other, Network) and self.describe() == other.describe()

    def __getstate__(self):
        return self.describe()

    def __setstate__(self, state):
        self.__init__(**state)
