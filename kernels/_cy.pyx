"""fastmlp's Cython kernels: whole training epochs, full-batch gradients and predictions.

This module implements ``docs/kernel_contract.md`` (the arrays ``theta``, ``layout``,
``act_params``, ``hyper``, ``counters`` and the activation/loss codes are described there).
The layout follows scikit-learn's ``utils/_cython_blas.pyx``:

- the C-level API (``_cy.pxd``) is ``noexcept nogil`` and written once for float32 and
  float64 with the ``floating`` fused type; BLAS comes from ``scipy.linalg.cython_blas``
  (row-major GEMM by swapping the operands, ``_cy_blas.pxd``);
- every buffer is carved out of the caller's ``work`` vector (sized by
  :func:`workspace_size`), so nothing is allocated per mini-batch;
- the ``def`` entry points validate their arguments once, then run the whole call (an epoch,
  a full batch, or every chunk of a prediction) inside one ``with nogil:`` block.

Per mini-batch the work is: gather the batch's rows of ``X``; per layer one GEMM then one
fused pass (bias + activation, storing ``f'(z)`` for the backward pass where it is cheaper
than recomputing it); one pass computing the loss, the output delta ``(p - y) * w`` and the
output bias gradient; per layer a GEMM for the weight gradient and (except for the input
layer) a GEMM for the delta followed by one fused pass (activation derivative, bias sums,
PReLU slope sums, maxout routing); and finally ONE loop over the flat vectors applying the
L2 term, the ``1 / sum(w)`` scaling and the SGD or Adam update, which also accumulates
``||W||^2`` for the loss.

Floating-point operations follow the NumPy reference backend's order where that is cheap,
so float64 results agree with it to rounding. In float32, logistic, tanh, softmax and exp
are evaluated in float32 and the activations with parameters or special functions (codes
7-12) in double, rounded once, as the reference computes them. The weight gradient is
scaled by ``1 / sum(w)`` with a multiplication where the reference divides (one ulp).

On x86-64 the same source is also compiled with AVX2 as ``_cy_avx2`` (see _cy_avx2.pyx).
"""

cimport numpy as cnp
import numpy as np

from cython cimport floating
from libc.float cimport DBL_EPSILON, DBL_MAX, FLT_EPSILON, FLT_MAX
from libc.math cimport erf, exp, expf, expm1, fabs, log, log1p, pow, sqrt, sqrtf
from libc.math cimport tanh, tanhf
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cython.parallel cimport prange

cimport openmp

from ._cy_blas cimport gemm, gemm_serial, stays_serial

cnp.import_array()

# C assert: compiled out in release builds (Python's CFLAGS define NDEBUG), active in the
# debug build (FASTMLP_DEBUG_BUILD=1 compiles with -UNDEBUG). The kernels index raw
# pointers, which Cython's boundscheck does not see, so the debug build asserts the
# invariants that decide every address: buffers inside ``work``, rows <= capacity, rows of
# X inside X. The ``def`` wrappers guarantee them in every build.
cdef extern from "<assert.h>":
    void c_assert "assert"(bint) noexcept nogil

cdef extern from *:
    """
    /* AVX2 support of the CPU and the OS (GCC and Clang check XGETBV for the OS part) */
    static int fastmlp_cpu_supports_avx2(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    #else
        return 0;
    #endif
    }
    """
    int fastmlp_cpu_supports_avx2() noexcept nogil

cdef extern from *:
    """
    /* a hint only: the rows of a shuffled batch are at random places in X */
    #if defined(__GNUC__) || defined(__clang__)
    #define FASTMLP_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define FASTMLP_PREFETCH(p) ((void)0)
    #endif
    """
    void prefetch "FASTMLP_PREFETCH"(const void*) noexcept nogil

cdef extern from *:
    """
    /* Flush-to-zero and denormals-are-zero while a kernel runs (x86 MXCSR bits 15 and 6);
       the caller's mode is restored on exit. Elsewhere no-ops. */
    #if defined(__SSE2__) || defined(__x86_64__) || defined(_M_X64)
    #include <xmmintrin.h>
    static inline unsigned int fastmlp_ftz_enter(void) {
        unsigned int old = _mm_getcsr();
        _mm_setcsr(old | 0x8040u);
        return old;
    }
    static inline void fastmlp_ftz_exit(unsigned int old) { _mm_setcsr(old); }
    static inline unsigned int fastmlp_fp_mode(void) { return _mm_getcsr(); }
    #else
    static inline unsigned int fastmlp_ftz_enter(void) { return 0u; }
    static inline void fastmlp_ftz_exit(unsigned int old) { (void)old; }
    static inline unsigned int fastmlp_fp_mode(void) { return 0u; }
    #endif
    """
    unsigned int ftz_enter "fastmlp_ftz_enter"() noexcept nogil
    void ftz_exit "fastmlp_ftz_exit"(unsigned int) noexcept nogil
    unsigned int c_fp_mode "fastmlp_fp_mode"() noexcept nogil

# rows of X ahead of the one being copied whose first cache line is requested
cdef enum:
    PREFETCH_ROWS = 8

__all__ = ["workspace_size", "split_batches", "train_epoch", "loss_grad", "forward",
           "rrelu_uniform", "activation_forward", "row_major_gemm", "optimizer_step",
           "cpu_supports_avx2", "fp_mode", "blas_warm_threads"]

cdef double SQRT_2 = sqrt(2.0)
cdef double SQRT_2_OVER_PI = sqrt(2.0 / 3.141592653589793)
cdef double INV_SQRT_2PI = 1.0 / sqrt(2.0 * 3.141592653589793)
cdef double GELU_C = 0.044715
cdef double SELU_LAMBDA = 1.0507009873554805
cdef double SELU_ALPHA = 1.6732632423543772

# Batches of at least SPLIT_MIN_ROWS rows are computed as two halves (:func:`split_kind`),
# in two OpenMP threads when the fit runs alone: in float32, networks whose half-batch
# products are at most SPLIT_MAX_MNK_F32 multiply-adds each; in float64, networks whose
# layers have at most SPLIT_MAX_WEIGHTS_F64 weights each.
# SPLIT_SERIAL: every product of a half stays on its BLAS thread by itself (or as row
# blocks, gemm_serial); SPLIT_ONE_BLAS: some do not, so the halves run in threads only while
# Python holds BLAS at one thread (counters[SERIAL] == 2). Halves in threads also run the
# Adam step of a large network in two threads, fused with the sum of their gradients
# (:func:`adam_step`). Measured on 2 cores (Cython, 2 epochs of 20000 rows, 100 features,
# 200-row batches unless said), whole batches (BLAS threading the products) against halves:
# float64 512-256 0.431 -> 0.409 s, 512-512 0.729 -> 0.598, 1024-512 1.293 -> 1.140,
# 1024-1024 (256 rows) 2.198 -> 1.955, W4 (784 features) 3.09 -> 2.90; float32 512-512
# 0.382 -> 0.333, 2048 (256 rows) 0.303 -> 0.241, but 1024-1024 1.044 -> 1.046 and W4 1.54
# -> 1.78: in float32 the multiply-adds are twice as fast and each half packs the whole
# weight matrix for its products, so the packing outweighs the gain on large layers. So it
# does in float64 beyond a million weights (10000 rows, 1 epoch, 128-row batches, whole ->
# halves: 2048-1024 1.163 -> 1.232 s, 1448-1448 1.152 -> 1.220, 2048-2048 2.329 -> 2.454;
# 1024-1024 at 64 and 100 rows even, 0.829 -> 0.842 and 0.679 -> 0.679).
cdef enum:
    SPLIT_MIN_ROWS = 64
    SPLIT_MAX_MNK_F32 = 67108864    # 2**26
    SPLIT_MAX_WEIGHTS_F64 = 1048576    # 2**20
    SPLIT_NONE = 0
    SPLIT_SERIAL = 1
    SPLIT_ONE_BLAS = 2

# Elements per block of the fused optimizer loop: ||W||^2 is summed over a block while
# it is in L1, then the block is updated (one pass over memory, and the update loop stays
# free of a floating-point reduction, so the compiler vectorises it). 256 rather than
# 1024: the block of theta then stays in L1 while the update streams grad, m and v
# (float64 blocks of 1024 fill a 32 KiB L1 four arrays over); an Adam step with L2 on
# W4's 1.86 M float32 parameters took 1.05 ms instead of 1.24 ms.
cdef enum:
    OPT_BLOCK = 256
    OPT_PAR_MIN = 262144    # entries; below, a fork/join costs more than half the loop
    SUMSQ_LANES = 16    # partial sums of _sumsq: two AVX2 registers of float32


# ======================================================== first touch of BLAS's buffers
# OpenBLAS (SciPy's, which these kernels call) maps a 32 MiB buffer per calling thread on
# its first product and packs operands into it; pages of it that no product has touched
# yet have no translation, and its kernels' accesses ahead of the packed panels into such
# pages are slow. Measured on a Zen 1 AMD VM (OpenBLAS 0.3.30, Haswell kernels): a 100 x
# 256 by 256 x 128 float32 product on one thread ran at 10 GFLOP/s until a larger product
# (or reading every page of the buffer) had touched those pages, and at 35-42 GFLOP/s after,
# for the rest of the process; float32 W3 with its halves on one thread took 4.1 s instead
# of 2.65 s, and two float64 fits of the grid's (64,) network in threads 71 ms each instead
# of 60 ms. A 384^3 float32 product on one thread touches enough of them, a 256^3 one does
# not; one WARM_N^3 product per thread (512: BLAS may thread it, each of its threads then
# packs a part), once per process and thread count, a few ms. Nothing else changes.
cdef enum:
    WARM_N = 512

cdef int _blas_warm_threads = 0


cdef void _warm_one() noexcept nogil:
    cdef Py_ssize_t nn = <Py_ssize_t>WARM_N * WARM_N
    cdef float* buf = <float*>malloc(3 * nn * sizeof(float))
    if buf == NULL:
        return   # only a speed-up: without memory for it, the fit runs as it would have
    memset(buf, 0, 2 * nn * sizeof(float))
    gemm(c'n', c'n', WARM_N, WARM_N, WARM_N, <float>1, buf, WARM_N, buf + nn, WARM_N,
         <float>0, buf + 2 * nn, WARM_N)
    free(buf)


cdef void warm_blas(int n_threads) noexcept nogil:
    """Touch the buffers OpenBLAS packs into, in ``n_threads`` (1 or 2) threads at once
    (each concurrent caller has a buffer of its own), the first time a fit uses that many;
    see the comment above. The threads are OpenMP's only when ``n_threads`` is 2, which the
    caller decides as for the halves of a batch (a forked child must not enter OpenMP)."""
    global _blas_warm_threads
    cdef int w
    if _blas_warm_threads >= n_threads:
        return
    if n_threads > 1:
        for w in prange(2, num_threads=2, schedule="static", chunksize=1):
            _warm_one()
    else:
        _warm_one()
    if n_threads > _blas_warm_threads:
        _blas_warm_threads = n_threads


# ============================================================ counter-based RNG (RReLU)
cdef uint64_t splitmix64(uint64_t x) noexcept nogil:
    """The SplitMix64 finaliser (unsigned 64-bit arithmetic wraps, as the contract asks)."""
    cdef uint64_t z = x + <uint64_t>0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef uint64_t rrelu_layer_key(uint64_t seed, uint64_t step, uint64_t layer) noexcept nogil:
    """``k_layer = SM(SM(seed ^ SM(step)) ^ layer)``."""
    return splitmix64(splitmix64(seed ^ splitmix64(step)) ^ layer)


cdef inline double _uniform(uint64_t key, uint64_t counter) noexcept nogil:
    """U[0, 1) of the contract: the top 53 bits of ``SM(key ^ counter)``."""
    return <double>(splitmix64(key ^ counter) >> 11) * 1.1102230246251565e-16  # 2**-53


# ====================================================================== scalar helpers
cdef inline floating _fexp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _ftanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating _fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _expit(floating z) noexcept nogil:
    """1 / (1 + e^-z) without overflow: exp is only taken of a non-positive number.

    Evaluated in the dtype (a literal ``1`` would make Cython compute float32 in double), as
    scipy's ``expit`` does: near saturation a one-ulp difference in ``p`` moves
    ``log(1 - p)`` a lot, so the kernels round like the reference.
    """
    cdef floating e, one = 1
    if z >= 0:
        e = _fexp(-z)
        return one / (one + e)
    e = _fexp(z)
    return e / (one + e)


cdef inline floating _vexp_nonpos(floating x) noexcept nogil:
    """``exp(x)`` for ``x <= 0`` (softmax's shifted logits), within 1 ulp, in straight-line
    code the compiler vectorises (libm's exp is a call per element: 6% of a digits epoch).

    ``x = n ln2 + r`` with ``n = round(x / ln2)`` (the 1.5 * 2**52 shift rounds), ``r``
    by Cody-Waite in two parts; ``exp(r)`` by its Taylor polynomial to degree 13 (7 for
    float32), ``|r| <= ln2 / 2``; ``2**n`` from ``n``'s bits in the shifted sum. Below the
    smallest normal result it returns 0 (the true value is under 2.3e-308, 1.2e-38).
    Needs ``-fno-trapping-math`` to vectorise (the selects are comparisons).
    """
    cdef floating t, n, r, p, x0 = x
    cdef uint64_t ub
    cdef uint32_t uf
    if floating is double:
        x = -708.0 if x < -708.0 else x
        t = x * 1.4426950408889634 + 6755399441055744.0
        n = t - 6755399441055744.0
        r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        memcpy(&ub, &t, 8)
        ub = (ub + 1023) << 52
        memcpy(&t, &ub, 8)
        return p * t if x0 >= -708.0 else 0.0
    else:
        x = <float>-87.0 if x < <float>-87.0 else x
        t = x * <float>1.44269504 + <float>12582912.0
        n = t - <float>12582912.0
        r = (x - n * <float>0.693145751953125) - n * <float>1.428606765330187045e-06
        p = <float>(1.0 / 5040.0)
        p = p * r + <float>(1.0 / 720.0)
        p = p * r + <float>(1.0 / 120.0)
        p = p * r + <float>(1.0 / 24.0)
        p = p * r + <float>(1.0 / 6.0)
        p = p * r + <float>0.5
        p = p * r + <float>1.0
        p = p * r + <float>1.0
        memcpy(&uf, &t, 4)
        uf = (uf + 127) << 23
        memcpy(&t, &uf, 4)
        return p * t if x0 >= <float>-87.0 else <float>0.0


cdef inline double _expit_d(double z) noexcept nogil:
    cdef double e
    if z >= 0:
        e = exp(-z)
        return 1.0 / (1.0 + e)
    e = exp(z)
    return e / (1.0 + e)


# ==================================================================== workspace layout
cdef inline bint _stores_fprime(int64_t code) noexcept nogil:
    # hidden activations whose derivative is stored by the training forward pass
    return code == A_LEAKY_RELU or (A_RRELU <= code <= A_HARD_TANH)


cdef Py_ssize_t row_width(const int64_t* layout, Py_ssize_t n_layers) noexcept nogil:
    """Elements of ``work`` per row of batch: the gathered input row, target row and sample
    weight, then per layer the buffers of :func:`layer_bufs`."""
    cdef Py_ssize_t l, width = layout[FAN_IN] + layout[(n_layers - 1) * N_COLS + FAN_OUT] + 1
    cdef Py_ssize_t npre, fo
    cdef int64_t code
    cdef bint hidden
    for l in range(n_layers):
        npre = layout[l * N_COLS + N_PRE]
        fo = layout[l * N_COLS + FAN_OUT]
        code = layout[l * N_COLS + ACT]
        hidden = l < n_layers - 1
        width += 2 * npre                     # Z, D
        if hidden and (code == A_PRELU or code == A_MAXOUT):
            width += fo                       # A (kept apart from Z)
        if hidden and _stores_fprime(code):
            width += fo                       # F = f'(z)
        if hidden and code == A_MAXOUT:
            width += fo                       # DA
    return width


cdef Bufs layer_bufs(const Net* net, Py_ssize_t l, Py_ssize_t cap) noexcept nogil:
    """Offsets of layer ``l``'s buffers in ``work`` for batches of up to ``cap`` rows.

    ``work`` = [X rows (cap x FAN_IN of layer 0)][Y rows (cap x n_outputs)][weights (cap)]
    then, per layer, [Z][A?][F?][D][DA?].
    ``A`` aliases ``Z`` unless the layer is PReLU (needs z for the slope gradient) or
    maxout (different width); the output layer is always computed in place.
    """
    cdef Py_ssize_t m, npre, fo
    cdef Py_ssize_t pos = cap * (net.layout[FAN_IN] + net.layout[(net.n_layers - 1) * N_COLS
                                                                 + FAN_OUT] + 1)
    cdef int64_t code
    cdef bint hidden
    cdef Bufs b
    b.z = b.a = b.d = b.da = b.f = -1   # l < n_layers always fills them
    for m in range(l + 1):
        npre = net.layout[m * N_COLS + N_PRE]
        fo = net.layout[m * N_COLS + FAN_OUT]
        code = net.layout[m * N_COLS + ACT]
        hidden = m < net.n_layers - 1
        b.z = pos
        pos += cap * npre
        if hidden and (code == A_PRELU or code == A_MAXOUT):
            b.a = pos
            pos += cap * fo
        else:
            b.a = b.z
        if hidden and _stores_fprime(code):
            b.f = pos
            pos += cap * fo
        else:
            b.f = -1
        b.d = pos
        pos += cap * npre
        if hidden and code == A_MAXOUT:
            b.da = pos
            pos += cap * fo
        else:
            b.da = b.d
    c_assert(pos <= cap * net.row_width)
    return b


# ========================================================================= activations
cdef void act_forward(int code, const double* p, floating* Z, floating* A, floating* F,
                      const floating* b, const floating* s, Py_ssize_t rows,
                      Py_ssize_t n_units, Py_ssize_t k, bint train,
                      uint64_t key, Py_ssize_t row0) noexcept nogil:
    """Add the bias to the GEMM output and apply activation ``code``, in one pass.

    Parameters
    ----------
    code : int
        Activation code (0-15 hidden, 20 softmax, 21 exp).
    p : pointer to 2 doubles
        The layer's ``act_params`` row.
    Z : (rows, n_units * k)
        In: ``X W``; out: ``z = X W + b`` (only kept for prelu and maxout; the in-place
        activations overwrite it with ``A``).
    A : (rows, n_units)
        Out: ``f(z)``. Must be ``Z`` itself except for prelu and maxout.
    F : (rows, n_units)
        Out, when ``train``: ``f'(z)`` for the codes that store their derivative
        (leaky_relu, rrelu and codes 7-14), so the backward pass needs no transcendental
        function. Must not be NULL for those codes (it is NULL for the others).
    b : (n_units * k,)
        Intercepts.
    s : (n_units,) or NULL
        PReLU slopes.
    train : bool
        RReLU draws its slopes from the counter-based generator with ``key`` (counter
        ``row * n_units + unit``) when True, and uses ``(lower + upper) / 2`` otherwise.
    row0 : int
        The batch row of ``Z``'s first row (``row = row0 + i``): nonzero for the second
        half of a split batch, so that a half draws the slopes the whole batch would.
    """
    cdef Py_ssize_t i, j, q, npre = n_units * k
    cdef floating* zr
    cdef floating* ar
    cdef floating* fr
    cdef floating z, r, c0, one = 1, zero = 0, top, bottom, mx, tot
    cdef double zd, t, e, sg, ph, zc, lo, span, rd
    cdef bint want_f = train
    cdef uint64_t base

    if code == A_IDENTITY:
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                zr[j] = zr[j] + b[j]
    elif code == A_LOGISTIC:
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                zr[j] = _expit(zr[j] + b[j])
    elif code == A_TANH:
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                zr[j] = _ftanh(zr[j] + b[j])
    elif code == A_RELU:
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                z = zr[j] + b[j]
                zr[j] = z if z > 0 else zero
    elif code == A_LEAKY_RELU:
        c0 = <floating>p[0]
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                z = zr[j] + b[j]
                r = one if z > 0 else c0
                zr[j] = z * r
                if want_f:
                    fr[j] = r
    elif code == A_PRELU:
        for i in range(rows):
            zr = Z + i * npre
            ar = A + i * n_units
            for j in range(npre):
                z = zr[j] + b[j]
                zr[j] = z
                ar[j] = z if z > 0 else z * s[j]
    elif code == A_RRELU:
        if want_f:
            lo = p[0]
            span = p[1] - p[0]
            for i in range(rows):
                zr = Z + i * npre
                fr = F + i * n_units
                base = <uint64_t>((row0 + i) * n_units)
                for j in range(npre):
                    z = zr[j] + b[j]
                    if z >= 0:
                        zr[j] = z
                        fr[j] = one
                    else:
                        # only negative z needs its random slope
                        r = <floating>(lo + span * _uniform(key, base + <uint64_t>j))
                        zr[j] = z * r
                        fr[j] = r
        else:
            rd = (p[0] + p[1]) / 2
            for i in range(rows):
                zr = Z + i * npre
                for j in range(npre):
                    z = zr[j] + b[j]
                    zr[j] = z if z >= 0 else <floating>(<double>z * rd)
    elif code == A_ELU or code == A_SELU:
        # elu: al (e^z - 1); selu: la z or la al (e^z - 1)
        lo = p[0] if code == A_ELU else SELU_ALPHA
        span = 1.0 if code == A_ELU else SELU_LAMBDA
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                zd = zr[j] + b[j]
                if zd > 0:
                    zr[j] = <floating>(span * zd)
                    if want_f:
                        fr[j] = <floating>span
                else:
                    zr[j] = <floating>(span * (lo * expm1(zd)))
                    if want_f:
                        fr[j] = <floating>((span * lo) * exp(zd))
    elif code == A_SOFTPLUS:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                zd = zr[j] + b[j]
                # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for any z
                e = exp(-fabs(zd))
                zr[j] = <floating>((zd if zd > 0 else 0.0) + log1p(e))
                if want_f:
                    fr[j] = <floating>(1.0 / (1.0 + e) if zd >= 0 else e / (1.0 + e))
    elif code == A_SWISH:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                zd = zr[j] + b[j]
                t = p[0] * zd
                sg = _expit_d(t)
                zr[j] = <floating>(zd * sg)
                if want_f:
                    fr[j] = <floating>(sg * (1.0 + t * (1.0 - sg)))
    elif code == A_GELU:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                zd = zr[j] + b[j]
                ph = 1.0 + erf(zd / SQRT_2)
                zr[j] = <floating>(0.5 * zd * ph)
                if want_f:
                    # phi(z) underflows long before |z| = 40; the clip avoids z*z overflow
                    zc = 40.0 if zd > 40.0 else (-40.0 if zd < -40.0 else zd)
                    fr[j] = <floating>(0.5 * ph + zc * INV_SQRT_2PI * exp(-0.5 * zc * zc))
    elif code == A_GELU_TANH:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                zd = zr[j] + b[j]
                # tanh saturates well inside [-20, 20]; the clip avoids z^3 overflow
                zc = 20.0 if zd > 20.0 else (-20.0 if zd < -20.0 else zd)
                t = tanh(SQRT_2_OVER_PI * (zc + GELU_C * (zc * zc * zc)))
                zr[j] = <floating>(0.5 * zd * (1.0 + t))
                if want_f:
                    fr[j] = <floating>(0.5 * (1.0 + t) + 0.5 * zc * (1.0 - t * t)
                                       * (SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * zc * zc)))
    elif code == A_HARD_SIGMOID:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                z = zr[j] + b[j]
                r = <floating>0.25 * z + <floating>0.5
                zr[j] = zero if r < 0 else (one if r > 1 else r)
                if want_f:
                    fr[j] = <floating>0.25 if (z > -2 and z < 2) else zero
    elif code == A_HARD_TANH:
        for i in range(rows):
            zr = Z + i * npre
            fr = F + i * n_units
            for j in range(npre):
                z = zr[j] + b[j]
                zr[j] = -one if z < -1 else (one if z > 1 else z)
                if want_f:
                    fr[j] = one if (z > -1 and z < 1) else zero
    elif code == A_MAXOUT:
        for i in range(rows):
            zr = Z + i * npre
            ar = A + i * n_units
            for j in range(n_units):
                mx = zr[j * k] + b[j * k]
                zr[j * k] = mx
                for q in range(1, k):
                    z = zr[j * k + q] + b[j * k + q]
                    zr[j * k + q] = z
                    if z > mx:
                        mx = z
                ar[j] = mx
    elif code == A_SOFTMAX:
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                zr[j] = zr[j] + b[j]
            mx = zr[0]
            for j in range(1, npre):
                if zr[j] > mx:
                    mx = zr[j]
            # the row maximum is subtracted so exp never overflows; exp, sum and division
            # in separate loops so that the first and last vectorise
            for j in range(npre):
                zr[j] = _vexp_nonpos(zr[j] - mx)
            tot = 0
            for j in range(npre):
                tot = tot + zr[j]
            for j in range(npre):
                zr[j] = zr[j] / tot
    elif code == A_EXP:
        # z clipped to fastmlp.activations.exp_bounds: [log(2 tiny), log(max) rounded
        # down], so that exp(z) is a finite, positive normal number
        if floating is float:
            top = 88.72283172607422
            bottom = -86.64339447021484
        else:
            top = 709.782712893384
            bottom = -707.7032713517042
        for i in range(rows):
            zr = Z + i * npre
            for j in range(npre):
                z = zr[j] + b[j]
                # NaN stays NaN (both comparisons false): forward then reports it
                z = top if z > top else z
                zr[j] = _fexp(bottom if z < bottom else z)


cdef void act_backward(int code, floating* D, const floating* DA, const floating* Z,
                       const floating* A, const floating* F, const floating* s,
                       floating* gb, floating* gs, Py_ssize_t rows, Py_ssize_t n_units,
                       Py_ssize_t k) noexcept nogil:
    """Turn ``dL/dA`` into ``dL/dz`` for a hidden layer and sum the bias (and slope)
    gradients, in one pass.

    Parameters
    ----------
    D : (rows, n_units * k)
        In (except maxout): ``dL/dA`` from the delta GEMM; out: ``dL/dz``.
    DA : (rows, n_units)
        ``dL/dA`` (the same memory as ``D`` except for maxout).
    Z, A, F : the buffers written by :func:`act_forward` in training.
    s : (n_units,) or NULL
        PReLU slopes.
    gb : (n_units * k,)
        Out: ``sum_i dL/dz_i`` (unscaled).
    gs : (n_units,) or NULL
        Out (PReLU): ``sum_i dL/dA_ij min(z_ij, 0)`` (unscaled).
    """
    cdef Py_ssize_t i, j, q, arg, npre = n_units * k
    cdef floating* dr
    cdef const floating* ar
    cdef const floating* zr
    cdef const floating* fr
    cdef floating d, a, z, mx, zero = 0, one = 1
    memset(gb, 0, npre * sizeof(floating))
    if code == A_IDENTITY:
        for i in range(rows):
            dr = D + i * npre
            for j in range(npre):
                gb[j] += dr[j]
    elif code == A_LOGISTIC:
        for i in range(rows):
            dr = D + i * npre
            ar = A + i * npre
            for j in range(npre):
                # scikit-learn's order: delta *= a; delta *= 1 - a
                d = dr[j] * ar[j]
                d = d * (one - ar[j])
                dr[j] = d
                gb[j] += d
    elif code == A_TANH:
        for i in range(rows):
            dr = D + i * npre
            ar = A + i * npre
            for j in range(npre):
                d = dr[j] * (one - ar[j] * ar[j])
                dr[j] = d
                gb[j] += d
    elif code == A_RELU:
        for i in range(rows):
            dr = D + i * npre
            ar = A + i * npre
            for j in range(npre):
                d = zero if ar[j] == 0 else dr[j]
                dr[j] = d
                gb[j] += d
    elif code == A_PRELU:
        memset(gs, 0, n_units * sizeof(floating))
        for i in range(rows):
            dr = D + i * npre
            zr = Z + i * npre
            for j in range(npre):
                z = zr[j]
                d = dr[j]
                gs[j] += d * (z if z < 0 else zero)
                d = d * (one if z > 0 else s[j])
                dr[j] = d
                gb[j] += d
    elif code == A_MAXOUT:
        for i in range(rows):
            dr = D + i * npre
            zr = Z + i * npre
            ar = DA + i * n_units
            for j in range(n_units):
                # the delta goes to the first maximal piece (numpy's argmax)
                mx = zr[j * k]
                arg = 0
                for q in range(1, k):
                    if zr[j * k + q] > mx:
                        mx = zr[j * k + q]
                        arg = q
                for q in range(k):
                    d = ar[j] if q == arg else zero
                    dr[j * k + q] = d
                    gb[j * k + q] += d
    else:  # derivative stored by the forward pass
        for i in range(rows):
            dr = D + i * npre
            fr = F + i * npre
            for j in range(npre):
                d = dr[j] * fr[j]
                dr[j] = d
                gb[j] += d


# ================================================================================ loss
cdef double loss_delta(int loss, const floating* P, const floating* Y,
                       const floating* sw, Py_ssize_t rows, Py_ssize_t n_out, floating* D,
                       floating* gb, double* sw_sum) noexcept nogil:
    """Batch loss, output delta and output bias gradient in one pass.

    Parameters
    ----------
    loss : int
        Loss code (0 squared error, 1 Poisson, 2 binary/multilabel log-loss, 3 multiclass).
    P : (rows, n_out)
        Output activations.
    Y, sw : (rows, n_out) and (rows,) or NULL
        The batch's targets and sample weights (NULL: unit weights).
    D : (rows, n_out)
        Out: ``(p - y) * w`` (may be ``P`` itself).
    gb : (n_out,)
        Out: the column sums of ``D`` (unscaled).
    sw_sum : out, ``sum_i w_i``

    Returns
    -------
    double
        ``sum_i w_i l_i / sum_i w_i`` (no L2 term).
    """
    cdef Py_ssize_t i, kk
    cdef const floating* yr
    cdef const floating* pr
    cdef floating* dr
    cdef floating w = 1, y, pv, pc, diff, ratio, one = 1
    cdef floating eps = FLT_EPSILON if floating is float else DBL_EPSILON
    cdef floating fmax = FLT_MAX if floating is float else DBL_MAX
    cdef double total = 0.0, S = 0.0, li
    memset(gb, 0, n_out * sizeof(floating))
    for i in range(rows):
        if sw != NULL:
            w = sw[i]
        yr = Y + i * n_out
        pr = P + i * n_out
        dr = D + i * n_out
        li = 0.0
        if loss == L_SQUARED:
            for kk in range(n_out):
                diff = yr[kk] - pr[kk]
                li += <double>diff * diff
        elif loss == L_POISSON:
            for kk in range(n_out):
                y = yr[kk]
                pv = pr[kk]
                # y log(y / p) - y + p, with 0 log 0 = 0; where y / p overflows (p near
                # the smallest normal number), y (log y - log p) (losses.poisson)
                if y != 0:
                    ratio = y / pv
                    if ratio <= fmax:
                        li += <double>y * log(<double>ratio)
                    else:
                        li += <double>y * (log(<double>y) - log(<double>pv))
                li += <double>pv - <double>y
        elif loss == L_BINARY:
            for kk in range(n_out):
                y = yr[kk]
                pc = pr[kk]
                pc = eps if pc < eps else (one - eps if pc > one - eps else pc)
                if y != 0:
                    li -= <double>y * log(<double>pc)
                if y != 1:
                    li -= <double>(one - y) * log(<double>(one - pc))
        else:
            for kk in range(n_out):
                y = yr[kk]
                if y != 0:
                    pc = pr[kk]
                    pc = eps if pc < eps else (one - eps if pc > one - eps else pc)
                    li -= <double>y * log(<double>pc)
        # canonical link: delta at the output pre-activation is (p - y) * w
        if sw != NULL:
            for kk in range(n_out):
                diff = (pr[kk] - yr[kk]) * w
                dr[kk] = diff
                gb[kk] += diff
        else:
            for kk in range(n_out):
                diff = pr[kk] - yr[kk]
                dr[kk] = diff
                gb[kk] += diff
        total += <double>w * li
        S += <double>w
    if loss == L_SQUARED:
        total = 0.5 * total / n_out
    sw_sum[0] = S
    return total / S


# ============================================================== forward and backward
cdef void forward_rows(const Net* net, const floating* theta, const floating* X0,
                       Py_ssize_t rows, Py_ssize_t cap, floating* work, bint train,
                       uint64_t k_batch, floating* out, bint apply_output,
                       Py_ssize_t row0) noexcept nogil:
    """Forward pass over ``rows`` (<= ``cap``) contiguous rows ``X0`` (rows x FAN_IN),
    the batch's rows from ``row0`` on (RReLU's slopes are indexed by the batch row).

    In training (``out`` NULL) every layer's buffers stay in ``work`` for the backward
    pass; in prediction the output layer is written straight into ``out`` (rows x
    n_outputs), activated or not (``apply_output``).
    """
    cdef Py_ssize_t l, L = net.n_layers, fi, fo, npre, k, so
    cdef const int64_t* row
    cdef const floating* a_prev = X0
    cdef floating* Z
    cdef floating* A
    cdef floating* F
    cdef int code
    cdef Bufs bf
    c_assert(0 < rows <= cap)
    for l in range(L):
        row = net.layout + l * N_COLS
        fi = row[FAN_IN]
        fo = row[FAN_OUT]
        npre = row[N_PRE]
        k = row[KPIECES]
        code = <int>row[ACT]
        so = row[SLOPE_OFF]
        bf = layer_bufs(net, l, cap)
        if l == L - 1 and out != NULL:
            Z = out
        else:
            Z = work + bf.z
        A = Z if bf.a == bf.z else work + bf.a
        # F is passed whenever the layer has one; act_forward writes it only in training
        F = work + bf.f if bf.f >= 0 else NULL
        gemm_serial(net.serial, c'n', c'n', <int>rows, <int>npre, <int>fi, <floating>1,
                    a_prev, <int>fi, theta + row[COEF_OFF], <int>npre, <floating>0, Z,
                    <int>npre)
        if l == L - 1 and not apply_output:
            code = A_IDENTITY
        act_forward(code, net.act_params + 2 * l, Z, A, F, theta + row[INTER_OFF],
                    theta + so if so >= 0 else NULL, rows, fo, k, train,
                    splitmix64(k_batch ^ <uint64_t>l), row0)
        a_prev = A


cdef double batch_loss_grad(const Net* net, const floating* theta, floating* grad,
                            const floating* X0, const floating* Y, const floating* sw,
                            Py_ssize_t rows, Py_ssize_t cap, uint64_t k_batch, int loss,
                            floating* work, double* sw_sum,
                            bint accumulate, Py_ssize_t row0) noexcept nogil:
    """Forward, loss and backward for one batch.

    ``X0``, ``Y``, ``sw`` hold the batch's rows (contiguous; ``sw`` NULL for unit
    weights). On return ``grad`` holds the
    UNSCALED gradient: ``A^T delta`` for the weights (no L2 term), the delta sums for the
    intercepts, the slope sums for PReLU; :func:`finish_grad` or the optimizer loop adds
    ``alpha W`` and divides by ``sw_sum``. Returns the data loss (no L2 term).

    With ``accumulate`` the weight-gradient GEMMs add to ``grad`` (beta 1), which must
    hold zeros there: ``train_epoch``'s optimizer loop zeroes it as it consumes it, which
    saves the separate pass OpenBLAS makes over C to apply beta 0.
    """
    cdef Py_ssize_t l, L = net.n_layers, fi, npre, so
    cdef const int64_t* row
    cdef const int64_t* prow
    cdef const floating* a_prev
    cdef floating* D
    cdef Bufs bf, bp
    cdef double data
    forward_rows(net, theta, X0, rows, cap, work, True, k_batch, <floating*>NULL, True,
                 row0)
    row = net.layout + (L - 1) * N_COLS
    bf = layer_bufs(net, L - 1, cap)
    data = loss_delta(loss, work + bf.z, Y, sw, rows, row[FAN_OUT], work + bf.d,
                      grad + row[INTER_OFF], sw_sum)
    for l in range(L - 1, -1, -1):
        row = net.layout + l * N_COLS
        fi = row[FAN_IN]
        npre = row[N_PRE]
        D = work + bf.d
        if l > 0:
            bp = layer_bufs(net, l - 1, cap)
            a_prev = work + bp.a
        else:
            a_prev = X0
        # weight gradient: A_prev^T delta (fi x npre)
        gemm_serial(net.serial, c't', c'n', <int>fi, <int>npre, <int>rows, <floating>1,
                    a_prev, <int>fi, D, <int>npre, <floating>(1 if accumulate else 0),
                    grad + row[COEF_OFF], <int>npre)
        if l == 0:
            break   # no delta for the input layer
        # delta of the previous layer's activations: delta W^T (rows x fi)
        gemm_serial(net.serial, c'n', c't', <int>rows, <int>fi, <int>npre, <floating>1,
                    D, <int>npre, theta + row[COEF_OFF], <int>npre, <floating>0,
                    work + bp.da, <int>fi)
        prow = net.layout + (l - 1) * N_COLS
        so = prow[SLOPE_OFF]
        act_backward(<int>prow[ACT], work + bp.d, work + bp.da, work + bp.z, work + bp.a,
                     work + bp.f if bp.f >= 0 else <floating*>NULL,
                     theta + so if so >= 0 else <floating*>NULL, grad + prow[INTER_OFF],
                     grad + so if so >= 0 else <floating*>NULL, rows, prow[FAN_OUT],
                     prow[KPIECES])
        bf = bp
    return data


cdef inline bint _all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    # x * 0 is 0 for finite x and NaN for +-inf and NaN; four partial sums (one would be
    # latency bound)
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 = s0 + a[i] * 0
        s1 = s1 + a[i + 1] * 0
        s2 = s2 + a[i + 2] * 0
        s3 = s3 + a[i + 3] * 0
        i += 4
    while i < n:
        s0 = s0 + a[i] * 0
        i += 1
    return (s0 + s1) + (s2 + s3) == 0


# ================================================================ fused optimizer loops
cdef inline double _sumsq(const floating* w, Py_ssize_t n) noexcept nogil:
    # SUMSQ_LANES independent partial sums, lane j taking w[i + j]: the compiler packs the
    # lanes into vector registers (with strict floating-point order it vectorises no
    # reduction across elements), and the order of additions is the same in every build
    # whatever the vector width. Four scalar sums took as long as the Adam update itself
    # on a float32 block.
    cdef floating s[SUMSQ_LANES]
    cdef Py_ssize_t i = 0, j
    for j in range(SUMSQ_LANES):
        s[j] = 0
    while i + SUMSQ_LANES <= n:
        for j in range(SUMSQ_LANES):
            s[j] = s[j] + w[i + j] * w[i + j]
        i += SUMSQ_LANES
    while i < n:
        s[0] = s[0] + w[i] * w[i]
        i += 1
    cdef double total = 0.0
    for j in range(SUMSQ_LANES):
        total += <double>s[j]
    return total


cdef inline void _sgd_block(floating* theta, floating* grad, floating* vel,
                            Py_ssize_t n, floating lr, floating mu, bint nesterov,
                            bint l2, floating alpha, floating inv_s,
        bint zero_grad) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, step, v
    for i in range(n):
        if l2:
            g = (grad[i] + alpha * theta[i]) * inv_s
        else:
            g = grad[i] * inv_s
        if zero_grad:
            grad[i] = 0
        # reference order: v = momentum v - lr g; theta += momentum v - lr g or v
        step = g * lr
        v = vel[i] * mu - step
        vel[i] = v
        if nesterov:
            theta[i] = theta[i] + (v * mu - step)
        else:
            theta[i] = theta[i] + v


cdef double sgd_step(floating* theta, floating* grad, floating* vel, Py_ssize_t n,
                     Py_ssize_t n_coef, double lr, double momentum, bint nesterov,
                     double alpha, double sw_sum, bint zero_grad) noexcept nogil:
    """One SGD step on the flat vectors, fused with the L2 term and the 1/sum(w) scaling.

    ``grad`` holds the unscaled gradient of :func:`batch_loss_grad`; the step uses
    ``g = (grad + alpha theta) / sw_sum`` on ``theta[:n_coef]`` (the weights) and
    ``grad / sw_sum`` elsewhere. ``vel`` (n,) is updated in place. With ``zero_grad`` the
    weights' entries of ``grad`` are set to 0 once read (``batch_loss_grad``'s
    ``accumulate``). Returns ``||W||^2`` of the weights before the step (0 when ``alpha``
    is 0).
    """
    cdef Py_ssize_t start, m
    cdef double ss = 0.0
    cdef floating lr_ = <floating>lr, mu = <floating>momentum, al = <floating>alpha
    # multiplying by 1 / sum(w) instead of dividing (the reference) differs by at most
    # an ulp and saves a division per element: these loops are bound by div and sqrt
    cdef floating S = <floating>(1.0 / sw_sum)
    start = 0
    while start < n_coef:
        m = min(<Py_ssize_t>OPT_BLOCK, n_coef - start)
        if alpha != 0:
            ss += _sumsq(theta + start, m)
            _sgd_block(theta + start, grad + start, vel + start, m, lr_, mu, nesterov,
                       True, al, S, zero_grad)
        else:
            _sgd_block(theta + start, grad + start, vel + start, m, lr_, mu, nesterov,
                       False, al, S, zero_grad)
        start += m
    _sgd_block(theta + n_coef, grad + n_coef, vel + n_coef, n - n_coef, lr_, mu, nesterov,
               False, al, S, False)
    return ss


cdef inline void _adam_block(floating* theta, floating* grad, floating* grad1,
                             floating* m1, floating* m2, Py_ssize_t n, floating nlr,
                             floating b1, floating c1, floating b2, floating c2,
                             floating eps, bint l2, floating alpha, floating inv_s,
                             bint zero_grad, bint two) noexcept nogil:
    # ``two``: the gradient is ``grad + grad1`` (the halves of a split batch), summed here
    # instead of in a pass of its own; ``grad1`` is zeroed with ``grad`` (``zero_grad``),
    # and otherwise ``grad`` keeps the sum (the intercepts' entries)
    cdef Py_ssize_t i
    cdef floating g, a, b
    for i in range(n):
        g = grad[i]
        if two:
            g = g + grad1[i]
            if zero_grad:
                grad1[i] = 0
            else:
                grad[i] = g
        if l2:
            g = (g + alpha * theta[i]) * inv_s
        else:
            g = g * inv_s
        if zero_grad:
            grad[i] = 0
        a = m1[i] * b1 + g * c1
        b = m2[i] * b2 + (g * g) * c2
        m1[i] = a
        m2[i] = b
        theta[i] = theta[i] + (a * nlr) / (_fsqrt(b) + eps)


cdef double _adam_range(floating* theta, floating* grad, floating* grad1, floating* m,
                        floating* v, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n_coef,
                        floating nlr, floating b1, floating c1, floating b2, floating c2,
                        floating eps, double alpha, floating S,
                        bint zero_grad) noexcept nogil:
    """:func:`adam_step` on the entries ``[lo, hi)``; returns their part of ``||W||^2``.
    A second gradient ``grad1`` comes only with ``zero_grad`` (``_train_epoch``'s split
    batches). Each call of ``_adam_block`` passes ``l2`` and ``two`` as constants, so the
    compiler inlines a loop without those branches for each case."""
    cdef Py_ssize_t start, cnt, top = min(hi, n_coef)
    cdef double ss = 0.0
    cdef floating al = <floating>alpha
    cdef bint two = grad1 != NULL
    c_assert(zero_grad or not two)
    start = lo
    while start < top:
        cnt = min(<Py_ssize_t>OPT_BLOCK, top - start)
        if alpha != 0:
            ss += _sumsq(theta + start, cnt)
            if two:
                _adam_block(theta + start, grad + start, grad1 + start, m + start, v + start,
                            cnt, nlr, b1, c1, b2, c2, eps, True, al, S, True, True)
            else:
                _adam_block(theta + start, grad + start, NULL, m + start, v + start, cnt,
                            nlr, b1, c1, b2, c2, eps, True, al, S, zero_grad, False)
        elif two:
            _adam_block(theta + start, grad + start, grad1 + start, m + start, v + start,
                        cnt, nlr, b1, c1, b2, c2, eps, False, al, S, True, True)
        else:
            _adam_block(theta + start, grad + start, NULL, m + start, v + start, cnt, nlr,
                        b1, c1, b2, c2, eps, False, al, S, zero_grad, False)
        start += cnt
    start = max(lo, n_coef)   # the intercepts and slopes: no L2 term, and not zeroed
    if start < hi:
        if two:
            _adam_block(theta + start, grad + start, grad1 + start, m + start, v + start,
                        hi - start, nlr, b1, c1, b2, c2, eps, False, al, S, False, True)
        else:
            _adam_block(theta + start, grad + start, NULL, m + start, v + start, hi - start,
                        nlr, b1, c1, b2, c2, eps, False, al, S, False, False)
    return ss


cdef inline Py_ssize_t opt_split(Py_ssize_t n) noexcept nogil:
    """Where the optimizer loops split the flat vectors into two ranges (0: they do not):
    half-way, on a block boundary, for vectors of at least OPT_PAR_MIN entries. The
    ranges are the same whether one thread or two runs them, and ``||W||^2`` is the sum
    of their two parts in that order, so the numbers do not depend on the threads."""
    if n < OPT_PAR_MIN:
        return 0
    return (n // 2 // OPT_BLOCK) * OPT_BLOCK


cdef double adam_step(floating* theta, floating* grad, floating* grad1, floating* m,
                      floating* v,
                      Py_ssize_t n, Py_ssize_t n_coef, double lr_t, double beta_1,
                      double beta_2, double epsilon, double alpha,
                      double sw_sum, bint zero_grad, int n_threads) noexcept nogil:
    """One Adam step on the flat vectors, fused with the L2 term and the scaling.

    ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; theta -= lr_t m / (sqrt(v) + eps)``
    with ``g`` and ``zero_grad`` as in :func:`sgd_step` and ``lr_t`` the bias-corrected
    rate of this step. Vectors of at least OPT_PAR_MIN entries are updated as two ranges
    (:func:`opt_split`), in two OpenMP threads when ``n_threads`` is 2 (only when the
    halves of the batch ran in threads, so BLAS's own threads are not spinning on the other
    core: a parallel step beside them made W4 33 % slower). ``grad1`` (or NULL) is a second
    gradient, summed with ``grad`` as the loop reads them (see ``_adam_block``). The loop is
    bound by memory bandwidth, which two cores raise: W4's float64 step, 104 MB, takes
    2.5 ms on one core; with a second gradient (149 MB) 2.5 ms on two.
    Returns ``||W||^2`` before the step (0 when ``alpha`` is 0).
    """
    cdef double ss_w[2]
    cdef int w
    cdef unsigned int csr_w
    cdef Py_ssize_t mid = opt_split(n)
    cdef floating nlr = <floating>(-lr_t), b1 = <floating>beta_1, b2 = <floating>beta_2
    cdef floating c1 = <floating>(1.0 - beta_1), c2 = <floating>(1.0 - beta_2)
    cdef floating eps = <floating>epsilon
    cdef floating S = <floating>(1.0 / sw_sum)   # see sgd_step
    if mid == 0:
        return _adam_range(theta, grad, grad1, m, v, 0, n, n_coef, nlr, b1, c1, b2, c2, eps,
                           alpha, S, zero_grad)
    if n_threads > 1:
        for w in prange(2, num_threads=2, schedule="static", chunksize=1):
            csr_w = ftz_enter()
            ss_w[w] = _adam_range(theta, grad, grad1, m, v, 0 if w == 0 else mid,
                                  mid if w == 0 else n, n_coef, nlr, b1, c1, b2, c2, eps,
                                  alpha, S, zero_grad)
            ftz_exit(csr_w)
    else:
        for w in range(2):
            ss_w[w] = _adam_range(theta, grad, grad1, m, v, 0 if w == 0 else mid,
                                  mid if w == 0 else n, n_coef, nlr, b1, c1, b2, c2, eps,
                                  alpha, S, zero_grad)
    return ss_w[0] + ss_w[1]


cdef double finish_grad(const floating* theta, floating* grad, Py_ssize_t n,
                        Py_ssize_t n_coef, double alpha, double sw_sum) noexcept nogil:
    """Scale the unscaled gradient in place: ``(grad + alpha W) / sw_sum`` on the weights,
    ``grad / sw_sum`` elsewhere. Returns ``||W||^2``."""
    cdef Py_ssize_t i
    cdef floating al = <floating>alpha, S = <floating>sw_sum
    cdef double ss = _sumsq(theta, n_coef)
    for i in range(n_coef):
        grad[i] = (grad[i] + al * theta[i]) / S
    for i in range(n_coef, n):
        grad[i] = grad[i] / S
    return ss


# ======================================================================== whole calls
cdef int split_kind(const Net* net, Py_ssize_t bs, bint f32) noexcept nogil:
    """How batches of ``bs`` rows are computed (see ``_train_epoch``): whole
    (``SPLIT_NONE``), or as two halves whose products all stay on their thread by
    themselves (``SPLIT_SERIAL``: forward ``Z = A W``, weight gradient ``A^T delta``,
    back-propagated ``delta W^T``, each through :func:`gemm_serial`) or only while BLAS
    runs one thread (``SPLIT_ONE_BLAS``). Halves need ``SPLIT_MIN_ROWS`` rows, and in
    float32 (``f32``) products of at most ``SPLIT_MAX_MNK_F32`` multiply-adds, in float64
    layers of at most ``SPLIT_MAX_WEIGHTS_F64`` weights. RReLU layers
    split too: a half passes its first row in the batch (``row0``), so it draws the slopes
    the whole batch would.
    """
    cdef Py_ssize_t h = (bs + 1) // 2, l, fi, npre
    cdef const int64_t* row
    cdef int kind = SPLIT_SERIAL
    if bs < SPLIT_MIN_ROWS:
        return SPLIT_NONE
    for l in range(net.n_layers):
        row = net.layout + l * N_COLS
        fi = row[FAN_IN]
        npre = row[N_PRE]
        if f32 and h * fi * npre > SPLIT_MAX_MNK_F32:   # all three products of the layer
            return SPLIT_NONE
        if not f32 and fi * npre > SPLIT_MAX_WEIGHTS_F64:
            return SPLIT_NONE
        if not (stays_serial(h, npre, fi) and stays_serial(fi, npre, h)
                and stays_serial(h, fi, npre)):
            kind = SPLIT_ONE_BLAS
    return kind


cdef inline void _gather(const floating* X, const floating* Y, const floating* sw,
                         const int64_t* idx, Py_ssize_t rows, Py_ssize_t fi0,
                         Py_ssize_t n_out, Py_ssize_t n_x, floating* xb, floating* yb,
                         floating* swb) noexcept nogil:
    """Copy rows ``idx[:rows]`` of X, Y (and sw) to ``xb``, ``yb`` (``swb``): the GEMMs
    need contiguous rows, and copying them in one loop overlaps the cache misses of a
    shuffled order instead of meeting them one by one in the loss pass."""
    cdef Py_ssize_t i, j, r
    for i in range(rows):
        r = idx[i]
        c_assert(0 <= r < n_x)
        if i + PREFETCH_ROWS < rows:
            prefetch(X + idx[i + PREFETCH_ROWS] * fi0)
        if fi0 >= 16:
            memcpy(xb + i * fi0, X + r * fi0, fi0 * sizeof(floating))
        else:
            for j in range(fi0):
                xb[i * fi0 + j] = X[r * fi0 + j]
        for j in range(n_out):
            yb[i * n_out + j] = Y[r * n_out + j]
        if sw != NULL:
            swb[i] = sw[r]


cdef double _batch_part(const Net* net, const floating* theta, floating* grad,
                        const floating* X, const floating* Y, const floating* sw,
                        const int64_t* idx, Py_ssize_t rows, Py_ssize_t cap,
                        uint64_t k_batch, int loss, floating* work, double* sw_sum,
                        Py_ssize_t n_x, Py_ssize_t row0) noexcept nogil:
    """Gather ``rows`` rows into ``work`` (laid out for ``cap`` rows) and run forward,
    loss and backward on them, accumulating the weight gradient into ``grad``: a whole
    batch (``row0`` 0), or one half of a split batch (``row0``: the half's first row in
    the batch). Numba's ``_batch_part`` does the same."""
    cdef Py_ssize_t fi0 = net.layout[FAN_IN]
    cdef Py_ssize_t n_out = net.layout[(net.n_layers - 1) * N_COLS + FAN_OUT]
    cdef floating* xb = work
    cdef floating* yb = work + cap * fi0
    cdef floating* swb = yb + cap * n_out
    _gather(X, Y, sw, idx, rows, fi0, n_out, n_x, xb, yb, swb)
    return batch_loss_grad(net, theta, grad, xb, yb, swb if sw != NULL else NULL, rows, cap,
                           k_batch, loss, work, sw_sum, True, row0)


cdef double _train_epoch(const Net* net, floating* theta, floating* grad, floating* opt,
                         const floating* X, const floating* Y, const floating* sw,
                         const int64_t* order, Py_ssize_t n_order, Py_ssize_t bs,
                         const double* hyper, int64_t* counters, floating* work,
                         Py_ssize_t n_x, int split, int n_threads) noexcept nogil:
    """Every mini-batch of one epoch: forward, backward, optimizer step.

    With ``split`` (:func:`split_kind`) each batch of at least ``SPLIT_MIN_ROWS`` rows is
    computed as two halves, each with its own buffers in ``work`` and its own gradient
    (the second one after both halves' buffers), which are then summed; the products of
    a half are the same in every mode: ``gemm_serial``'s blocks (``SPLIT_SERIAL``) or
    whole products (``SPLIT_ONE_BLAS``; the blocks would repack an operand each). The
    halves run in ``n_threads`` OpenMP threads (2 when the fit runs alone, 1 while fits
    overlap, and 1 for ``SPLIT_ONE_BLAS`` unless BLAS runs one thread): the arithmetic is
    the same either way, so a fit gives the same numbers in a search with threads as alone.
    Without ``split`` a batch is one block whose products BLAS may thread (``net.serial``
    keeps them on this thread while fits overlap).
    """
    cdef Py_ssize_t start, rows, i, n = net.n_params
    cdef Py_ssize_t h = (bs + 1) // 2
    cdef floating* grad1 = work + (bs + 1) * net.row_width
    cdef floating* g1
    cdef double loss_sum = 0.0, data, S, ss, lr_t, alpha = hyper[H_ALPHA]
    cdef double b1 = hyper[H_BETA_1], b2 = hyper[H_BETA_2]
    cdef double data_w[2]
    cdef double S_w[2]
    cdef Py_ssize_t first[2]
    cdef Py_ssize_t count[2]
    cdef int loss = <int>counters[C_LOSS]
    cdef bint adam = counters[C_SOLVER] == 1
    cdef int64_t t
    cdef int w
    cdef unsigned int csr_w
    cdef uint64_t seed = <uint64_t>counters[C_SEED], k_batch
    cdef Net net_h = net[0]
    # SPLIT_SERIAL halves always run their products as gemm_serial's blocks; those of
    # SPLIT_ONE_BLAS halves whole (BLAS runs one thread when the halves run in threads)
    net_h.serial = split == SPLIT_SERIAL
    if split:
        net = &net_h
        memset(grad1, 0, n * sizeof(floating))
    # the weight gradients accumulate into zeros (batch_loss_grad's accumulate); the
    # optimizer loop zeroes them again as it reads them
    memset(grad, 0, net.n_coef * sizeof(floating))
    start = 0
    while start < n_order:
        rows = min(bs, n_order - start)
        k_batch = splitmix64(seed ^ splitmix64(<uint64_t>counters[C_STEP]))
        if split and rows >= SPLIT_MIN_ROWS:
            first[0] = start
            count[0] = (rows + 1) // 2
            first[1] = start + count[0]
            count[1] = rows - count[0]
            if n_threads > 1:
                for w in prange(2, num_threads=n_threads, schedule="static", chunksize=1):
                    csr_w = ftz_enter()   # each thread has its own MXCSR
                    data_w[w] = _batch_part(net, theta, grad if w == 0 else grad1, X, Y,
                                            sw, order + first[w], count[w], h, k_batch, loss,
                                            work + w * h * net.row_width, &S_w[w], n_x,
                                            first[w] - start)
                    ftz_exit(csr_w)
            else:
                # outside any OpenMP region: GNU OpenMP's thread pool does not survive
                # fork(), and a forked child (multiprocessing) entering one would hang
                for w in range(2):
                    data_w[w] = _batch_part(net, theta, grad if w == 0 else grad1, X, Y,
                                            sw, order + first[w], count[w], h, k_batch, loss,
                                            work + w * h * net.row_width, &S_w[w], n_x,
                                            first[w] - start)
            S = S_w[0] + S_w[1]
            # each half returns its weighted mean loss
            data = (data_w[0] * S_w[0] + data_w[1] * S_w[1]) / S
            g1 = grad1
            if not adam:   # Adam's loop sums the halves' gradients as it reads them
                g1 = NULL
                for i in range(net.n_coef):
                    grad[i] += grad1[i]
                    grad1[i] = 0
                for i in range(net.n_coef, n):
                    grad[i] += grad1[i]
        else:
            g1 = NULL
            data = _batch_part(net, theta, grad, X, Y, sw, order + start, rows, bs, k_batch,
                               loss, work, &S, n_x, 0)
        if adam:
            counters[C_ADAM_T] += 1
            t = counters[C_ADAM_T]
            lr_t = hyper[H_LR] * sqrt(1.0 - pow(b2, <double>t)) / (1.0 - pow(b1, <double>t))
            ss = adam_step(theta, grad, g1, opt, opt + n, n, net.n_coef, lr_t, b1, b2,
                           hyper[H_EPSILON], alpha, S, True, n_threads if split else 1)
        else:
            ss = sgd_step(theta, grad, opt, n, net.n_coef, hyper[H_LR], hyper[H_MOMENTUM],
                          counters[C_NESTEROV] != 0, alpha, S, True)
        loss_sum += (data + (0.5 * alpha) * ss / S) * rows
        counters[C_STEP] += 1
        start += rows
    return loss_sum


cdef double _loss_grad(const Net* net, const floating* theta, floating* grad,
                       const floating* X, const floating* Y, const floating* sw,
                       Py_ssize_t n_rows, double alpha, const int64_t* counters,
                       floating* work) noexcept nogil:
    cdef double S, data, ss
    cdef uint64_t k_batch = splitmix64(<uint64_t>counters[C_SEED]
                                       ^ splitmix64(<uint64_t>counters[C_STEP]))
    data = batch_loss_grad(net, theta, grad, X, Y, sw, n_rows, n_rows, k_batch,
                           <int>counters[C_LOSS], work, &S, False, 0)
    ss = finish_grad(theta, grad, net.n_params, net.n_coef, alpha, S)
    return data + (0.5 * alpha) * ss / S


cdef void _forward(const Net* net, const floating* theta, const floating* X,
                   Py_ssize_t n_rows, floating* out, bint apply_output, Py_ssize_t cap,
                   floating* work) noexcept nogil:
    cdef Py_ssize_t fi0 = net.layout[FAN_IN]
    cdef Py_ssize_t n_out = net.layout[(net.n_layers - 1) * N_COLS + FAN_OUT]
    cdef Py_ssize_t start = 0
    while start < n_rows:
        forward_rows(net, theta, X + start * fi0, min(cap, n_rows - start), cap, work,
                     False, 0, out + start * n_out, apply_output, 0)
        start += cap


# ================================================================ argument checking
# The kernels index raw pointers, so the wrappers check everything that decides a memory
# address: dtypes, contiguity, shapes, the layout's offsets, the sample order, the size
# of ``work``. Input data (X, Y, sample_weight) of the wrong dtype or order is converted;
# arrays written in place must already be right.

_NAMES = {cnp.NPY_DOUBLE: "float64", cnp.NPY_FLOAT: "float32", cnp.NPY_INT64: "int64"}


cdef inline cnp.ndarray _arr(object a, str name, int typenum, int ndim, bint out):
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_ISCARRAY_RO(arr) or (out and not cnp.PyArray_ISWRITEABLE(arr))):
        raise ValueError(
            f"{name} must be a C-contiguous{' writable' if out else ''} {ndim}-d array of "
            f"dtype {_NAMES[typenum]}, got dtype {(<object>arr).dtype}, shape "
            f"{np.shape(arr)}, C-contiguous {bool((<object>arr).flags.c_contiguous)}, "
            f"writable {bool((<object>arr).flags.writeable)}"
        )
    return arr


cdef inline cnp.ndarray _data(object a, str name, int typenum, int ndim):
    """Input data: converted to a C-contiguous array of the right dtype if needed."""
    if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum
            or not cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)):
        a = np.ascontiguousarray(a, dtype=_NAMES[typenum])
    return _arr(a, name, typenum, ndim, False)


cdef int _parse_net(object layout, object act_params, Net* net) except -1:
    """Check ``layout`` / ``act_params`` against the contract and fill ``net``."""
    cdef cnp.ndarray lay = _arr(layout, "layout", cnp.NPY_INT64, 2, False)
    cdef cnp.ndarray par = _arr(act_params, "act_params", cnp.NPY_DOUBLE, 2, False)
    cdef Py_ssize_t L = cnp.PyArray_DIM(lay, 0), l, n_coef = 0, n_inter = 0, slope
    cdef const int64_t* r
    cdef const int64_t* p
    cdef int64_t code
    if L < 1 or cnp.PyArray_DIM(lay, 1) != N_COLS:
        raise ValueError(f"layout must have shape (n_layers - 1, 8), got {np.shape(lay)}")
    if cnp.PyArray_DIM(par, 0) != L or cnp.PyArray_DIM(par, 1) != 2:
        raise ValueError(f"act_params must have shape ({L}, 2), got {np.shape(par)}")
    p = <const int64_t*>cnp.PyArray_DATA(lay)
    for l in range(L):
        r = p + l * N_COLS
        n_coef += r[FAN_IN] * r[N_PRE]
        n_inter += r[N_PRE]
    slope = n_coef + n_inter
    n_inter = n_coef
    n_coef = 0
    for l in range(L):
        r = p + l * N_COLS
        code = r[ACT]
        if r[FAN_IN] < 1 or r[FAN_OUT] < 1 or r[KPIECES] < 1:
            raise ValueError(f"layout row {l}: FAN_IN, FAN_OUT and K must be >= 1")
        if r[N_PRE] != r[FAN_OUT] * r[KPIECES]:
            raise ValueError(f"layout row {l}: N_PRE must be FAN_OUT * K")
        if l > 0 and r[FAN_IN] != p[(l - 1) * N_COLS + FAN_OUT]:
            raise ValueError(f"layout row {l}: FAN_IN differs from the previous FAN_OUT")
        if l < L - 1:
            if not (0 <= code <= A_MAXOUT):
                raise ValueError(f"layout row {l}: unknown hidden activation code {code}")
        elif code not in (A_IDENTITY, A_LOGISTIC, A_SOFTMAX, A_EXP):
            raise ValueError(f"output activation code {code} is not 0, 1, 20 or 21")
        if r[KPIECES] != 1 and code != A_MAXOUT:
            raise ValueError(f"layout row {l}: K must be 1 unless the layer is maxout")
        if r[COEF_OFF] != n_coef or r[INTER_OFF] != n_inter:
            raise ValueError(f"layout row {l}: offsets do not follow the theta layout "
                             "(weights, then intercepts, then PReLU slopes)")
        if code == A_PRELU and l < L - 1:
            if r[SLOPE_OFF] != slope:
                raise ValueError(f"layout row {l}: SLOPE_OFF should be {slope}")
            slope += r[FAN_OUT]
        elif r[SLOPE_OFF] != -1:
            raise ValueError(f"layout row {l}: SLOPE_OFF must be -1 (not a PReLU layer)")
        n_coef += r[FAN_IN] * r[N_PRE]
        n_inter += r[N_PRE]
    net.layout = p
    net.act_params = <const double*>cnp.PyArray_DATA(par)
    net.n_layers = L
    net.n_params = slope
    net.n_coef = n_coef
    net.row_width = row_width(p, L)
    net.serial = False
    return 0


cdef Py_ssize_t _work_size(Py_ssize_t cap, Py_ssize_t row_width,
                           Py_ssize_t n_params) noexcept nogil:
    """Elements of ``work`` for batches of up to ``cap`` rows: ``cap + 1`` rows (two
    halves of ``ceil(cap / 2)`` rows when a batch is split) and a second gradient."""
    return (cap + 1) * row_width + n_params


cdef int _check_work(cnp.ndarray work, const Net* net, Py_ssize_t cap) except -1:
    cdef Py_ssize_t need = _work_size(cap, net.row_width, net.n_params)
    if cnp.PyArray_DIM(work, 0) < need:
        raise ValueError(
            f"work has {cnp.PyArray_DIM(work, 0)} elements; this call needs "
            f"workspace_size(layout, {cap}) = {need}"
        )
    return 0


cdef int _theta_type(object theta) except -1:
    if cnp.PyArray_Check(theta):
        if cnp.PyArray_TYPE(<cnp.ndarray>theta) == cnp.NPY_DOUBLE:
            return cnp.NPY_DOUBLE
        if cnp.PyArray_TYPE(<cnp.ndarray>theta) == cnp.NPY_FLOAT:
            return cnp.NPY_FLOAT
    raise TypeError("theta must be a float32 or float64 numpy.ndarray")


# ==================================================================== entry points
def workspace_size(layout, n_rows):
    """Number of elements ``work`` needs to process up to ``n_rows`` rows at a time.

    Parameters
    ----------
    layout : ndarray of shape (n_layers - 1, 8), dtype int64
    n_rows : int

    Returns
    -------
    int
        ``n_rows + 1`` times the per-row width (the gathered input row, target row and
        weight, and per layer the pre-activations and deltas, plus separate activations
        (PReLU, maxout), stored derivatives (leaky_relu, rrelu, codes 7-14) and maxout's
        unit deltas), plus ``n_params`` for the second half's gradient of a split batch.
    """
    cdef cnp.ndarray lay = _arr(layout, "layout", cnp.NPY_INT64, 2, False)
    if cnp.PyArray_DIM(lay, 0) < 1 or cnp.PyArray_DIM(lay, 1) != N_COLS:
        raise ValueError(f"layout must have shape (n_layers - 1, 8), got {np.shape(lay)}")
    cdef const int64_t* p = <const int64_t*>cnp.PyArray_DATA(lay)
    cdef Py_ssize_t L = cnp.PyArray_DIM(lay, 0), l, n_params = 0
    for l in range(L):
        n_params += (p[l * N_COLS + FAN_IN] + 1) * p[l * N_COLS + N_PRE]
        if p[l * N_COLS + SLOPE_OFF] >= 0:
            n_params += p[l * N_COLS + FAN_OUT]
    return int(_work_size(max(int(n_rows), 1), row_width(p, L), n_params))


def split_batches(layout, act_params, Py_ssize_t batch_size, dtype=np.float64):
    """How ``train_epoch`` computes batches of ``batch_size`` rows of this network.

    Parameters
    ----------
    layout, act_params : as in :func:`train_epoch`
    batch_size : int
    dtype : numpy dtype, default float64
        The dtype of the fit (float32 splits only the batches of smaller networks).

    Returns
    -------
    int
        0: whole batches; 1: two halves, in two threads when the fit runs alone; 2: two
        halves, in two threads only when ``counters[SERIAL]`` is 2 (BLAS held at one
        thread by the caller), else one after the other. See ``_train_epoch``.
    """
    cdef Net net
    _parse_net(layout, act_params, &net)
    return split_kind(&net, batch_size, np.dtype(dtype) == np.float32)


def train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sample_weight, order,
                Py_ssize_t batch_size, hyper, counters, work):
    """One epoch of mini-batch training, entirely without the GIL.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
        Parameters, updated in place. Its dtype ``D`` is the dtype of every float array.
    grad : ndarray of shape (n_params,), dtype D
        Scratch. The weight gradients are accumulated into it (GEMM beta 1) and zeroed
        by the optimizer loop once read, so on return its weight entries are 0; the
        other entries hold the last batch's unscaled intercept and slope sums.
    opt_state : ndarray of shape (2, n_params), dtype D
        SGD velocity (row 0) or Adam moments (rows 0, 1), updated in place.
    layout : ndarray of shape (n_layers - 1, 8), int64
    act_params : ndarray of shape (n_layers - 1, 2), float64
    X : ndarray of shape (n_samples, n_features)
        Dense input (converted to C order and dtype D if needed).
    Y : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,) or None
        None means unit weights.
    order : ndarray of shape (n_order,), int64
        The samples of this epoch, in order; batches are ``order[0:bs]``, ...
    batch_size : int
    hyper : ndarray of shape (6,), float64
        ``[LR, MOMENTUM, BETA_1, BETA_2, EPSILON, ALPHA]``.
    counters : ndarray of shape (7,), int64
        ``[SOLVER, NESTEROV, ADAM_T, STEP, SEED, LOSS, SERIAL]``; ``ADAM_T`` and ``STEP``
        are updated in place. ``SERIAL``: 0 the fit runs alone, 1 fits overlap in threads
        (every product on this thread, halves one after the other), 2 the fit runs alone
        and the caller holds BLAS at one thread (halves of every split network in two
        threads; see :func:`split_batches`).
    work : ndarray of shape (>= workspace_size(layout, min(batch_size, n_order)),), dtype D

    Returns
    -------
    float
        Sum over batches of the batch loss (L2 term included) times the batch's rows.
    """
    cdef Net net
    cdef int tn = _theta_type(theta)
    _parse_net(layout, act_params, &net)
    cdef cnp.ndarray th = _arr(theta, "theta", tn, 1, True)
    cdef cnp.ndarray gr = _arr(grad, "grad", tn, 1, True)
    cdef cnp.ndarray op = _arr(opt_state, "opt_state", tn, 2, True)
    cdef cnp.ndarray x = _data(X, "X", tn, 2)
    cdef cnp.ndarray y = _data(Y, "Y", tn, 2)
    cdef cnp.ndarray sw = None if sample_weight is None else _data(sample_weight,
                                                                    "sample_weight", tn, 1)
    cdef cnp.ndarray od = _arr(order, "order", cnp.NPY_INT64, 1, False)
    cdef cnp.ndarray hy = _arr(hyper, "hyper", cnp.NPY_DOUBLE, 1, False)
    cdef cnp.ndarray co = _arr(counters, "counters", cnp.NPY_INT64, 1, True)
    cdef cnp.ndarray wk = _arr(work, "work", tn, 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), n_order = cnp.PyArray_DIM(od, 0), i
    cdef const int64_t* po = <const int64_t*>cnp.PyArray_DATA(od)
    cdef const int64_t* pc = <const int64_t*>cnp.PyArray_DATA(co)
    cdef double loss
    _check_sizes(&net, th, gr, x, y, sw)
    if cnp.PyArray_DIM(op, 0) != 2 or cnp.PyArray_DIM(op, 1) != net.n_params:
        raise ValueError(f"opt_state must have shape (2, {net.n_params})")
    if cnp.PyArray_DIM(hy, 0) != 6 or cnp.PyArray_DIM(co, 0) != N_COUNTERS:
        raise ValueError(f"hyper must have 6 entries and counters {N_COUNTERS}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if pc[C_SOLVER] not in (0, 1):
        raise ValueError(f"counters[SOLVER] must be 0 (sgd) or 1 (adam), got {pc[C_SOLVER]}")
    _check_loss(&net, pc[C_LOSS])
    _check_serial(pc[C_SERIAL])
    net.serial = pc[C_SERIAL] == 1
    for i in range(n_order):
        if po[i] < 0 or po[i] >= n:
            raise ValueError(f"order[{i}] = {po[i]} is not a row of X ({n} rows)")
    if n_order == 0:
        return 0.0
    batch_size = min(batch_size, n_order)
    _check_work(wk, &net, batch_size)
    cdef void* p_sw = NULL if sw is None else cnp.PyArray_DATA(sw)
    cdef int split = split_kind(&net, batch_size, tn == cnp.NPY_FLOAT)
    # two threads for the halves when the fit runs alone and OpenMP may use two (it
    # follows OMP_NUM_THREADS and threadpoolctl's limits), and, for halves whose products
    # BLAS would thread, BLAS runs one thread (two callers of a 2-thread GEMM contend)
    cdef int n_threads = max(1, min(2, openmp.omp_get_max_threads()))
    if net.serial or (split == SPLIT_ONE_BLAS and pc[C_SERIAL] != 2):
        n_threads = 1
    cdef unsigned int csr
    with nogil:
        # the halves run in n_threads threads when split, else this thread calls BLAS
        warm_blas(n_threads if split else 1)
        csr = ftz_enter()
        if tn == cnp.NPY_DOUBLE:
            loss = _train_epoch(&net, <double*>cnp.PyArray_DATA(th),
                                <double*>cnp.PyArray_DATA(gr), <double*>cnp.PyArray_DATA(op),
                                <const double*>cnp.PyArray_DATA(x),
                                <const double*>cnp.PyArray_DATA(y), <const double*>p_sw,
                                po, n_order, batch_size,
                                <const double*>cnp.PyArray_DATA(hy),
                                <int64_t*>cnp.PyArray_DATA(co), <double*>cnp.PyArray_DATA(wk), n,
                                split, n_threads)
        else:
            loss = _train_epoch(&net, <float*>cnp.PyArray_DATA(th),
                                <float*>cnp.PyArray_DATA(gr), <float*>cnp.PyArray_DATA(op),
                                <const float*>cnp.PyArray_DATA(x),
                                <const float*>cnp.PyArray_DATA(y), <const float*>p_sw,
                                po, n_order, batch_size,
                                <const double*>cnp.PyArray_DATA(hy),
                                <int64_t*>cnp.PyArray_DATA(co), <float*>cnp.PyArray_DATA(wk), n,
                                split, n_threads)
        ftz_exit(csr)
    return loss


cdef int _check_sizes(const Net* net, cnp.ndarray th, cnp.ndarray gr, cnp.ndarray x,
                      cnp.ndarray y, cnp.ndarray sw) except -1:
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0)
    cdef Py_ssize_t n_out = net.layout[(net.n_layers - 1) * N_COLS + FAN_OUT]
    if cnp.PyArray_DIM(th, 0) != net.n_params:
        raise ValueError(f"theta has {cnp.PyArray_DIM(th, 0)} entries, layout needs "
                         f"{net.n_params}")
    if gr is not None and cnp.PyArray_DIM(gr, 0) != net.n_params:
        raise ValueError(f"grad must have {net.n_params} entries")
    if cnp.PyArray_DIM(x, 1) != net.layout[FAN_IN]:
        raise ValueError(f"X has {cnp.PyArray_DIM(x, 1)} columns, the network takes "
                         f"{net.layout[FAN_IN]}")
    if y is not None and (cnp.PyArray_DIM(y, 0) != n or cnp.PyArray_DIM(y, 1) != n_out):
        raise ValueError(f"Y must have shape ({n}, {n_out}), got {np.shape(y)}")
    if sw is not None and cnp.PyArray_DIM(sw, 0) != n:
        raise ValueError(f"sample_weight must have {n} entries")
    return 0


cdef int _check_serial(int64_t serial) except -1:
    if not (0 <= serial <= 2):
        raise ValueError(f"counters[SERIAL] = {serial} is not a mode: 0 (the fit runs "
                         "alone), 1 (fits overlap) or 2 (alone, BLAS held at one thread)")
    return 0


cdef int _check_loss(const Net* net, int64_t loss) except -1:
    # delta = p - y holds only for the canonical (loss, output activation) pairs
    cdef int64_t out_code = net.layout[(net.n_layers - 1) * N_COLS + ACT]
    cdef int64_t expected
    if not (0 <= loss <= 3):
        raise ValueError(f"counters[LOSS] = {loss} is not a loss code (0-3)")
    expected = (A_IDENTITY, A_EXP, A_LOGISTIC, A_SOFTMAX)[loss]
    if out_code != expected:
        raise ValueError(f"loss code {loss} needs output activation {expected}, the "
                         f"layout has {out_code}")
    return 0


def loss_grad(theta, grad, layout, act_params, X, Y, sample_weight, double alpha,
              counters, work):
    """Full-batch loss (L2 term included) at ``theta``; writes the gradient into ``grad``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64 (dtype D)
    grad : ndarray of shape (n_params,), dtype D
        Out: ``d loss / d theta``.
    layout, act_params : ndarray
        See :func:`train_epoch`.
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,) or None
    alpha : float
        L2 penalty.
    counters : ndarray of shape (7,), int64
        Only ``STEP``, ``SEED`` (RReLU) and ``LOSS`` are read; nothing is written.
    work : ndarray of shape (>= workspace_size(layout, n_samples),), dtype D

    Returns
    -------
    float
    """
    cdef Net net
    cdef int tn = _theta_type(theta)
    _parse_net(layout, act_params, &net)
    cdef cnp.ndarray th = _arr(theta, "theta", tn, 1, False)
    cdef cnp.ndarray gr = _arr(grad, "grad", tn, 1, True)
    cdef cnp.ndarray x = _data(X, "X", tn, 2)
    cdef cnp.ndarray y = _data(Y, "Y", tn, 2)
    cdef cnp.ndarray sw = None if sample_weight is None else _data(sample_weight,
                                                                    "sample_weight", tn, 1)
    cdef cnp.ndarray co = _arr(counters, "counters", cnp.NPY_INT64, 1, False)
    cdef cnp.ndarray wk = _arr(work, "work", tn, 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0)
    cdef double loss
    _check_sizes(&net, th, gr, x, y, sw)
    if cnp.PyArray_DIM(co, 0) != N_COUNTERS:
        raise ValueError(f"counters must have {N_COUNTERS} entries")
    cdef const int64_t* pc = <const int64_t*>cnp.PyArray_DATA(co)
    _check_serial(pc[C_SERIAL])
    net.serial = pc[C_SERIAL] == 1
    _check_loss(&net, pc[C_LOSS])
    if n == 0:
        raise ValueError("loss_grad needs at least one sample")
    _check_work(wk, &net, n)
    cdef void* p_sw = NULL if sw is None else cnp.PyArray_DATA(sw)
    cdef unsigned int csr
    with nogil:
        csr = ftz_enter()
        if tn == cnp.NPY_DOUBLE:
            loss = _loss_grad(&net, <const double*>cnp.PyArray_DATA(th),
                              <double*>cnp.PyArray_DATA(gr), <const double*>cnp.PyArray_DATA(x),
                              <const double*>cnp.PyArray_DATA(y), <const double*>p_sw, n,
                              alpha, pc, <double*>cnp.PyArray_DATA(wk))
        else:
            loss = _loss_grad(&net, <const float*>cnp.PyArray_DATA(th),
                              <float*>cnp.PyArray_DATA(gr), <const float*>cnp.PyArray_DATA(x),
                              <const float*>cnp.PyArray_DATA(y), <const float*>p_sw, n,
                              alpha, pc, <float*>cnp.PyArray_DATA(wk))
        ftz_exit(csr)
    return loss


cdef int _forward_status(const Net* net, const floating* theta, const floating* X,
                         Py_ssize_t n, Py_ssize_t n_x, floating* out, Py_ssize_t n_out,
                         bint apply_output, Py_ssize_t chunk_rows,
                         floating* work) noexcept nogil:
    """:func:`_forward` between the two finiteness checks of ``forward``'s status."""
    if not _all_finite(X, n_x):
        return 1
    _forward(net, theta, X, n, out, apply_output, chunk_rows, work)
    return 0 if _all_finite(<const floating*>out, n_out) else 2


def forward(theta, layout, act_params, X, out, bint apply_output, Py_ssize_t chunk_rows,
            work):
    """Prediction: the output layer's activations (or logits) for every row of ``X``.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64 (dtype D)
    layout, act_params : ndarray
        See :func:`train_epoch`.
    X : ndarray of shape (n_samples, n_features)
        Dense (converted to C order and dtype D if needed).
    out : ndarray of shape (n_samples, n_outputs), dtype D, C-contiguous
        Out: activations if ``apply_output`` else pre-activations. RReLU uses its mean
        slope ``(lower + upper) / 2``.
    apply_output : bool
    chunk_rows : int
        Rows processed per pass (the output GEMM writes straight into ``out``).
    work : ndarray of shape (>= workspace_size(layout, min(chunk_rows, n_samples)),)

    Returns
    -------
    status : int
        0: ``X`` and ``out`` are finite; 1: ``X`` holds NaN or inf (nothing computed,
        ``out`` undefined); 2: ``X`` is finite but some output is not (overflow).
    """
    cdef Net net
    cdef int tn = _theta_type(theta)
    cdef int status = 0
    _parse_net(layout, act_params, &net)
    cdef cnp.ndarray th = _arr(theta, "theta", tn, 1, False)
    cdef cnp.ndarray x = _data(X, "X", tn, 2)
    cdef cnp.ndarray o = _arr(out, "out", tn, 2, True)
    cdef cnp.ndarray wk = _arr(work, "work", tn, 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0)
    _check_sizes(&net, th, None, x, None, None)
    if (cnp.PyArray_DIM(o, 0) != n or cnp.PyArray_DIM(o, 1)
            != net.layout[(net.n_layers - 1) * N_COLS + FAN_OUT]):
        raise ValueError(f"out has shape {np.shape(o)}, expected ({n}, "
                         f"{net.layout[(net.n_layers - 1) * N_COLS + FAN_OUT]})")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    if n == 0:
        return 0
    chunk_rows = min(chunk_rows, n)
    _check_work(wk, &net, chunk_rows)
    cdef Py_ssize_t n_x = cnp.PyArray_SIZE(x), n_o = cnp.PyArray_SIZE(o)
    cdef unsigned int csr
    with nogil:
        csr = ftz_enter()
        if tn == cnp.NPY_DOUBLE:
            status = _forward_status(&net, <const double*>cnp.PyArray_DATA(th),
                                     <const double*>cnp.PyArray_DATA(x), n, n_x,
                                     <double*>cnp.PyArray_DATA(o), n_o, apply_output,
                                     chunk_rows, <double*>cnp.PyArray_DATA(wk))
        else:
            status = _forward_status(&net, <const float*>cnp.PyArray_DATA(th),
                                     <const float*>cnp.PyArray_DATA(x), n, n_x,
                                     <float*>cnp.PyArray_DATA(o), n_o, apply_output,
                                     chunk_rows, <float*>cnp.PyArray_DATA(wk))
        ftz_exit(csr)
    return status


# ================================================================== test wrappers
def cpu_supports_avx2():
    """Whether this CPU and OS run AVX2 code (selects the ``_cy_avx2`` build)."""
    return bool(fastmlp_cpu_supports_avx2())


def fp_mode():
    """The calling thread's MXCSR on x86, else 0: the kernels set flush-to-zero and
    denormals-are-zero while they run and must leave it as they found it."""
    return int(c_fp_mode())



def blas_warm_threads():
    """How many threads at once :func:`warm_blas` has touched OpenBLAS's buffers from so far
    in this process (0, 1 or 2); ``train_epoch`` warms them on first use."""
    return _blas_warm_threads


def rrelu_uniform(seed, step, layer, Py_ssize_t n_rows, Py_ssize_t n_units):
    """The RReLU uniforms of the contract as the kernels draw them, shape
    ``(n_rows, n_units)``, float64 (compare with ``fastmlp.activations.rrelu_uniform``)."""
    cdef uint64_t key = rrelu_layer_key(<uint64_t>seed, <uint64_t>step, <uint64_t>layer)
    cdef cnp.ndarray u = np.empty((n_rows, n_units), dtype=np.float64)
    cdef double* pu = <double*>cnp.PyArray_DATA(u)
    cdef Py_ssize_t c
    with nogil:
        for c in range(n_rows * n_units):
            pu[c] = _uniform(key, <uint64_t>c)
    return u


def activation_forward(int code, Z, bias, act_params_row, slopes=None, Py_ssize_t k=1,
                       bint train=False, seed=0, step=0, layer=0):
    """Run :func:`act_forward` on a copy of ``Z`` (rows, n_units * k) plus ``bias``.

    Returns
    -------
    A : ndarray of shape (rows, n_units)
        The activations.
    F : ndarray of shape (rows, n_units) or None
        ``f'(z)`` as stored for the backward pass (codes that store it, ``train`` only).
    """
    cdef int tn = _theta_type(Z)
    cdef cnp.ndarray z = np.array(Z, order="C", copy=True)
    cdef Py_ssize_t rows = z.shape[0], units = z.shape[1] // k
    cdef cnp.ndarray b = _data(bias, "bias", tn, 1)
    cdef cnp.ndarray p = _data(act_params_row, "act_params_row", cnp.NPY_DOUBLE, 1)
    cdef cnp.ndarray s = None if slopes is None else _data(slopes, "slopes", tn, 1)
    cdef bint sep = code == A_PRELU or code == A_MAXOUT
    cdef cnp.ndarray a = np.empty((rows, units), dtype=z.dtype) if sep else z
    cdef cnp.ndarray f = np.empty((rows, units), dtype=z.dtype) if _stores_fprime(code) else None
    if b.shape[0] != units * k or p.shape[0] != 2 or z.shape[1] != units * k:
        raise ValueError("bias must have n_units * k entries and act_params_row 2")
    if code == A_PRELU and (s is None or s.shape[0] != units):
        raise ValueError("prelu needs one slope per unit")
    if not (0 <= code <= A_MAXOUT or code == A_SOFTMAX or code == A_EXP):
        raise ValueError(f"unknown activation code {code}")
    cdef uint64_t key = rrelu_layer_key(<uint64_t>seed, <uint64_t>step, <uint64_t>layer)
    if tn == cnp.NPY_DOUBLE:
        act_forward(code, <const double*>cnp.PyArray_DATA(p), <double*>cnp.PyArray_DATA(z),
                    <double*>cnp.PyArray_DATA(a),
                    <double*>NULL if f is None else <double*>cnp.PyArray_DATA(f),
                    <const double*>cnp.PyArray_DATA(b),
                    <const double*>NULL if s is None else <const double*>cnp.PyArray_DATA(s),
                    rows, units, k, train, key, 0)
    else:
        act_forward(code, <const double*>cnp.PyArray_DATA(p), <float*>cnp.PyArray_DATA(z),
                    <float*>cnp.PyArray_DATA(a),
                    <float*>NULL if f is None else <float*>cnp.PyArray_DATA(f),
                    <const float*>cnp.PyArray_DATA(b),
                    <const float*>NULL if s is None else <const float*>cnp.PyArray_DATA(s),
                    rows, units, k, train, key, 0)
    return a, (f if train else None)


def row_major_gemm(str ta, str tb, double alpha, A, B, double beta, C, bint serial=False):
    """``C := alpha op(A) op(B) + beta C`` on C-ordered arrays through the kernels' GEMM
    wrapper (``ta``, ``tb`` in {'n', 't'}); ``C`` is updated in place and returned.
    ``serial`` goes through the row-blocked path the kernels take while other fits run."""
    cdef int tn = _theta_type(C)
    cdef cnp.ndarray a = _arr(A, "A", tn, 2, False)
    cdef cnp.ndarray b = _arr(B, "B", tn, 2, False)
    cdef cnp.ndarray c = _arr(C, "C", tn, 2, True)
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[1] if ta == "n" else a.shape[0]
    if ((a.shape[0] if ta == "n" else a.shape[1]) != m
            or (b.shape[0] if tb == "n" else b.shape[1]) != k
            or (b.shape[1] if tb == "n" else b.shape[0]) != n or ta not in "nt"
            or tb not in "nt"):
        raise ValueError("shapes do not match")
    cdef char cta = ord(ta), ctb = ord(tb)
    if tn == cnp.NPY_DOUBLE:
        gemm_serial(serial, cta, ctb, m, n, k, alpha, <const double*>cnp.PyArray_DATA(a),
                    a.shape[1], <const double*>cnp.PyArray_DATA(b), b.shape[1], beta,
                    <double*>cnp.PyArray_DATA(c), n)
    else:
        gemm_serial(serial, cta, ctb, m, n, k, <float>alpha,
                    <const float*>cnp.PyArray_DATA(a), a.shape[1],
                    <const float*>cnp.PyArray_DATA(b), b.shape[1], <float>beta,
                    <float*>cnp.PyArray_DATA(c), n)
    return C


def optimizer_step(theta, grad, opt_state, Py_ssize_t n_coef, hyper, counters,
                   double sw_sum):
    """One fused optimizer step on the flat vectors, as ``train_epoch`` takes it after
    each batch.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64 (dtype D)
        Updated in place.
    grad : ndarray of shape (n_params,), dtype D
        The UNSCALED gradient (``A^T delta`` without L2, delta sums, slope sums).
    opt_state : ndarray of shape (2, n_params), dtype D
        Updated in place.
    n_coef : int
        ``theta[:n_coef]`` are the weights (the L2 term applies to them).
    hyper : ndarray of shape (6,), float64
    counters : ndarray of shape (7,), int64
        ``SOLVER`` and ``NESTEROV`` are read, ``ADAM_T`` is incremented (Adam).
    sw_sum : float
        Sum of the batch's sample weights.

    Returns
    -------
    float
        ``||theta[:n_coef]||^2`` before the step (0 when ``alpha`` is 0).
    """
    cdef int tn = _theta_type(theta)
    cdef cnp.ndarray th = _arr(theta, "theta", tn, 1, True)
    cdef cnp.ndarray gr = _arr(grad, "grad", tn, 1, False)
    cdef cnp.ndarray op = _arr(opt_state, "opt_state", tn, 2, True)
    cdef cnp.ndarray hy = _arr(hyper, "hyper", cnp.NPY_DOUBLE, 1, False)
    cdef cnp.ndarray co = _arr(counters, "counters", cnp.NPY_INT64, 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(th, 0)
    cdef double* h = <double*>cnp.PyArray_DATA(hy)
    cdef int64_t* c = <int64_t*>cnp.PyArray_DATA(co)
    cdef double ss, lr_t
    if (cnp.PyArray_DIM(gr, 0) != n or cnp.PyArray_DIM(op, 0) != 2
            or cnp.PyArray_DIM(op, 1) != n or not 0 <= n_coef <= n
            or cnp.PyArray_DIM(hy, 0) != 6 or cnp.PyArray_DIM(co, 0) != N_COUNTERS):
        raise ValueError("inconsistent shapes")
    cdef void* pt = cnp.PyArray_DATA(th)
    cdef void* pg = cnp.PyArray_DATA(gr)
    cdef void* po = cnp.PyArray_DATA(op)
    with nogil:
        if c[C_SOLVER] == 1:
            c[C_ADAM_T] += 1
            lr_t = h[H_LR] * sqrt(1.0 - pow(h[H_BETA_2], <double>c[C_ADAM_T])) / (
                1.0 - pow(h[H_BETA_1], <double>c[C_ADAM_T]))
            if tn == cnp.NPY_DOUBLE:
                ss = adam_step(<double*>pt, <double*>pg, NULL, <double*>po, <double*>po + n,
                               n, n_coef, lr_t, h[H_BETA_1], h[H_BETA_2], h[H_EPSILON],
                               h[H_ALPHA], sw_sum, False, 1)
            else:
                ss = adam_step(<float*>pt, <float*>pg, NULL, <float*>po, <float*>po + n, n,
                               n_coef, lr_t, h[H_BETA_1], h[H_BETA_2], h[H_EPSILON],
                               h[H_ALPHA], sw_sum, False, 1)
        else:
            if tn == cnp.NPY_DOUBLE:
                ss = sgd_step(<double*>pt, <double*>pg, <double*>po, n, n_coef,
                              h[H_LR], h[H_MOMENTUM], c[C_NESTEROV] != 0, h[H_ALPHA], sw_sum, False)
            else:
                ss = sgd_step(<float*>pt, <float*>pg, <float*>po, n, n_coef, h[H_LR],
                              h[H_MOMENTUM], c[C_NESTEROV] != 0, h[H_ALPHA], sw_sum, False)
    return ss
