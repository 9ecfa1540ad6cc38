"""The README's two set-up commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines()]


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = text.index("```bash")
    assert text[:first_block].count("\n") <= 3  # the commands come first
    install_and_demo, install_and_test = _readme_commands()
    assert install_and_demo == "pip install . && python -m fastmlp demo"
    assert install_and_test.startswith('pip install ".[test]"')
    assert "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = _readme_commands()[1]
    assert f"TEST_COMMAND='{test_command}'" in ci
    assert "-e " not in ci and "--editable" not in ci


def test_readme_python_examples_run_as_written():
    """Every ```python block of the README runs as written, and the usage example ends
    with what its comments claim: 'auto' picks Cython, the summary lists the
    per-layer activations, and the search covers its six candidates."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=50, as with sklearn
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert "'cython'" in blocks[-1] and namespace["clf"].backend_ == "cython"
    assert namespace["clf"].activation == ["selu", "gelu"]
    assert "selu" in namespace["clf"].summary() and "gelu" in namespace["clf"].summary()
    assert len(namespace["search"].cv_results_["params"]) == 6
