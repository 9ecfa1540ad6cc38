"""Every example in examples/ runs with small settings and shows what it claims."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BACKENDS = ["numpy", "numba", "cython"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

try:
    import matplotlib  # noqa: F401

    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_png(result, tmp_path, name):
    png = tmp_path / f"{name}.png"
    if HAVE_MPL:
        assert result["png"] is not None and Path(result["png"]) == png
        assert png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert result["png"] is None and not png.exists()


def test_every_example_is_tested_and_listed():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    assert scripts == {"xor", "linear_2x_plus_1", "planar_flower", "image_fit"}
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in scripts:
        assert f"`{name}.py`" in readme


@pytest.mark.parametrize("backend", BACKENDS)
def test_xor_fits_all_four_points(backend, tmp_path, capsys):
    result = _load("xor").main(quick=True, out_dir=tmp_path, backend=backend)
    assert np.array_equal(result["predictions"], [0, 1, 1, 0])
    assert result["accuracy"] == 1.0
    assert "accuracy: 100%" in capsys.readouterr().out
    _check_png(result, tmp_path, "xor")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_predicts_25_at_12(backend, tmp_path, capsys):
    result = _load("linear_2x_plus_1").main(quick=True, out_dir=tmp_path, backend=backend)
    assert result["prediction_at_12"] == pytest.approx(25.0, abs=0.5)
    assert result["weight"] == pytest.approx(2.0, abs=0.05)
    assert result["bias"] == pytest.approx(1.0, abs=0.1)
    assert result["loss_curve"][-1] < result["loss_curve"][0]
    assert "prediction at x = 12" in capsys.readouterr().out
    _check_png(result, tmp_path, "linear_2x_plus_1")


@pytest.mark.parametrize("backend", BACKENDS)
def test_flower_hidden_layer_beats_logistic_regression(backend, tmp_path, capsys):
    result = _load("planar_flower").main(quick=True, out_dir=tmp_path, backend=backend)
    # a line cannot separate the petals; four tanh units can
    assert result["logistic_accuracy"] < 0.7
    assert result["hidden_accuracy"] > 0.85
    assert result["hidden_accuracy"] > result["logistic_accuracy"] + 0.2
    out = capsys.readouterr().out
    assert "logistic regression" in out and "4 tanh units" in out
    _check_png(result, tmp_path, "planar_flower")


def test_flower_data_shape_and_classes():
    X, y = _load("planar_flower").make_flower()
    assert X.shape == (400, 2) and np.bincount(y).tolist() == [200, 200]
    assert np.abs(X).max() < 5.5  # petals of length 4 plus noise


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_fit_loss_decreases_and_summary_shows_1973(backend, tmp_path, capsys):
    module = _load("image_fit")
    result = module.main(quick=True, out_dir=tmp_path, backend=backend)
    assert result["n_params"] == 1973
    assert "Total trainable parameters: 1973" in capsys.readouterr().out
    losses = [loss for _, loss in result["losses"]]
    assert losses[-1] < 0.6 * losses[0]
    # the learning rate decays from stage to stage
    rates = [lr for lr, _ in result["losses"][1:]]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    assert result["pixel_accuracy"] > 0.8
    _check_png(result, tmp_path, "image_fit")


def test_image_is_drawn_without_downloads():
    image = _load("image_fit").draw_image(24)
    assert image.shape == (24, 24) and set(np.unique(image)) == {0, 1}
    assert 0.2 < image.mean() < 0.8


def test_examples_run_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = _load("linear_2x_plus_1").main(quick=True, out_dir=tmp_path, backend="numpy")
    assert result["png"] is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["xor", "linear_2x_plus_1"])
def test_example_runs_as_a_script(name, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    if HAVE_MPL:
        assert (tmp_path / f"{name}.png").exists()
