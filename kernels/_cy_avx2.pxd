# Declarations of the AVX2 build: those of _cy.pxd (same source, see _cy_avx2.pyx).
include "_cy.pxd"
