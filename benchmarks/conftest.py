"""pytest-benchmark configuration of fastmlp's benchmark suite.

Quick mode (tiny sizes, one round: a check that the harness works, for CI) is on when the
environment variable ``FASTMLP_BENCH_QUICK=1`` is set or when pytest runs with
``--benchmark-disable``; ``FASTMLP_BENCH_QUICK=0`` forces full sizes. Nothing here asserts a
timing: a slow machine never fails the suite.
"""

import os
import sys

import pytest

# the test modules import the shared factories as ``workloads`` (benchmarks/ has no
# __init__.py; make the import independent of pytest's rootdir and import mode)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _quick(config):
    env = os.environ.get("FASTMLP_BENCH_QUICK", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    try:
        return bool(config.getoption("benchmark_disable"))
    except ValueError:  # pytest-benchmark not installed: the benchmark fixture will error
        return True


def pytest_configure(config):
    config._fastmlp_bench_quick = _quick(config)


def pytest_report_header(config):
    import workloads

    ok = [k for k, v in workloads.BACKEND_STATUS.items() if v is None]
    mode = "QUICK (harness check)" if config._fastmlp_bench_quick else "full"
    return (f"fastmlp benchmarks: {mode} sizes; backends: {', '.join(ok)}; "
            f"torch: {'yes' if workloads.TORCH else 'no'}")


@pytest.fixture(scope="session")
def quick(request):
    """True in quick mode (see the module docstring)."""
    return request.config._fastmlp_bench_quick
