"""Backends: name -> module implementing the kernel entry points.

Each backend module provides ``workspace_size``, ``train_epoch``, ``loss_grad`` and
``forward`` with the signatures of ``docs/kernel_contract.md``. Modules are imported on first
use (importing fastmlp does not import Numba or load the compiled extension). A backend that
cannot be loaded raises :class:`BackendUnavailableError` saying why; nothing falls back
silently.
"""

import importlib
import warnings

__all__ = ["BACKENDS", "BackendUnavailableError", "BackendFallbackWarning", "get_backend",
           "available_backends", "choose_backend"]

BACKENDS = {
    "numpy": "fastmlp.backends._numpy",
    "numba": "fastmlp.backends._numba",
    "cython": "fastmlp.backends._cython",
}
"""Backend name -> module path."""

_loaded = {}
_errors = {}


class BackendUnavailableError(ImportError):
    """Raised when a backend asked for by name cannot be loaded."""


class BackendFallbackWarning(RuntimeWarning):
    """Warned when ``backend='auto'`` cannot use the backend its rule prefers."""


def get_backend(name):
    """Return the backend module called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a backend name (the message lists them).
    BackendUnavailableError
        If the backend exists but cannot be loaded here (the message says why).
    """
    if name not in BACKENDS:
        raise ValueError(
            f"Unknown backend {name!r}. Available backends: 'auto', "
            + ", ".join(repr(n) for n in BACKENDS)
            + "."
        )
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        raise BackendUnavailableError(_errors[name])
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:  # keep the reason, say it every time
        _errors[name] = (
            f"The {name!r} backend is not available: {exc}. "
            + _HINTS.get(name, "")
        )
        raise BackendUnavailableError(_errors[name]) from exc
    _loaded[name] = module
    return module


_HINTS = {
    "numba": "Install numba (pip install numba) or choose backend='cython' or 'numpy'.",
    "cython": (
        "The compiled extension fastmlp.kernels._cy was not built; reinstall fastmlp with "
        "a C compiler available (pip install --force-reinstall --no-binary fastmlp fastmlp "
        "or pip install . from a checkout), or choose backend='numba' or 'numpy'."
    ),
}


def available_backends():
    """Names of the backends that load on this machine, with the reason for the others.

    Returns
    -------
    dict
        ``{name: None}`` for a working backend, ``{name: reason}`` otherwise.
    """
    status = {}
    for name in BACKENDS:
        try:
            get_backend(name)
            status[name] = None
        except BackendUnavailableError as exc:
            status[name] = str(exc)
    return status


def choose_backend(requested, X=None):
    """Resolve ``'auto'`` to a backend name; check that an explicit one loads.

    The rule of ``'auto'`` (measured by the benchmark suite, see benchmarks/RESULTS.md):
    the NumPy backend for sparse input (it multiplies sparse matrices without densifying),
    otherwise the first compiled backend that loads, Cython before Numba (it needs no
    just-in-time compilation on first use).
    """
    if requested != "auto":
        get_backend(requested)
        return requested
    import scipy.sparse as sp

    if X is not None and sp.issparse(X):
        return "numpy"
    reasons = []
    for name in ("cython", "numba"):
        try:
            get_backend(name)
        except BackendUnavailableError as exc:
            reasons.append(str(exc))
            continue
        if reasons:
            warnings.warn(f"backend='auto' is using {name!r}: " + " ".join(reasons),
                          BackendFallbackWarning, stacklevel=3)
        return name
    warnings.warn("backend='auto' found no compiled backend and is using the NumPy reference, "
                  "which is much slower: " + " ".join(reasons), BackendFallbackWarning,
                  stacklevel=3)
    return "numpy"
