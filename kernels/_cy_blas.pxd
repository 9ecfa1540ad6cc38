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


cdef inline void _outer(char ta, char tb, int m, int n, floating alpha, const floating* A,
                        int lda, const floating* B, int ldb, floating beta, floating* C,
                        int ldc) noexcept nogil:
    """Row-major ``C (m x n) := alpha a b^T + beta C`` for ``op(A)`` (m x 1) and ``op(B)``
    (1 x n): element i of a is ``A[i * lda]`` (``ta == 'n'``) or ``A[i]``; element j of b
    is ``B[j]`` (``tb == 'n'``) or ``B[j * ldb]``. ``beta == 0`` does not read ``C``."""
    cdef int i, j
    cdef int sa = lda if ta == b'n' else 1
    cdef int sb = 1 if tb == b'n' else ldb
    cdef floating ai
    cdef floating* c
    for i in range(m):
        ai = alpha * A[i * sa]
        c = C + <Py_ssize_t>i * ldc
        if beta == 0:
            if sb == 1:
                for j in range(n):
                    c[j] = ai * B[j]
            else:
                for j in range(n):
                    c[j] = ai * B[<Py_ssize_t>j * sb]
        else:
            for j in range(n):
                c[j] = ai * B[<Py_ssize_t>j * sb] + beta * c[j]


cdef inline void gemm(char ta, char tb, int m, int n, int k, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """Row-major ``C (m x n) := alpha op(A) op(B) + beta C``; ``ta``/``tb`` are ``b'n'``
    or ``b't'``; ``op(A)`` is (m x k), ``op(B)`` is (k x n).

    With ``beta == 0`` ``C`` is not read (it may hold garbage or NaN). A product with one
    row (or one column) goes to GEMV: OpenBLAS's GEMM spends microseconds setting up a
    one-row product (one-row predictions, batches of one sample). Plain loops for tiny
    products were measured and dropped: they lose to BLAS whenever the inner dimension is
    short, and win by under half a microsecond otherwise.
    """
    cdef int one = 1, inc
    cdef char t
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
    if k == 1:
        # an outer product (the delta reaching a layer from a one-output layer):
        # OpenBLAS's GEMM takes 30 us for 200 x 1 x 64, the loop 2 (measured)
        _outer(ta, tb, m, n, alpha, A, lda, B, ldb, beta, C, ldc)
        return
    # scipy's signatures are not const-qualified: the casts only drop ``const``
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)


# scipy's OpenBLAS runs a GEMM on ceil(m n k / 262144) - 1 threads at most (its
# GEMM_MULTITHREAD_THRESHOLD of 4 times 65536), so a product of at most this many
# multiply-adds always stays on the calling thread (checked: process CPU time / wall time).
cdef enum:
    SERIAL_MNK = 262144
    SERIAL_MIN_ROWS = 16    # smaller blocks cost more in repeated packing than they save


cdef inline bint stays_serial(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Whether :func:`gemm_serial` with ``serial`` keeps an (m x n) = (m x k)(k x n)
    product on the calling thread: it is small enough, or it splits into blocks of at
    least ``SERIAL_MIN_ROWS`` rows that are (products with one row or column go to GEMV,
    which scipy's OpenBLAS did not thread below these sizes either: measured)."""
    return m * n * k <= SERIAL_MNK or n * k * SERIAL_MIN_ROWS <= SERIAL_MNK


cdef inline void gemm_serial(bint serial, char ta, char tb, int m, int n, int k,
                             floating alpha, const floating* A, int lda, const floating* B,
                             int ldb, floating beta, floating* C, int ldc) noexcept nogil:
    """:func:`gemm`; with ``serial``, a product too large to stay on one BLAS thread is
    run as equal blocks of rows of ``C`` small enough that it does.

    This is how a fit keeps its products on its own thread while other fits run in the
    process (GridSearchCV with a threading backend) without touching the BLAS's global
    thread count. Products whose blocks would have fewer than ``SERIAL_MIN_ROWS`` rows
    are not split (they are large enough that BLAS threads pay off anyway).
    """
    cdef Py_ssize_t nk = <Py_ssize_t>n * k
    cdef int n_blocks, rows, i0, mb
    if not serial or <Py_ssize_t>m * nk <= SERIAL_MNK or not stays_serial(m, n, k):
        gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        return
    mb = <int>(SERIAL_MNK // nk)
    n_blocks = (m + mb - 1) // mb
    mb = (m + n_blocks - 1) // n_blocks    # equal blocks: no small remainder
    i0 = 0
    while i0 < m:
        rows = min(mb, m - i0)
        # row i of op(A) is A + i * lda ('n') or column i of A, A + i ('t')
        gemm(ta, tb, rows, n, k, alpha, A + (<Py_ssize_t>i0 * lda if ta == b'n' else i0),
             lda, B, ldb, beta, C + <Py_ssize_t>i0 * ldc, ldc)
        i0 += mb
