"""Find the installed kernels when ``fastmlp`` is imported from its source checkout.

In the repository the kernels live in ``kernels/``, beside ``fastmlp/``, and ``pip install .``
installs them (with the compiled Cython extension) as ``fastmlp.kernels``. Python puts the
current directory first on ``sys.path``, so ``python -m fastmlp demo`` or a notebook started
in the checkout's root imports the checkout's ``fastmlp/``, which has no ``kernels``
subpackage, instead of the installed package: without this module every compiled backend
would report itself unavailable there, right after a successful install.

:func:`extend_path` appends the installed copy of the package to ``fastmlp.__path__`` in
that case, so that what the checkout lacks (``fastmlp.kernels``) is imported from the
installation and everything else from the checkout, which is where it was installed from.
An installed package (which has its ``kernels``) and an editable install (whose import hook
maps ``fastmlp.kernels`` to ``kernels/``) are left as they are.
"""

import os
import sys
from importlib.machinery import PathFinder


def extend_path(path, name):
    """``path`` (a package's ``__path__``), plus the directories of another installed copy
    of package ``name`` that hold its ``kernels``, when ``path`` is a source checkout.

    Parameters
    ----------
    path : list of str
        The package's ``__path__``.
    name : str
        The package's name (``"fastmlp"``).

    Returns
    -------
    list of str
        ``path`` unchanged when its first directory has a ``kernels`` subdirectory (an
        installed package) or no other copy of the package is found on ``sys.path``; else
        ``path`` followed by the other copy's directories that hold ``kernels``.
    """
    here = os.path.abspath(path[0])
    if os.path.isdir(os.path.join(here, "kernels")):
        return list(path)
    checkout = os.path.dirname(here)
    elsewhere = [entry for entry in sys.path
                 if os.path.abspath(entry or os.curdir) != checkout]
    spec = PathFinder.find_spec(name, elsewhere)
    if spec is None or not spec.submodule_search_locations:
        return list(path)
    # the checkout's own entries were left out of the search, so these are other copies
    installed = [d for d in spec.submodule_search_locations
                 if os.path.isdir(os.path.join(d, "kernels"))]
    return list(path) + installed
