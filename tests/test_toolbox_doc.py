"""docs/toolbox.md lists every activation and initialisation, as generated from the registries."""

import importlib.util
import re
from pathlib import Path

from fastmlp.activations import ALIASES, HIDDEN_ACTIVATIONS
from fastmlp.initializers import INITIALIZERS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_toolbox", DOCS / "gen_toolbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text, title):
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_toolbox_doc_is_up_to_date():
    committed = (DOCS / "toolbox.md").read_text(encoding="utf-8")
    assert committed == _generator().render(), "run: python docs/gen_toolbox.py"


def test_every_activation_has_one_line_with_its_formula():
    text = _section((DOCS / "toolbox.md").read_text(encoding="utf-8"),
                    "Hidden-layer activations")
    listed = re.findall(r"^- `([a-z_]+)`", text, flags=re.M)
    assert listed == list(HIDDEN_ACTIVATIONS)
    for name, act in HIDDEN_ACTIVATIONS.items():
        line = next(l for l in text.splitlines() if l.startswith(f"- `{name}`"))
        assert act.formula in line
        for param in act.params:
            assert f"`{param}`" in line
    for alias in ALIASES:
        assert f"`{alias}`" in text


def test_every_init_has_one_line_with_its_variance():
    text = _section((DOCS / "toolbox.md").read_text(encoding="utf-8"), "Initialisations")
    listed = re.findall(r"^- `([a-z_]+)`", text, flags=re.M)
    assert listed == list(INITIALIZERS)
    for line in text.splitlines():
        if line.startswith("- `"):
            assert "Var(W) = " in line and line.split("Var(W) = ")[1].strip()


def test_init_table_parses_every_scheme_from_the_module_docs():
    table = _generator().init_table()
    assert set(table) == set(INITIALIZERS)
    assert table["he_normal"] == ("N(0, 2 / fan_in)", "2 / fan_in")


def test_readme_lists_every_activation_and_init_one_line_each():
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    generator = _generator()
    assert generator.update_readme(readme) == readme, "run: python docs/gen_toolbox.py"
    block = readme.split(generator.BEGIN, 1)[1].split(generator.END, 1)[0]
    listed = re.findall(r"^- `([a-z_]+)`", block, flags=re.M)
    assert listed == list(HIDDEN_ACTIVATIONS) + list(INITIALIZERS)
