# The AVX2 build of the Cython kernels: the same source as _cy.pyx, compiled with -mavx2
# (setup.py, x86-64 only). The elementwise passes are vectorised four doubles (eight
# floats) wide instead of SSE2's two (four); that halves the cost of the fused Adam loop,
# which is bound by the throughput of division and square root and is the only pass of a
# large network that is not a GEMM. Floating-point contraction is off in both builds, so
# they compute the same operations in the same order and give identical results.
#
# fastmlp.backends._cython imports this module only when _cy.cpu_supports_avx2() says the
# CPU (and OS) support AVX2: importing it elsewhere could execute AVX2 instructions.

include "_cy.pyx"
