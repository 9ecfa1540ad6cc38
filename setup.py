"""Build configuration: only the Cython extension (metadata lives in pyproject.toml).

``FASTMLP_DEBUG_BUILD=1 pip install ...`` builds a debug variant: Cython's bounds and
wraparound checks on, no optimisation, debug symbols, and the C macro ``FASTMLP_DEBUG``.

A failed build fails the install: nothing here catches compiler or Cython errors.
"""
import os
import sysconfig

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTMLP_DEBUG_BUILD", "") == "1"

# the one set of compiler directives for every extension
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": DEBUG,
    "embedsignature": True,
    "cpow": True,
}

if DEBUG:
    EXTRA_COMPILE_ARGS = ["-O0", "-g3", "-UNDEBUG"]
    DEFINE_MACROS = [("FASTMLP_DEBUG", "1")]
else:
    # -fno-math-errno: sqrt needs no errno branch, so the optimizer loops vectorise.
    # -fno-trapping-math: comparisons may be evaluated as selects (the kernels never read
    # floating-point exception flags), so clamps and piecewise activations vectorise.
    # -ffp-contract=off: no fused multiply-adds, so every build (and the AVX2 one) rounds
    # exactly as the source says, and the same fit gives the same numbers on every CPU.
    EXTRA_COMPILE_ARGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    DEFINE_MACROS = []
DEFINE_MACROS.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))

# An AVX2 build of the same source (kernels/_cy_avx2.pyx), chosen at import time on CPUs
# that support it: x86-64 with GCC or Clang only (not for universal2 or ARM targets).
BUILD_AVX2 = os.name != "nt" and sysconfig.get_platform().endswith("x86_64")

# OpenMP runs the two halves of a split mini-batch in two threads (_cy.pyx, _train_epoch);
# a compiler without OpenMP fails the build (nothing is silently left serial)
OPENMP_COMPILE_ARGS = OPENMP_LINK_ARGS = ["-fopenmp"]

if os.name == "nt":  # MSVC takes none of the GCC/Clang flags above
    EXTRA_COMPILE_ARGS = ["/Od", "/Zi"] if DEBUG else ["/O2", "/fp:precise"]
    OPENMP_COMPILE_ARGS, OPENMP_LINK_ARGS = ["/openmp"], []

# Cython names modules after the source tree, where the package is ``kernels`` (with its
# .pxd files); the extension is installed as ``fastmlp.kernels._cy`` (package-dir maps
# ``fastmlp.kernels`` to ``kernels/``). The C init symbol (PyInit__cy) depends only on the
# last component, so the module is cythonized as ``kernels._cy`` and renamed afterwards.
SOURCE_PACKAGE, INSTALLED_PACKAGE = "kernels", "fastmlp.kernels"

extensions = [
    Extension(
        f"{SOURCE_PACKAGE}._cy",
        ["kernels/_cy.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=DEFINE_MACROS,
        extra_compile_args=EXTRA_COMPILE_ARGS + OPENMP_COMPILE_ARGS,
        extra_link_args=OPENMP_LINK_ARGS,
    ),
]
if BUILD_AVX2:
    extensions.append(
        Extension(
            f"{SOURCE_PACKAGE}._cy_avx2",
            ["kernels/_cy_avx2.pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=DEFINE_MACROS,
            extra_compile_args=EXTRA_COMPILE_ARGS + OPENMP_COMPILE_ARGS + ["-mavx2"],
            extra_link_args=OPENMP_LINK_ARGS,
        )
    )

# The generated C goes to build/cython, not next to the .pyx: inside the package directory
# setuptools would ship it in the wheel as package data (the .pyx/.pxd sources ship).
ext_modules = cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES,
                        build_dir="build/cython")
for ext in ext_modules:
    ext.name = INSTALLED_PACKAGE + ext.name[len(SOURCE_PACKAGE):]

setup(ext_modules=ext_modules)
