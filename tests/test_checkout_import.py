"""fastmlp imported from its source checkout still finds its installed kernels.

Python puts the current directory first on ``sys.path``, so the README's first command
(``pip install . && python -m fastmlp demo``, run in the checkout's root) imports the
checkout's ``fastmlp/``, which has no ``kernels`` subpackage. ``.ci/run`` installs fastmlp
non-editable and runs the tests from the checkout, which is that case.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastmlp._checkout import extend_path

ROOT = Path(__file__).resolve().parents[1]


def _package(parent, name, with_kernels):
    pkg = parent / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    if with_kernels:
        (pkg / "kernels").mkdir()
        (pkg / "kernels" / "__init__.py").write_text("")
    return pkg


def test_a_checkout_gets_the_installed_copy_that_has_kernels(tmp_path, monkeypatch):
    checkout = _package(tmp_path / "checkout", "fakepkg", with_kernels=False)
    (tmp_path / "checkout" / "kernels").mkdir()  # the checkout's kernels beside the package
    installed = _package(tmp_path / "site", "fakepkg", with_kernels=True)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "checkout"), str(tmp_path / "site")])
    assert extend_path([str(checkout)], "fakepkg") == [str(checkout), str(installed)]


def test_the_current_directory_as_an_empty_entry_is_the_checkout(tmp_path, monkeypatch):
    checkout = _package(tmp_path / "checkout", "fakepkg", with_kernels=False)
    installed = _package(tmp_path / "site", "fakepkg", with_kernels=True)
    monkeypatch.chdir(tmp_path / "checkout")
    monkeypatch.setattr(sys, "path", ["", str(tmp_path / "site")])
    assert extend_path([str(checkout)], "fakepkg") == [str(checkout), str(installed)]


def test_an_installed_package_is_left_as_it_is(tmp_path, monkeypatch):
    installed = _package(tmp_path / "site", "fakepkg", with_kernels=True)
    _package(tmp_path / "other", "fakepkg", with_kernels=True)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), str(tmp_path / "other")])
    assert extend_path([str(installed)], "fakepkg") == [str(installed)]


def test_a_checkout_with_no_installed_copy_is_left_as_it_is(tmp_path, monkeypatch):
    checkout = _package(tmp_path / "checkout", "fakepkg", with_kernels=False)
    _package(tmp_path / "site", "fakepkg", with_kernels=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "checkout"), str(tmp_path / "site")])
    assert extend_path([str(checkout)], "fakepkg") == [str(checkout)]


@pytest.mark.skipif(not (ROOT / "fastmlp" / "__init__.py").exists()
                    or not (ROOT / "kernels").is_dir(),
                    reason="the tests are not run from a source checkout")
def test_compiled_backends_load_in_the_checkout_root():
    # what `python -m fastmlp demo` in the checkout's root imports: the checkout's fastmlp
    code = ("import json, fastmlp; from fastmlp.backends import available_backends; "
            "print(json.dumps([fastmlp.__file__, available_backends()]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    where, reasons = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(where).resolve() == ROOT / "fastmlp" / "__init__.py"
    assert reasons == {"numpy": None, "numba": None, "cython": None}
