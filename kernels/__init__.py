"""Compiled kernels of fastmlp, installed as ``fastmlp.kernels``.

``numba_kernels`` holds the Numba kernels (compiled on first use, cached on disk); ``_cy`` is the
Cython extension built by ``pip install``. Both implement ``docs/kernel_contract.md``; the
backends in ``fastmlp.backends`` wrap them.
"""
