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
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


# Products of at most this many multiply-adds are computed by the loops below: BLAS costs
# about half a microsecond to set up any product, which is most of the time of a
# (32 x 27) x (27 x 1) or a (1 x 10) x (10 x 16) one (small layers, batches of one sample).
cdef enum:
    SMALL_GEMM = 2048


cdef inline void gemm_small(char ta, char tb, int m, int n, int k, const floating* A,
                            int lda, const floating* B, int ldb, floating* C,
                            int ldc) noexcept nogil:
    """Row-major ``C := op(A) op(B)`` (alpha 1, beta 0) by plain loops, for tiny sizes.

    For ``op(B) = B`` the inner loop runs along rows of ``B`` and ``C`` (contiguous, so
    the compiler vectorises it); for ``op(B) = B^T`` it is a dot product along rows of
    ``A`` and ``B``.
    """
    cdef Py_ssize_t i, j, p
    cdef floating a, acc
    cdef floating* c
    cdef const floating* b
    if tb == b'n':
        for i in range(m):
            c = C + i * ldc
            for j in range(n):
                c[j] = 0
            for p in range(k):
                a = A[i * lda + p] if ta == b'n' else A[p * lda + i]
                b = B + p * ldb
                for j in range(n):
                    c[j] = c[j] + a * b[j]
    else:
        for i in range(m):
            c = C + i * ldc
            for j in range(n):
                b = B + j * ldb
                acc = 0
                if ta == b'n':
                    for p in range(k):
                        acc = acc + A[i * lda + p] * b[p]
                else:
                    for p in range(k):
                        acc = acc + A[p * lda + i] * b[p]
                c[j] = acc


cdef inline void gemm(char ta, char tb, int m, int n, int k, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """Row-major ``C (m x n) := alpha op(A) op(B) + beta C``; ``ta``/``tb`` are ``b'n'``
    or ``b't'``; ``op(A)`` is (m x k), ``op(B)`` is (k x n).

    With ``beta == 0`` ``C`` is not read (it may hold garbage or NaN). Tiny products go to
    :func:`gemm_small`; a product with one row (or one column) goes to GEMV: OpenBLAS's GEMM
    spends microseconds setting up a one-row product (one-row predictions, batches of one).
    """
    cdef int one = 1, inc
    cdef char t
    if alpha == 1 and beta == 0 and <long>m * n * k <= SMALL_GEMM:
        gemm_small(ta, tb, m, n, k, A, lda, B, ldb, C, ldc)
        return
    if m == 1:
        # C^T (n x 1) = op(B)^T op(A)^T: op(B)^T is B's column-major view (transposed when
        # tb == 't'); op(A)^T is A's one row (ta == 'n') or its column with stride lda
        inc = 1 if ta == b'n' else lda
        t = b't' if tb == b't' else b'n'
        if floating is float:
            if tb == b'n':
                sgemv(&t, &n, &k, &alpha, <float*>B, &ldb, <float*>A, &inc, &beta, C, &one)
            else:
                sgemv(&t, &k, &n, &alpha, <float*>B, &ldb, <float*>A, &inc, &beta, C, &one)
        else:
            if tb == b'n':
                dgemv(&t, &n, &k, &alpha, <double*>B, &ldb, <double*>A, &inc, &beta, C, &one)
            else:
                dgemv(&t, &k, &n, &alpha, <double*>B, &ldb, <double*>A, &inc, &beta, C, &one)
        return
    if n == 1:
        # C (m x 1), stride ldc, = op(A) op(B): op(A) is A^T's column-major view transposed
        # (ta == 'n': A is (m x k) row-major = column-major (k x m), so GEMV 't')
        inc = 1 if tb == b't' else ldb
        t = b't' if ta == b'n' else b'n'
        if floating is float:
            if ta == b'n':
                sgemv(&t, &k, &m, &alpha, <float*>A, &lda, <float*>B, &inc, &beta, C, &ldc)
            else:
                sgemv(&t, &m, &k, &alpha, <float*>A, &lda, <float*>B, &inc, &beta, C, &ldc)
        else:
            if ta == b'n':
                dgemv(&t, &k, &m, &alpha, <double*>A, &lda, <double*>B, &inc, &beta, C, &ldc)
            else:
                dgemv(&t, &m, &k, &alpha, <double*>A, &lda, <double*>B, &inc, &beta, C, &ldc)
        return
    # scipy's signatures are not const-qualified: the casts only drop ``const``
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)
