"""summary(): the layer table and the count of trainable parameters (seed 004: 1973)."""

import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from fastmlp import MLPClassifier, MLPRegressor
from fastmlp._summary import layer_table, summary

BACKENDS = ["numpy", "numba", "cython"]
RNG = np.random.RandomState(0)
X2 = RNG.uniform(-1, 1, (40, 2))
Y_BIN = (X2[:, 0] * X2[:, 1] > 0).astype(int)
Y_REG = X2.sum(axis=1)


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _total(text):
    match = re.search(r"Total trainable parameters: (\d+)$", text)
    assert match, text
    return int(match.group(1))


def _rows(text):
    """{layer name: (units, activation, parameters)} parsed from the table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(input|hidden \d+|output)\s+(\d+)\s+(\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)"
                     r"\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), m.group(3), int(m.group(7)))
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_004_network_has_1973_parameters(backend):
    # 2 -> 27 -> 31 -> 31 -> 1, relu, sigmoid output: the network of seed 004
    est = _fit(MLPClassifier(hidden_layer_sizes=(27, 31, 31), activation="relu", max_iter=2,
                             backend=backend, random_state=0), X2, Y_BIN)
    text = est.summary()
    assert _total(text) == 1973
    assert _total(text) == est._theta.size
    rows = _rows(text)
    assert rows["input"] == (2, "-", 0)
    assert rows["hidden 1"] == (27, "relu", 2 * 27 + 27)
    assert rows["hidden 2"] == (31, "relu", 27 * 31 + 31)
    assert rows["hidden 3"] == (31, "relu", 31 * 31 + 31)
    assert rows["output"] == (1, "logistic", 31 + 1)


def test_summary_before_fit_with_sizes():
    est = MLPRegressor(hidden_layer_sizes=(27, 31, 31))
    text = summary(est, n_features=2, n_outputs=1)
    assert _total(text) == 1973
    assert "not fitted" in text
    assert _rows(text)["output"] == (1, "identity", 32)


def test_summary_before_fit_without_sizes_raises_not_fitted():
    est = MLPClassifier(hidden_layer_sizes=(3,))
    with pytest.raises(NotFittedError, match="number of inputs and outputs"):
        est.summary()
    with pytest.raises(NotFittedError, match="n_outputs"):
        summary(est, n_features=3)


def test_summary_before_fit_validates_parameters():
    with pytest.raises(ValueError):
        summary(MLPClassifier(activation="nope"), n_features=2, n_outputs=1)


def test_per_layer_counts_match_coefs():
    est = _fit(MLPRegressor(hidden_layer_sizes=(6, 4), activation=["tanh", "elu"],
                            max_iter=2, backend="numpy", random_state=0),
               X2, np.c_[Y_REG, -Y_REG, Y_REG ** 2])
    rows = layer_table(est)
    assert [r["layer"] for r in rows] == ["input", "hidden 1", "hidden 2", "output"]
    assert [r["units"] for r in rows] == [2, 6, 4, 3]
    for r, W, b in zip(rows[1:], est.coefs_, est.intercepts_):
        assert r["weights"] == W.size and r["biases"] == b.size and r["slopes"] == 0
        assert r["params"] == W.size + b.size
    text = summary(est)
    assert "elu(alpha=1)" in text and "tanh" in text
    assert _total(text) == sum(W.size + b.size for W, b in zip(est.coefs_, est.intercepts_))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_counts_one_slope_per_unit(backend):
    est = _fit(MLPClassifier(hidden_layer_sizes=(5, 3), activation="prelu", max_iter=2,
                             backend=backend, random_state=0), X2, Y_BIN)
    rows = layer_table(est)
    assert [r["slopes"] for r in rows] == [0, 5, 3, 0]
    assert rows[1]["params"] == 2 * 5 + 5 + 5
    assert rows[2]["params"] == 5 * 3 + 3 + 3
    assert _total(est.summary()) == est._theta.size == 20 + 21 + 4
    assert "prelu(init=0.25)" in est.summary()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [2, 4])
def test_maxout_counts_its_pieces(k, backend):
    est = _fit(MLPClassifier(hidden_layer_sizes=(5,), activation="maxout", max_iter=2,
                             activation_params={"k": k}, backend=backend, random_state=0),
               X2, Y_BIN)
    rows = layer_table(est)
    assert rows[1]["units"] == 5
    assert rows[1]["weights"] == 2 * 5 * k and rows[1]["biases"] == 5 * k
    assert rows[2]["weights"] == 5  # the next layer sees 5 units, not 5 * k pieces
    assert _total(est.summary()) == est._theta.size == 2 * 5 * k + 5 * k + 5 + 1
    assert f"maxout(k={k})" in est.summary()


def test_no_hidden_layer():
    est = _fit(MLPRegressor(hidden_layer_sizes=(), max_iter=2, backend="numpy"), X2, Y_REG)
    rows = layer_table(est)
    assert [r["layer"] for r in rows] == ["input", "output"]
    assert _total(summary(est)) == 3


def test_multiclass_output_and_activation_params_are_shown():
    y = RNG.randint(0, 4, 40)
    est = _fit(MLPClassifier(hidden_layer_sizes=(3,), activation="leaky_relu", max_iter=2,
                             activation_params={"negative_slope": 0.3}, backend="numpy"),
               X2, y)
    text = est.summary()
    assert "leaky_relu(negative_slope=0.3)" in text
    assert _rows(text)["output"] == (4, "softmax", 3 * 4 + 4)
