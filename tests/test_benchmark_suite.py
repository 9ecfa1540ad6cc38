"""CI runs the pytest-benchmark suite in its short mode: the harness must work.

``pytest benchmarks --benchmark-disable`` runs every benchmark of ``benchmarks/`` once, at
the tiny sizes of quick mode, with no timing (see ``benchmarks/conftest.py``). Nothing is
asserted about speed; a failing benchmark (an error in the harness or a backend) fails here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="benchmarks/ is not in this checkout")
def test_benchmark_suite_runs_in_short_mode(tmp_path):
    pytest.importorskip("pytest_benchmark")
    env = dict(os.environ, FASTMLP_BENCH_QUICK="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCHMARKS), "--benchmark-disable", "-q",
         "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    assert proc.returncode == 0, tail
    assert " passed" in tail, tail
