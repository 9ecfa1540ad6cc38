# Row-major GEMM for the Cython kernels, on scipy's BLAS (``scipy.linalg.cython_blas``).
#
# Every matrix of fastmlp is C-ordered (row-major); BLAS is column-major. A row-major
# (r x c) matrix with leading dimension ld is, to BLAS, its transpose: a column-major
# (c x r) matrix with the same ld. So the row-major product C = op(A) op(B) is the
# column-major product C^T = op(B)^T op(A)^T: swap the operands (and m, n), keep the
# transpose flags. This is scikit-learn's ``_cython_blas._gemm`` for ``RowMajor``.
#
# The functions are ``inline`` in this .pxd so that they cost nothing on top of the
# BLAS call, and ``noexcept nogil`` so the kernels call them inside one ``with nogil:``.

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(char ta, char tb, int m, int n, int k, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """Row-major ``C (m x n) := alpha op(A) op(B) + beta C``; ``ta``/``tb`` are ``b'n'``
    or ``b't'``; ``op(A)`` is (m x k), ``op(B)`` is (k x n).

    With ``beta == 0`` BLAS does not read ``C`` (it may hold garbage or NaN).
    """
    # scipy's signatures are not const-qualified: the casts only drop ``const``
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)
