"""Build configuration: only the Cython extensions (metadata lives in pyproject.toml)."""
from setuptools import setup

setup()
