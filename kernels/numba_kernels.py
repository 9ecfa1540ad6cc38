"""Numba kernels of fastmlp: the compiled half of the ``numba`` backend.

They implement ``docs/kernel_contract.md``; ``fastmlp.backends._numba`` wraps them in the
backend entry points (``None`` sample weights, sparse input, clear errors on wrong types).
Everything below works on the flat parameter vector ``theta`` and on views carved out of the
caller's ``work`` vector; nothing is allocated per mini-batch (one small offsets array per call).
The kernels check the layout against the arrays before any unchecked access and raise
``ValueError`` on a mismatch.

Compilation policy
------------------
- **Explicit signatures, one dispatcher per dtype.** :func:`plan`, :func:`split_kind`,
  :func:`work_size` and :func:`rrelu_uniform_kernel` take no float arrays and are compiled
  (or loaded from the cache) when this module is imported. :func:`train_epoch_kernel`,
  :func:`train_epoch_parallel_kernel`, :func:`loss_grad_kernel` and :func:`forward_kernel`
  are :class:`PerDtype` kernels: one Numba dispatcher per dtype of ``theta`` (float32,
  float64), each with its one explicit signature, made the first time a call needs it. A
  process loads only the machine code it runs (a float64 fit loads one epoch kernel and the
  forward kernel, not eight; 0.2-0.3 s of a cold start), and no kernel ever compiles a new
  specialisation in the middle of a fit: a call with other argument types raises
  ``TypeError``. Inputs that the kernels only read are declared read-only, so read-only
  arrays (joblib memmaps) are accepted without a copy.
- **Cached.** ``cache=True``: the first import compiles (tens of seconds) and writes the
  machine code next to this file (or to Numba's user cache directory when that is not
  writable); later imports load it.
- **Helpers carry no signature.** They are typed through the entry points that call them, so
  each is compiled once per dtype, as part of those entry points. Activations and losses are
  dispatched on their integer code with the branch *outside* the loops over rows and units:
  adding an activation adds one loop, it does not multiply the number of specialisations.
- **One file.** Numba keys each cached function on its own source file only; a helper kept in
  another module could be edited without invalidating the cached entry points that inline it.
  So every function that Numba compiles for this backend lives here.
- **Constants are unliteral.** Numba types a constant argument (``0``, ``True``) as a literal
  and compiles the callee once more for it; :func:`_unlit` keeps one specialisation per dtype
  (it halved the compile time of the batch code).
- **Flags.** ``nogil=True`` everywhere (a whole epoch runs without the GIL);
  ``error_model='numpy'`` (a division by zero gives inf/nan instead of a Python exception check
  in every loop, which would also block vectorisation); no ``boundscheck``. ``fastmath`` is
  limited to FMA contraction (matrix-product loops, :func:`_exp`) and to re-association
  where a loop sums (dot products, the L2 sum of squares, so they vectorise); never
  ``nnan``/``ninf``: non-finite values must propagate so the estimator can detect a
  diverging fit.
- **Flags that the context cannot change.** A process that compiles a kernel runs the
  callees it compiled on their own, while the cached kernel that later processes load holds
  copies that LLVM optimised again inside it. With re-association, or contraction where an
  expression offers two products to fuse (``m c1 + g d1``), the two can round differently: so
  the optimizer's arithmetic per entry is IEEE (:func:`_adam_entry`, as in Cython and
  scikit-learn) and only its sum of squares re-associates (``_F_SUM``). Every function
  states ``fastmath``, if only as ``False``: a callee without the option inherits the flags
  of the first caller that compiles it. A test compares a fresh process's fits with a cached
  one's, bit for bit.

What keeps the loops vectorised (each measured): in-place loops read and write one array
variable (two views of one buffer fail LLVM's runtime overlap check); loops start at index 0
of a slice (a runtime start offset keeps Numba's negative-index check in every access); the
float32 loops stay float32 (:func:`_sqrt`; Numba's own ``sqrt``/``exp`` of a float32 return a
float64); ``exp`` is :func:`_exp` (plain arithmetic) rather than libm's scalar call.

Matrix products go to BLAS through ``np.dot(a, b, out)`` (Numba calls scipy's ``?gemm``; no
copies for transposed operands), except tiny ones (``m * k * n <= SMALL_GEMM``: one sample per
step), the gradient of a layer with one or two inputs, and the outer product that propagates
the delta of a one-output layer, where BLAS's call and packing overhead exceeds the arithmetic
and a plain loop wins (measured per shape against single-threaded OpenBLAS). Plain loops
cannot beat BLAS on mid-size products: Numba does not enable LLVM's SLP vectoriser, so
register-blocked micro-kernels compile to scalar code.

Work layout (see :func:`plan`): for ``R`` rows, the gathered input ``XB`` (R x n_in), a scratch
``T`` (R x widest hidden layer) for the product ``delta W^T``, and per layer ``Z`` (R x N_PRE),
then ``A`` (R x FAN_OUT) for hidden layers whose derivative needs ``z`` (codes above 3), then
the RReLU slopes (R x FAN_OUT). ``A`` shares ``Z``'s memory for identity/logistic/tanh/relu
(their derivatives need only the output, as in scikit-learn) and for the output layer. In the
backward pass the delta of layer ``l`` overwrites ``Z_l``, which is dead by then.
"""

import math
import platform
import threading
from types import FunctionType

import numpy as np
from numba import boolean, float32, float64, int64, njit, prange, types, void
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array
from llvmlite import ir

__all__ = [
    "SMALL_GEMM",
    "PerDtype",
    "plan",
    "train_epoch_kernel",
    "loss_grad_kernel",
    "forward_kernel",
    "rrelu_uniform_kernel",
]

# ----------------------------------------------------------------------------- indices
# layout columns, hyper and counters entries, solver/loss/activation codes: the contract's
FAN_IN, FAN_OUT, N_PRE, COEF_OFF, INTER_OFF, ACT, SLOPE_OFF, K = range(8)
LR, MOMENTUM, BETA_1, BETA_2, EPSILON, ALPHA = range(6)
SOLVER, NESTEROV, ADAM_T, STEP, SEED, LOSS, SERIAL = range(7)
N_COUNTERS = 7
SGD, ADAM = 0, 1
SQUARED_ERROR, POISSON, BINARY_LOG_LOSS, LOG_LOSS = range(4)
(IDENTITY, LOGISTIC, TANH, RELU, LEAKY_RELU, PRELU, RRELU, ELU, SELU, SOFTPLUS, SWISH, GELU,
 GELU_TANH, HARD_SIGMOID, HARD_TANH, MAXOUT) = range(16)
SOFTMAX, EXP = 20, 21

# columns of the plan (offsets into work); row L holds [XB, T, total]
P_Z, P_A, P_R = 0, 1, 2
_ALIGN = 8  # every buffer starts on a multiple of 8 elements (whole cache lines for float64)

SMALL_GEMM = 256
"""Products with ``m * k * n`` at most this use a plain loop instead of BLAS (measured)."""

SERIAL_MNK = 262144
"""scipy's OpenBLAS runs a GEMM on at most ``ceil(m n k / 262144) - 1`` threads (its
GEMM_MULTITHREAD_THRESHOLD of 4 times 65536): a product of at most this many multiply-adds
stays on the calling thread (checked: process CPU time over wall time)."""

SERIAL_MIN_ROWS = 16
"""With ``counters[SERIAL]`` set, products are split into blocks of at least this many rows
(smaller blocks cost more in repeated packing than the threads would)."""

SPLIT_MIN_ROWS = 64
"""Batches of at least this many rows are computed as two halves (:func:`split_kind`; two
threads when the fit runs alone: :func:`train_epoch_parallel_kernel`); smaller ones whole."""

SPLIT_MAX_MNK_F32 = 2**26
"""Largest product of a half batch (multiply-adds) for which a float32 batch is split
(float64: :data:`SPLIT_MAX_WEIGHTS_F64`). Halves in threads also run the Adam step of a
large network (:data:`OPT_PAR_MIN`) in two threads, fused with the sum of their gradients,
so splitting pays on large float64 layers too (Cython, 2 epochs of 20000 rows, 100 features,
200-row batches unless said, whole batches against halves: 512-512 0.729 -> 0.598 s,
1024-1024 at 256 rows 2.198 -> 1.955, W4 3.09 -> 2.90). In float32 the multiply-adds are
twice as fast and each half packs the whole weight matrix for its products: 512-512 0.382 ->
0.333 s and 2048 at 256 rows 0.303 -> 0.241, but 1024-1024 1.044 -> 1.046 and W4 1.54 ->
1.78."""

SPLIT_MAX_WEIGHTS_F64 = 2**20
"""Most weights of a layer for which a float64 batch is split: beyond, each half packing the
whole weight matrix costs more than the two-thread optimizer step gains (Cython, 10000 rows,
1 epoch, 128-row batches, whole -> halves: 2048-1024 1.163 -> 1.232 s, 1448-1448 1.152 ->
1.220, 2048-2048 2.329 -> 2.454; W4's 1024-1024 gains, above)."""

OPT_PAR_MIN = 262144
"""Parameters from which the optimizer step is computed as two ranges (:func:`opt_split`), in
two threads when the halves of the batches are: the Adam loop is bound by memory bandwidth,
which two cores raise (W4's float64 step, 104 MB, takes 2.5 ms on one core; with the second
gradient, 149 MB, 2.5 ms on two). Below it a fork/join costs more than the split saves."""

SPLIT_NONE, SPLIT_SERIAL, SPLIT_ONE_BLAS = 0, 1, 2
"""What :func:`split_kind` returns: whole batches; halves whose products all stay on their
thread by themselves (or as row blocks); halves whose products BLAS would thread, run in two
threads only while the caller holds BLAS at one thread (``counters[SERIAL] == 2``)."""

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715

# SplitMix64 (docs/kernel_contract.md): every operand is uint64, so Numba never promotes the
# arithmetic to float64 (uint64 mixed with int64 would be)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U11, _U27, _U30, _U31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)
_TWO_M53 = 2.0**-53

# fastmath=False is explicit: a callee without the option inherits its first caller's flags
_F = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
_F_GEMM = dict(_F, fastmath={"contract"})
_F_GEMM_SUM = dict(_F, fastmath={"contract", "reassoc"})  # dot products may vectorise
_F_SUM = dict(_F, fastmath={"reassoc"})  # loops whose only arithmetic of their own is a sum

# ------------------------------------------------------------------------------ types
_I1 = int64[::1]
_I2RO = types.Array(int64, 2, "C", readonly=True)
_F1RO = types.Array(float64, 1, "C", readonly=True)
_F2RO = types.Array(float64, 2, "C", readonly=True)


def _ro(dt, nd):
    return types.Array(dt, nd, "C", readonly=True)


class PerDtype:
    """A kernel with one Numba dispatcher per dtype of its first argument, made on first use.

    Parameters
    ----------
    py_func : function
        The kernel's Python source; its first argument is ``theta`` (float32 or float64).
    make_sig : callable
        ``make_sig(numba_float_type)`` gives the one explicit signature of that dtype.
    **flags
        ``njit`` options (``cache``, ``nogil``, ``parallel``, ...).

    Notes
    -----
    Calling it calls the dispatcher of ``theta.dtype``; the first call for a dtype compiles
    it, or loads it from Numba's cache. Both dispatchers share ``py_func``'s cache file,
    whose index is keyed by signature. Any ``theta`` that is not a float32 or float64 array,
    and any argument that does not match the signature, raises ``TypeError``, as a dispatcher
    with explicit signatures does.
    """

    _NUMBA_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}

    def __init__(self, py_func, make_sig, **flags):
        self.py_func = py_func
        self._make_sig = make_sig
        self.targetoptions = dict(flags)
        self._by_dtype = {}
        self._lock = threading.Lock()
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__doc__ = py_func.__doc__

    def dispatcher(self, dtype):
        """The Numba dispatcher for ``theta`` of ``dtype`` (compiled or loaded now if new).

        Raises
        ------
        TypeError
            If ``dtype`` is not float32 or float64.
        """
        dtype = np.dtype(dtype)
        if dtype not in self._NUMBA_TYPES:
            raise TypeError(f"{self.__name__} has no signature for theta of dtype {dtype}; "
                            "it takes float32 or float64")
        with self._lock:  # two threads' first calls (GridSearchCV) make one dispatcher
            disp = self._by_dtype.get(dtype)
            if disp is None:
                disp = njit([self._make_sig(self._NUMBA_TYPES[dtype])],
                            **self.targetoptions)(self.py_func)
                self._by_dtype[dtype] = disp
        return disp

    def __call__(self, theta, *args):
        try:
            disp = self._by_dtype[theta.dtype]
        except (KeyError, AttributeError, TypeError):
            if not isinstance(theta, np.ndarray):
                raise TypeError(f"{self.__name__}: theta must be a float32 or float64 "
                                f"ndarray, got {type(theta).__name__}") from None
            disp = self.dispatcher(theta.dtype)
        return disp(theta, *args)

    @property
    def signatures(self):
        """The signatures of the dispatchers made so far."""
        return [sig for d in self._by_dtype.values() for sig in d.signatures]


# ------------------------------------------------------------------------------ plan
@intrinsic
def _unlit(typingctx, x):
    """``x`` typed as a plain value. Numba types a constant argument (``0``, ``True``) as a
    literal, and each literal gives the callee one more specialisation to compile (the whole
    batch code, twice per dtype); routing constants through here keeps one per dtype."""
    plain = types.unliteral(x)

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], sig.return_type)

    return plain(x), codegen


# ------------------------------------------------------------------ subnormal numbers
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
FTZ_DAZ = 0x8040
"""MXCSR bits set while a kernel runs on x86: flush-to-zero (results below the dtype's
smallest normal number are 0) and denormals-are-zero (such inputs are read as 0)."""


def _csr_codegen(name):
    def call(builder, ptr):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [builder.bitcast(ptr, ir.IntType(8).as_pointer())])
    return call


_stmxcsr_call = _csr_codegen("llvm.x86.sse.stmxcsr")
_ldmxcsr_call = _csr_codegen("llvm.x86.sse.ldmxcsr")


@intrinsic
def _read_mxcsr(typingctx):
    """The calling thread's MXCSR (x86 only)."""
    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        _stmxcsr_call(builder, ptr)
        return builder.zext(builder.load(ptr), ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def _write_mxcsr(typingctx, value):
    """Load ``value`` (int64, low 32 bits) into the calling thread's MXCSR (x86 only)."""
    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(builder.trunc(args[0], ir.IntType(32)), ptr)
        _ldmxcsr_call(builder, ptr)
        return context.get_dummy_value()

    return types.void(types.int64), codegen


if _X86:
    @njit(**_F)
    def _ftz_enter():
        """Set flush-to-zero and denormals-are-zero on the calling thread; return its
        previous MXCSR for :func:`_ftz_exit`.

        Arithmetic on subnormal numbers takes a microcode assist of about a hundred cycles
        per operation on many x86 cores: a float32 fit whose Adam moments or dead units'
        weights decay into that range (W2: 3.6 % of theta and 21 % of the moments after 20
        epochs) ran 6x slower than in float64 on an Intel Xeon. Flushing changes only
        values below 1.2e-38 (float32) or 2.2e-308 (float64), which are 0 to the
        precision of any weight or loss."""
        old = _read_mxcsr()
        _write_mxcsr(old | FTZ_DAZ)
        return old

    @njit(**_F)
    def _ftz_exit(old):
        """Restore the MXCSR that :func:`_ftz_enter` returned."""
        _write_mxcsr(old)

    @njit(**_F)
    def fp_mode():
        """The calling thread's MXCSR (for tests: kernels must leave it as they found it)."""
        return _read_mxcsr()
else:
    @njit(**_F)
    def _ftz_enter():
        """No-op off x86: subnormal numbers are computed, as NumPy does."""
        return np.int64(0)

    @njit(**_F)
    def _ftz_exit(old):
        """No-op off x86."""
        pass

    @njit(**_F)
    def fp_mode():
        """0 off x86 (the kernels do not change the floating-point mode there)."""
        return np.int64(0)


@njit(**_F)
def _round_up(n):
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@njit([int64(_I2RO, int64, int64[:, ::1])], **_F)
def plan(layout, n_rows, offs):
    """Carve ``work`` into buffers for batches of up to ``n_rows`` rows.

    Parameters
    ----------
    layout : int64 array of shape (L, 8), read
    n_rows : int
    offs : int64 array of shape (L + 1, 3), written
        Row ``l < L``: offsets of ``Z_l``, ``A_l`` (equal to ``Z_l``'s when they share
        memory) and the RReLU slopes (-1 if none). Row ``L``: offsets of ``XB`` and ``T``,
        and the total.

    Returns
    -------
    int
        Elements of ``work`` needed (the total).
    """
    L = layout.shape[0]
    pos = 0
    offs[L, 0] = pos
    pos += _round_up(n_rows * layout[0, FAN_IN])
    widest = 0
    for l in range(L - 1):
        widest = max(widest, layout[l, FAN_OUT])
    offs[L, 1] = pos
    pos += _round_up(n_rows * widest)
    for l in range(L):
        code = layout[l, ACT]
        hidden = l < L - 1
        offs[l, P_Z] = pos
        pos += _round_up(n_rows * layout[l, N_PRE])
        if hidden and code > RELU:
            offs[l, P_A] = pos
            pos += _round_up(n_rows * layout[l, FAN_OUT])
        else:
            offs[l, P_A] = offs[l, P_Z]
        if hidden and code == RRELU:
            offs[l, P_R] = pos
            pos += _round_up(n_rows * layout[l, FAN_OUT])
        else:
            offs[l, P_R] = -1
    offs[L, 2] = pos
    return pos


@njit(**_F)
def _n_params(layout):
    n = 0
    for l in range(layout.shape[0]):
        n += (layout[l, FAN_IN] + 1) * layout[l, N_PRE]
        if layout[l, SLOPE_OFF] >= 0:
            n += layout[l, FAN_OUT]
    return n


@njit(**_F)
def _stays_serial(m, n, k):
    """Whether :func:`_serial_rows` keeps an (m x n) = (m x k)(k x n) product on one
    thread: small enough already, or it splits into blocks of ``SERIAL_MIN_ROWS`` rows."""
    return m * n * k <= SERIAL_MNK or n * k * SERIAL_MIN_ROWS <= SERIAL_MNK


@njit([int64(_I2RO, int64, boolean)], **_F)
def split_kind(layout, batch_size, f32):
    """How batches of ``batch_size`` rows are computed: ``SPLIT_NONE`` (whole),
    ``SPLIT_SERIAL`` (two halves whose products, forward ``A W``, gradient ``A^T delta`` and
    ``delta W^T``, all stay on their thread) or ``SPLIT_ONE_BLAS`` (two halves whose products
    stay on their thread only while BLAS runs one thread). Halves need ``SPLIT_MIN_ROWS``
    rows and, in float32 (``f32``), products of at most ``SPLIT_MAX_MNK_F32`` multiply-adds,
    in float64 layers of at most ``SPLIT_MAX_WEIGHTS_F64`` weights (RReLU layers split too:
    a half passes its first row in the batch, so it draws the whole batch's slopes)."""
    if batch_size < SPLIT_MIN_ROWS:
        return SPLIT_NONE
    h = (batch_size + 1) // 2
    kind = SPLIT_SERIAL
    for l in range(layout.shape[0]):
        fi, npre = layout[l, FAN_IN], layout[l, N_PRE]
        if f32 and h * fi * npre > SPLIT_MAX_MNK_F32:  # all three products of the layer
            return SPLIT_NONE
        if not f32 and fi * npre > SPLIT_MAX_WEIGHTS_F64:
            return SPLIT_NONE
        if not (_stays_serial(h, npre, fi) and _stays_serial(fi, npre, h)
                and _stays_serial(h, fi, npre)):
            kind = SPLIT_ONE_BLAS
    return kind


@njit([int64(_I2RO, int64)], **_F)
def work_size(layout, n_rows):
    """Elements of ``work`` for up to ``n_rows`` rows at a time: the plan for ``n_rows``
    rows, or two plans for half as many (a split batch) and a second gradient."""
    L = layout.shape[0]
    offs = np.empty((L + 1, 3), np.int64)
    whole = plan(layout, n_rows, offs)
    halves = 2 * plan(layout, (n_rows + 1) // 2, offs)
    return _round_up(max(whole, halves)) + _n_params(layout)


def _borrowed(context, builder, src, dtype, res_type, off, shape):
    """The array of :func:`_view`, :func:`_span` and :func:`_row`: ``res_type``, C-contiguous
    over ``src``'s data from element ``off`` with ``shape`` (LLVM values), no memory owner."""
    dst = make_array(res_type)(context, builder)
    itemsize = context.get_constant(types.intp,
                                    context.get_abi_sizeof(context.get_data_type(dtype)))
    strides = [itemsize]
    for extent in shape[:0:-1]:
        strides.insert(0, builder.mul(strides[0], extent))
    populate_array(dst, data=builder.gep(src.data, [off]), shape=shape, strides=strides,
                   itemsize=itemsize, meminfo=cgutils.get_null_value(src.meminfo.type),
                   parent=cgutils.get_null_value(src.parent.type))
    return dst._getvalue()


def _intp(context, builder, sig, args, i):
    return context.cast(builder, args[i], sig.args[i], types.intp)


@intrinsic
def _view(typingctx, work, off, rows, cols):
    """``work[off : off + rows * cols]`` as a C-contiguous (rows, cols) matrix.

    What ``work[off:...].reshape((rows, cols))`` returns, built directly: ``reshape`` goes
    through a generic helper that costs ~50 ns a call, and a batch makes some thirty views
    (measured: a visible share of a one-sample SGD step). The caller guarantees the range
    lies inside ``work``.

    The view is *borrowed*: it has no memory owner (a null meminfo), so making and dropping
    it costs no reference counting. Numba's incref and decref of an owner are atomic
    operations, and a batch's thirty views and slices spent about 2 us in them (measured
    on W2: 6 % of its fit time). A borrowed view must not outlive the kernel call that
    receives ``work``; none is returned.
    """
    if not (isinstance(work, types.Array) and work.ndim == 1 and work.layout == "C"):
        return None
    res_type = types.Array(work.dtype, 2, "C", readonly=not work.mutable)

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        shape = [_intp(context, builder, sig, args, 2), _intp(context, builder, sig, args, 3)]
        return _borrowed(context, builder, src, work.dtype, res_type,
                         _intp(context, builder, sig, args, 1), shape)

    return res_type(work, off, rows, cols), codegen


@intrinsic
def _span(typingctx, arr, lo, hi):
    """``arr[lo:hi]`` of a C-contiguous 1-d array, borrowed like :func:`_view` (no reference
    count: slicing increfs and decrefs the owner with two atomic operations). The caller
    guarantees ``0 <= lo <= hi <= arr.size``."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None
    res_type = types.Array(arr.dtype, 1, "C", readonly=not arr.mutable)

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        lo_v = _intp(context, builder, sig, args, 1)
        n = builder.sub(_intp(context, builder, sig, args, 2), lo_v)
        return _borrowed(context, builder, src, arr.dtype, res_type, lo_v, [n])

    return res_type(arr, lo, hi), codegen


@intrinsic
def _row(typingctx, arr, i):
    """Row ``i`` of a C-contiguous 2-d array as a borrowed 1-d array (see :func:`_span`)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None
    res_type = types.Array(arr.dtype, 1, "C", readonly=not arr.mutable)

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        cols = builder.extract_value(src.shape, 1)
        off = builder.mul(_intp(context, builder, sig, args, 1), cols)
        return _borrowed(context, builder, src, arr.dtype, res_type, off, [cols])

    return res_type(arr, i), codegen


@intrinsic
def _sqrt(typingctx, x):
    """``sqrt`` in the precision of ``x``: Numba's ``math.sqrt`` / ``np.sqrt`` of a float32
    scalar return a float64, which turns the float32 Adam loop into a mixed-width loop that
    LLVM does not vectorise."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.sqrt", [args[0].type])
        return builder.call(fn, args)

    return x(x), codegen


@intrinsic
def _f64_bits(typingctx, x):
    """The bits of a float64 as an int64 (a register reinterpretation, no conversion)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _bits_f64(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""
    if x != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(x), codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer held in the low bits
_SHIFTER_BITS = 0x4338000000000000
_LOG_TINY = -708.3964185322641  # log of the smallest normal float64
_LOG_HUGE = 709.0
_LN2_54 = 54.0 * 0.6931471805599453
_EXP_C = [1.0 / math.factorial(i) for i in range(14)]
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13) = _EXP_C[2:]


@njit(**_F_GEMM)
def _exp(x):
    """``exp`` of a float64 in plain arithmetic, so that loops calling it vectorise.

    Numba calls libm's scalar ``exp`` (no vector math library is assumed), about 3x slower
    than this inside a vectorised loop; the softmax of a 10-class batch of 200 rows makes 2000
    calls per batch. Cody-Waite reduction ``x = k ln 2 + r``, ``|r| <= ln 2 / 2``, the degree-13
    Taylor polynomial of ``e^r`` (truncation 5e-18) and ``2^k`` built from its bits.
    Measured against ``np.exp``: within 2.3e-16 relative for normal results; results below
    the smallest normal (x < -708.4) are rounded twice (still within 1e-9 of them); inf,
    -inf and nan as ``np.exp``.
    """
    xc = min(max(x, -746.0), 710.0)  # beyond: 0 or inf anyway (k stays in range)
    # 2^k must stay a normal number: near the ends, shift by 54 and scale back after
    small = xc < _LOG_TINY
    big = xc > _LOG_HUGE
    xs = xc + _LN2_54 if small else xc
    xs = xs - _LN2_54 if big else xs
    t = xs * _LOG2E + _SHIFTER
    k = t - _SHIFTER
    r = (xs - k * _LN2_HI) - k * _LN2_LO
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    res = p * _bits_f64((_f64_bits(t) - _SHIFTER_BITS + 1023) << 52)
    if small:
        res = res * 5.551115123125783e-17  # 2**-54
    if big:
        res = res * 18014398509481984.0  # 2**54
    return x if x != x else res


@njit(**_F)
def _sigmoid(z):
    """``1 / (1 + e^-z)`` in float64 (as scipy's expit)."""
    return 1.0 / (1.0 + _exp(-np.float64(z)))


@njit(**_F)
def _no_rows(work, cols):
    """An empty (0, cols) matrix of ``work``'s type (for buffers a layer does not have)."""
    return _view(work, 0, 0, cols)


@njit(**_F)
def _dtype_consts(x):
    """Machine epsilon of ``x``'s dtype and the ``exp`` output's upper clip, the largest value
    whose ``exp`` is finite (NumPy's ``finfo(dtype).eps``; ``fastmlp.activations.exp_bounds``:
    ``log(finfo(dtype).max)`` rounded down)."""
    t = x.dtype.type
    if x.itemsize == 4:
        return t(1.1920928955078125e-07), t(88.72283172607422)
    return t(2.220446049250313e-16), t(709.782712893384)


@njit(**_F)
def _exp_floor(x):
    """The ``exp`` output's lower clip, ``log(2 * tiny)``, and the largest finite value, in
    ``x``'s dtype (``fastmlp.activations.exp_bounds``, ``finfo(dtype).max``)."""
    t = x.dtype.type
    if x.itemsize == 4:
        return t(-86.64339447021484), t(3.4028234663852886e+38)
    return t(-707.7032713517042), t(1.7976931348623157e+308)


@njit(**_F)
def _exp_arg(z, bottom, top):
    """``z`` clipped to ``[bottom, top]`` for the ``exp`` output; NaN stays NaN (``min`` and
    ``max`` would turn it into a bound, and ``forward`` could not report it)."""
    if z > top:
        return top
    if z < bottom:
        return bottom
    return z


# ---------------------------------------------------------------------- matrix products
@njit(**_F)
def _serial_rows(m, nk, serial):
    """Rows per block when a product with ``m`` rows and ``n * k == nk`` must stay on the
    calling thread (``serial``): equal blocks of at most :data:`SERIAL_MNK` multiply-adds,
    or 0 when the product is not split (not serial, small enough already, or blocks would
    have fewer than :data:`SERIAL_MIN_ROWS` rows)."""
    if not serial or m * nk <= SERIAL_MNK or nk * SERIAL_MIN_ROWS > SERIAL_MNK:
        return 0
    mb = SERIAL_MNK // nk
    n_blocks = (m + mb - 1) // mb
    return (m + n_blocks - 1) // n_blocks


@njit(**_F_GEMM)
def _mm_nn(A, B, C, serial):
    """``C = A @ B``; A (m, k), B (k, n), C (m, n), all C-contiguous. With ``serial`` a
    large product runs as blocks of rows that BLAS keeps on this thread."""
    m, k = A.shape
    n = B.shape[1]
    # (2 to 4 rows: OpenBLAS's small-m path costs 2-3x the loop, measured up to 64 x 64
    # weights; one row goes to its matrix-vector path, as fast as the loop)
    if m * k * n > SMALL_GEMM and not (1 < m <= 4 and k * n <= 4096):
        mb = _serial_rows(m, k * n, serial)
        if mb == 0:
            np.dot(A, B, C)
        else:
            for i0 in range(0, m, mb):
                i1 = min(i0 + mb, m)
                np.dot(A[i0:i1], B, C[i0:i1])
        return
    zero = C.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            C[i, j] = zero
        for p in range(k):
            a = A[i, p]
            for j in range(n):
                C[i, j] += a * B[p, j]


@njit(**_F_GEMM)
def _mm_tn(A, B, C, serial, scratch):
    """``C = A.T @ B``; A (m, k), B (m, n), C (k, n). With ``serial`` a large product runs
    as blocks of the m rows that BLAS keeps on this thread, summed through ``scratch``
    (1-d, used when it holds ``k * n`` elements; otherwise the product is not split)."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n > SMALL_GEMM and k > 2:
        # (k <= 2: the gradient of a layer with one or two inputs; the loop wins, measured)
        mb = _serial_rows(m, k * n, serial)
        if mb == 0 or scratch.shape[0] < k * n:
            np.dot(A.T, B, C)
            return
        np.dot(A[:mb].T, B[:mb], C)
        T = _view(scratch, 0, k, n)
        for i0 in range(mb, m, mb):
            i1 = min(i0 + mb, m)
            np.dot(A[i0:i1].T, B[i0:i1], T)
            for p in range(k):
                for j in range(n):
                    C[p, j] += T[p, j]
        return
    zero = C.dtype.type(0.0)
    for p in range(k):
        for j in range(n):
            C[p, j] = zero
    for i in range(m):
        for p in range(k):
            a = A[i, p]
            for j in range(n):
                C[p, j] += a * B[i, j]


@njit(**_F_GEMM_SUM)
def _mm_nt(A, B, C, serial):
    """``C = A @ B.T``; A (m, n), B (k, n), C (m, k). With ``serial`` a large product runs
    as blocks of rows that BLAS keeps on this thread."""
    m, n = A.shape
    k = B.shape[0]
    if n == 1:
        # an outer product (the delta of a one-output layer): no reduction, a plain loop
        # beats BLAS at every size we met
        for i in range(m):
            a = A[i, 0]
            for p in range(k):
                C[i, p] = a * B[p, 0]
        return
    if m * k * n > SMALL_GEMM:
        mb = _serial_rows(m, k * n, serial)
        if mb == 0:
            np.dot(A, B.T, C)
        else:
            for i0 in range(0, m, mb):
                i1 = min(i0 + mb, m)
                np.dot(A[i0:i1], B.T, C[i0:i1])
        return
    for i in range(m):
        for p in range(k):
            s = C.dtype.type(0.0)
            for j in range(n):
                s += A[i, j] * B[p, j]
            C[i, p] = s


# -------------------------------------------------------------------------------- RNG
@njit(**_F)
def _splitmix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@njit(**_F)
def _rrelu_key(seed, step, layer):
    k_batch = _splitmix64(np.uint64(seed) ^ _splitmix64(np.uint64(step)))
    return _splitmix64(k_batch ^ np.uint64(layer))


@njit(**_F)
def _uniform(key, counter):
    """The contract's uniform number in [0, 1) for one (row * FAN_OUT + unit) counter."""
    return np.float64(_splitmix64(key ^ np.uint64(counter)) >> _U11) * _TWO_M53


@njit([void(int64, int64, int64, float64[:, ::1])], **_F)
def rrelu_uniform_kernel(seed, step, layer, out):
    """RReLU's uniform numbers for weight layer ``layer`` of mini-batch ``step``.

    Parameters
    ----------
    seed, step, layer : int
    out : float64 array of shape (n_rows, n_units), written
        ``out[row, unit]`` receives the number of that row and unit (the same as
        :func:`fastmlp.activations.rrelu_uniform`).
    """
    key = _rrelu_key(seed, step, layer)
    n_rows, n_units = out.shape
    for i in range(n_rows):
        for j in range(n_units):
            out[i, j] = _uniform(key, i * n_units + j)


# ------------------------------------------------------------------------ activations
@njit(**_F)
def _hidden_forward(code, p0, p1, Z, A, b, slopes, R, k, training, key, row0):
    """Bias and activation of a hidden layer, one pass.

    ``Z`` (rows, n_pre) holds ``A_prev @ W`` on entry. For codes 0..3 (derivative from the
    output) ``Z`` receives ``f(z)`` in place and ``A`` is not used (the caller's ``A`` is
    ``Z``'s memory); for the others ``Z`` receives ``z = A_prev @ W + b`` (kept for the
    derivative) and ``A`` (rows, fan_out) ``f(z)``. ``slopes``: PReLU slopes; ``R``: RReLU
    slopes, written in training; ``k``: maxout pieces; ``key``: the layer's RReLU key;
    ``row0``: the batch row of ``Z``'s first row (nonzero for the second half of a split
    batch: RReLU's slope counter is ``(row0 + i) * n_units + j``).

    In-place loops read and write the *same* array variable: LLVM then sees one base pointer
    and vectorises; two views of the same memory would fail its runtime overlap check and
    run the scalar fallback (measured 10x slower).
    """
    rows, n = Z.shape
    t = Z.dtype.type
    zero = t(0.0)
    one = t(1.0)
    if code == IDENTITY:
        for i in range(rows):
            for j in range(n):
                Z[i, j] = Z[i, j] + b[j]
    elif code == LOGISTIC:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = _sigmoid(z)
    elif code == TANH:
        for i in range(rows):
            for j in range(n):
                Z[i, j] = np.tanh(Z[i, j] + b[j])
    elif code == RELU:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = zero if z <= zero else z  # nan stays nan, as np.maximum
    elif code == LEAKY_RELU:
        s = t(p0)
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = z if z > zero else z * s
    elif code == PRELU:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = z if z > zero else z * slopes[j]
    elif code == RRELU:
        if training:
            lower = p0
            width = p1 - p0
            for i in range(rows):
                for j in range(n):
                    r = t(lower + width * _uniform(key, (row0 + i) * n + j))
                    R[i, j] = r
                    z = Z[i, j] + b[j]
                    Z[i, j] = z
                    A[i, j] = z if z >= zero else z * r
        else:
            r = t((p0 + p1) / 2.0)
            for i in range(rows):
                for j in range(n):
                    z = Z[i, j] + b[j]
                    Z[i, j] = z
                    A[i, j] = z if z >= zero else z * r
    elif code == ELU:
        al = t(p0)
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = z if z > zero else al * np.expm1(z)
    elif code == SELU:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = SELU_LAMBDA * (z if z > zero else SELU_ALPHA * np.expm1(z))
    elif code == SOFTPLUS:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                # max(z, 0) + log1p(e^-|z|): no overflow for any z
                A[i, j] = max(z, zero) + np.log1p(np.exp(-abs(z)))
    elif code == SWISH:
        beta = t(p0)
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = z * _sigmoid(beta * z)
    elif code == GELU:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = 0.5 * z * (1.0 + math.erf(z * _INV_SQRT_2))
    elif code == GELU_TANH:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                zc = min(max(z, -20.0), 20.0)  # tanh saturates well inside this range
                th = np.tanh(_SQRT_2_OVER_PI * (zc + _GELU_C * zc * zc * zc))
                A[i, j] = 0.5 * z * (1.0 + th)
    elif code == HARD_SIGMOID:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = min(max(0.25 * z + 0.5, 0.0), 1.0)
    elif code == HARD_TANH:
        for i in range(rows):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                A[i, j] = min(max(z, -1.0), 1.0)
    elif code == MAXOUT:
        units = A.shape[1]
        for i in range(rows):
            for j in range(n):
                Z[i, j] += b[j]
            for u in range(units):
                m = Z[i, u * k]
                for p in range(1, k):
                    v = Z[i, u * k + p]
                    if v > m:
                        m = v
                A[i, u] = m


@njit(**_F)
def _hidden_backward(code, p0, T, Z, A, gb, slopes, gs, R, k):
    """Delta of a hidden layer, its bias gradient and PReLU slope gradient, one pass.

    ``T`` (rows, fan_out): dL/dA (``delta_next @ W_next.T``). ``Z`` (rows, n_pre): the
    layer's ``f(z)`` for codes 0..3, its ``z`` for the others (``A`` is then ``f(z)``); on
    return ``Z`` holds the delta ``dL/dz = T * f'(z)`` (each element is read before it is
    written, in the same array variable so that the loops vectorise).
    ``gb`` (n_pre,) += column sums of ``D``; ``gs`` (fan_out,) += PReLU slope gradients
    ``sum_i T_ij min(z_ij, 0)``. Unscaled (the caller divides by the sum of weights).
    """
    rows, fo = T.shape
    t = Z.dtype.type
    zero = t(0.0)
    one = t(1.0)
    if code == IDENTITY:
        for i in range(rows):
            for j in range(fo):
                d = T[i, j]
                Z[i, j] = d
                gb[j] += d
    elif code == LOGISTIC:
        for i in range(rows):
            for j in range(fo):
                a = Z[i, j]
                d = (T[i, j] * a) * (one - a)  # scikit-learn's order
                Z[i, j] = d
                gb[j] += d
    elif code == TANH:
        for i in range(rows):
            for j in range(fo):
                a = Z[i, j]
                d = T[i, j] * (one - a * a)
                Z[i, j] = d
                gb[j] += d
    elif code == RELU:
        for i in range(rows):
            for j in range(fo):
                d = zero if Z[i, j] == zero else T[i, j]
                Z[i, j] = d
                gb[j] += d
    elif code == LEAKY_RELU:
        s = t(p0)
        for i in range(rows):
            for j in range(fo):
                d = T[i, j] if Z[i, j] > zero else T[i, j] * s
                Z[i, j] = d
                gb[j] += d
    elif code == PRELU:
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                tij = T[i, j]
                gs[j] += tij * min(z, zero)
                d = tij if z > zero else tij * slopes[j]
                Z[i, j] = d
                gb[j] += d
    elif code == RRELU:
        for i in range(rows):
            for j in range(fo):
                d = T[i, j] if Z[i, j] >= zero else T[i, j] * R[i, j]
                Z[i, j] = d
                gb[j] += d
    elif code == ELU:
        al = t(p0)
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                d = T[i, j] if z > zero else T[i, j] * (al * _exp(np.float64(z)))
                Z[i, j] = d
                gb[j] += d
    elif code == SELU:
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                if z > zero:
                    d = T[i, j] * SELU_LAMBDA
                else:
                    d = T[i, j] * (SELU_LAMBDA * SELU_ALPHA * _exp(np.float64(z)))
                Z[i, j] = d
                gb[j] += d
    elif code == SOFTPLUS:
        for i in range(rows):
            for j in range(fo):
                d = T[i, j] * _sigmoid(Z[i, j])
                Z[i, j] = d
                gb[j] += d
    elif code == SWISH:
        beta = t(p0)
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                s = _sigmoid(beta * z)
                d = T[i, j] * (s * (1.0 + beta * z * (1.0 - s)))
                Z[i, j] = d
                gb[j] += d
    elif code == GELU:
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                zc = min(max(z, -40.0), 40.0)  # phi(z) underflows long before; no overflow
                dz = 0.5 * (1.0 + math.erf(z * _INV_SQRT_2)) + zc * _INV_SQRT_2PI * np.exp(
                    -0.5 * zc * zc
                )
                d = T[i, j] * dz
                Z[i, j] = d
                gb[j] += d
    elif code == GELU_TANH:
        for i in range(rows):
            for j in range(fo):
                zc = min(max(Z[i, j], -20.0), 20.0)
                th = np.tanh(_SQRT_2_OVER_PI * (zc + _GELU_C * zc * zc * zc))
                du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * zc * zc)
                d = T[i, j] * (0.5 * (1.0 + th) + 0.5 * zc * (1.0 - th * th) * du)
                Z[i, j] = d
                gb[j] += d
    elif code == HARD_SIGMOID:
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                d = T[i, j] * (0.25 if (z > -2.0 and z < 2.0) else 0.0)
                Z[i, j] = d
                gb[j] += d
    elif code == HARD_TANH:
        for i in range(rows):
            for j in range(fo):
                z = Z[i, j]
                d = T[i, j] * (1.0 if (z > -1.0 and z < 1.0) else 0.0)
                Z[i, j] = d
                gb[j] += d
    elif code == MAXOUT:
        # route each unit's delta to its first maximal piece (np.argmax's choice)
        for i in range(rows):
            for u in range(fo):
                base = u * k
                best = 0
                m = Z[i, base]
                for p in range(1, k):
                    if Z[i, base + p] > m:
                        m = Z[i, base + p]
                        best = p
                for p in range(k):
                    d = T[i, u] if p == best else zero
                    Z[i, base + p] = d
                    gb[base + p] += d


# ------------------------------------------------------------------------------ output
@njit(**_F)
def _xlogy(x, y):
    """``x log y`` with ``0 log y = 0`` (scipy's xlogy), in float64."""
    if x == 0:
        return 0.0
    return np.float64(x) * math.log(np.float64(y))


@njit(**_F)
def _output_loss(loss_code, Z, b, Y, order, start, use_order, sw, has_sw, gb, eps, top):
    """Output activation, loss and output delta, one pass per row.

    ``Z`` (rows, n_out) holds ``A_prev @ W`` on entry and the delta ``(p - y) * w`` on return.
    Row ``i`` of the batch is row ``order[start + i]`` of ``Y`` and ``sw`` (``start + i`` if
    not ``use_order``). ``gb`` (n_out,) += column sums of the delta. Returns
    ``sum_i w_i l_i`` (float64), to be divided by the sum of weights (and by ``n_out`` for the
    squared error).
    """
    rows, n = Z.shape
    t = Z.dtype.type
    one = t(1.0)
    hi = one - eps
    bottom, fmax = _exp_floor(Z)
    total = 0.0
    for i in range(rows):
        r = order[start + i] if use_order else start + i
        w = sw[r] if has_sw else one
        li = 0.0
        if loss_code == SQUARED_ERROR:
            for j in range(n):
                e = (Z[i, j] + b[j]) - Y[r, j]
                li += np.float64(e) * np.float64(e)
                d = e * w if has_sw else e
                Z[i, j] = d
                gb[j] += d
        elif loss_code == POISSON:
            for j in range(n):
                p = t(_exp(np.float64(_exp_arg(Z[i, j] + b[j], bottom, top))))
                y = Y[r, j]
                # y log(y / p); where y / p overflows (p near the smallest normal number),
                # y (log y - log p) (losses.poisson)
                ratio = y / p
                if ratio <= fmax:
                    log_term = _xlogy(y, ratio)
                else:
                    log_term = np.float64(y) * (math.log(np.float64(y))
                                                - math.log(np.float64(p)))
                li += log_term - y + p
                d = (p - y) * w if has_sw else p - y
                Z[i, j] = d
                gb[j] += d
        elif loss_code == BINARY_LOG_LOSS:
            for j in range(n):
                p = t(_sigmoid(Z[i, j] + b[j]))
                y = Y[r, j]
                pc = min(max(p, eps), hi)
                li -= _xlogy(y, pc) + _xlogy(one - y, one - pc)
                d = (p - y) * w if has_sw else p - y
                Z[i, j] = d
                gb[j] += d
        else:  # LOG_LOSS, softmax (scikit-learn's order: subtract the max, exp, divide)
            m = Z[i, 0] + b[0]
            for j in range(1, n):
                m = max(m, Z[i, j] + b[j])
            for j in range(n):  # no reduction in this loop, so it vectorises
                Z[i, j] = t(_exp(np.float64((Z[i, j] + b[j]) - m)))
            s = t(0.0)
            for j in range(n):
                s += Z[i, j]
            for j in range(n):
                p = Z[i, j] / s
                y = Y[r, j]
                li -= _xlogy(y, min(max(p, eps), hi))
                d = (p - y) * w if has_sw else p - y
                Z[i, j] = d
                gb[j] += d
        total += np.float64(w) * li
    return total


@njit(**_F)
def _output_forward(code, Z, b, apply_output, top):
    """Prediction: ``Z`` (rows, n_out) += b, then the output activation unless not
    ``apply_output`` (logits)."""
    rows, n = Z.shape
    t = Z.dtype.type
    one = t(1.0)
    for i in range(rows):
        for j in range(n):
            Z[i, j] += b[j]
    if not apply_output or code == IDENTITY:
        return
    if code == LOGISTIC:
        for i in range(rows):
            for j in range(n):
                Z[i, j] = _sigmoid(Z[i, j])
    elif code == EXP:
        bottom = _exp_floor(Z)[0]
        for i in range(rows):
            for j in range(n):
                Z[i, j] = _exp(np.float64(_exp_arg(Z[i, j], bottom, top)))
    elif code == SOFTMAX:
        for i in range(rows):
            m = Z[i, 0]
            for j in range(1, n):
                m = max(m, Z[i, j])
            for j in range(n):
                Z[i, j] = t(_exp(np.float64(Z[i, j] - m)))
            s = t(0.0)
            for j in range(n):
                s += Z[i, j]
            for j in range(n):
                Z[i, j] = Z[i, j] / s


# ------------------------------------------------------------------- one batch, both ways
@njit(**_F)
def _forward_backward(theta, grad, layout, act_params, rows, Y, order, start, use_order, sw,
                      has_sw, loss_code, seed, step, work, offs, eps, top, serial, row0):
    """Forward, loss and backward for the ``rows`` rows already gathered in ``XB``.

    Writes the *unscaled* gradient into ``grad``: ``A^T delta`` for the weights (no L2 term),
    column sums of delta for the intercepts, PReLU slope sums; the caller adds the L2 term
    and divides by the sum of weights. Returns ``sum_i w_i l_i`` (see :func:`_output_loss`).
    ``serial`` (``counters[SERIAL]``) keeps every matrix product on this thread.
    """
    L = layout.shape[0]
    last = L - 1
    xb = _view(work, offs[L, 0], rows, layout[0, FAN_IN])
    data = 0.0
    # ---- forward
    for l in range(L):
        fi, fo, npre = layout[l, FAN_IN], layout[l, FAN_OUT], layout[l, N_PRE]
        c, io = layout[l, COEF_OFF], layout[l, INTER_OFF]
        W = _view(theta, c, fi, npre)
        b = _span(theta, io, io + npre)
        Z = _view(work, offs[l, P_Z], rows, npre)
        if l == 0:
            _mm_nn(xb, W, Z, serial)
        else:
            _mm_nn(_view(work, offs[l - 1, P_A], rows, fi), W, Z, serial)
        code = layout[l, ACT]
        if l < last:
            so = layout[l, SLOPE_OFF]
            slopes = _span(theta, so, so + fo) if so >= 0 else _span(theta, 0, 0)
            ro = offs[l, P_R]
            R = _view(work, ro, rows, fo) if ro >= 0 else _no_rows(work, fo)
            key = _rrelu_key(seed, step, l) if code == RRELU else np.uint64(0)
            A = _view(work, offs[l, P_A], rows, fo)
            _hidden_forward(code, act_params[l, 0], act_params[l, 1], Z, A, b, slopes, R,
                            layout[l, K], _unlit(True), key, row0)
        else:
            gb = _span(grad, io, io + npre)
            gb[:] = 0.0
            data = _output_loss(loss_code, Z, b, Y, order, start, use_order, sw, has_sw, gb,
                                eps, top)
    # ---- backward: the delta of layer l lives in Z_l's memory; T (free while the weight
    # gradient is computed) is the scratch of a split product
    scratch = _span(work, offs[L, 1], offs[0, P_Z])
    for l in range(last, -1, -1):
        fi, npre = layout[l, FAN_IN], layout[l, N_PRE]
        c = layout[l, COEF_OFF]
        D = _view(work, offs[l, P_Z], rows, npre)
        gW = _view(grad, c, fi, npre)
        if l == 0:
            _mm_tn(xb, D, gW, serial, scratch)
            break
        _mm_tn(_view(work, offs[l - 1, P_A], rows, fi), D, gW, serial, scratch)
        # previous layer: T = D W^T, then its delta
        pf, pn = layout[l - 1, FAN_OUT], layout[l - 1, N_PRE]
        T = _view(work, offs[L, 1], rows, pf)
        _mm_nt(D, _view(theta, c, fi, npre), T, serial)
        pio, pso = layout[l - 1, INTER_OFF], layout[l - 1, SLOPE_OFF]
        gb = _span(grad, pio, pio + pn)
        gb[:] = 0.0
        if pso >= 0:
            slopes = _span(theta, pso, pso + pf)
            gs = _span(grad, pso, pso + pf)
            gs[:] = 0.0
        else:
            slopes = _span(theta, 0, 0)
            gs = _span(grad, 0, 0)
        ro = offs[l - 1, P_R]
        R = _view(work, ro, rows, pf) if ro >= 0 else _no_rows(work, pf)
        Zp = _view(work, offs[l - 1, P_Z], rows, pn)
        Ap = _view(work, offs[l - 1, P_A], rows, pf)
        _hidden_backward(layout[l - 1, ACT], act_params[l - 1, 0], T, Zp, Ap, gb, slopes, gs,
                         R, layout[l - 1, K])
    return data


@njit(**_F)
def _data_loss(total, loss_code, S, n_out):
    """The sample-weighted average loss from ``sum_i w_i l_i``."""
    if loss_code == SQUARED_ERROR:
        return 0.5 * total / S / n_out
    return total / S


@njit(**_F)
def _gather(X, order, start, rows, use_order, xb):
    n_in = X.shape[1]
    for i in range(rows):
        r = order[start + i] if use_order else start + i
        for j in range(n_in):
            xb[i, j] = X[r, j]


@njit(**_F)
def _weight_sum(sw, has_sw, order, start, rows, use_order):
    if not has_sw:
        return np.float64(rows)
    S = 0.0
    for i in range(rows):
        S += sw[order[start + i] if use_order else start + i]
    return S


@njit(**_F)
def _batch_part(theta, grad, layout, act_params, X, Y, order, first, rows, use_order, sw,
                has_sw, loss_code, seed, step, work, offs, eps, top, serial, row0):
    """Gather ``rows`` rows from ``first`` (through ``order`` if ``use_order``) into the
    plan ``offs`` of ``work``, then forward, loss and backward into ``grad``. Returns
    ``(sum_i w_i l_i, sum_i w_i)``: a whole batch (``row0`` 0), one half of a split batch
    (``row0``: the half's first row in the batch), or the full batch of
    :func:`loss_grad_kernel`."""
    _gather(X, order, first, rows, use_order,
            _view(work, offs[layout.shape[0], 0], rows, X.shape[1]))
    total = _forward_backward(theta, grad, layout, act_params, rows, Y, order, first,
                              use_order, sw, has_sw, loss_code, seed, step, work, offs, eps,
                              top, serial, row0)
    return total, _weight_sum(sw, has_sw, order, first, rows, use_order)


# --------------------------------------------------------------------------- optimizer
# Every loop below runs over slices from index 0: with a start offset that Numba cannot prove
# non-negative, each access keeps its negative-index wraparound check and LLVM does not
# vectorise the loop (measured: 4x slower Adam). The sum of squares of the weights (this
# batch's L2 term, read in the same pass) accumulates in the parameters' dtype within blocks
# of _OPT_BLOCK entries and in float64 across blocks: a float64 accumulator inside the loop
# makes the float32 loop mixed-width and scalar (measured 1.7x slower), a float32 one over a
# million weights would lose digits.
_OPT_BLOCK = 2048


@njit(**_F)
def _sgd_entry(w, g0, vi, a, s, eta, mu, nesterov):
    """One entry of the SGD step: the new ``(theta_i, vel_i)``."""
    g = (g0 + a * w) * s
    v = mu * vi - eta * g
    if nesterov:
        return w + (mu * v - eta * g), v
    return w + v, v


@njit(**_F_SUM)
def _sgd_block(theta, grad, vel, a, s, eta, mu, nesterov):
    ss = theta.dtype.type(0.0)
    if nesterov:
        for i in range(theta.shape[0]):
            w = theta[i]
            ss += w * w
            theta[i], vel[i] = _sgd_entry(w, grad[i], vel[i], a, s, eta, mu, True)
    else:
        for i in range(theta.shape[0]):
            w = theta[i]
            ss += w * w
            theta[i], vel[i] = _sgd_entry(w, grad[i], vel[i], a, s, eta, mu, False)
    return ss


@njit(**_F)
def _sgd_range(theta, grad, vel, alpha, inv_s, lr, mom, nesterov):
    """SGD on the slices ``theta``, ``vel`` with the gradient ``(grad + alpha theta) * inv_s``
    formed on the fly (scikit-learn's order of operations); returns ``sum theta^2`` before the
    step (this batch's L2 term)."""
    t = theta.dtype.type
    a, s, eta, mu = t(alpha), t(inv_s), t(lr), t(mom)
    n = theta.shape[0]
    ss = 0.0
    for lo in range(0, n, _OPT_BLOCK):
        hi = min(lo + _OPT_BLOCK, n)
        ss += np.float64(_sgd_block(_span(theta, lo, hi), _span(grad, lo, hi),
                                    _span(vel, lo, hi), a, s, eta, mu, nesterov))
    return ss


@njit(**_F)
def _adam_entry(w, g0, mi, vi, a, s, c1, d1, c2, d2, neg_lr, ep):
    """One entry of the Adam step: the new ``(theta_i, m_i, v_i)``."""
    g = (g0 + a * w) * s
    mi = mi * c1 + g * d1
    vi = vi * c2 + (g * g) * d2
    return w + (mi * neg_lr) / (_sqrt(vi) + ep), mi, vi


@njit(**_F)
def _add(x, y):
    """``x + y`` in IEEE arithmetic inside a loop of ``_F_SUM`` (inlined, it keeps its own
    flags: none)."""
    return x + y


@njit(**_F_SUM)
def _adam_block(theta, grad, m, v, a, s, c1, d1, c2, d2, neg_lr, ep):
    ss = theta.dtype.type(0.0)
    for i in range(theta.shape[0]):
        w = theta[i]
        ss += w * w
        theta[i], m[i], v[i] = _adam_entry(w, grad[i], m[i], v[i], a, s, c1, d1, c2, d2,
                                           neg_lr, ep)
    return ss


@njit(**_F_SUM)
def _adam_block_sum(theta, grad, grad1, m, v, a, s, c1, d1, c2, d2, neg_lr, ep):
    """:func:`_adam_block` on the gradient ``grad + grad1`` (a split batch's halves), which
    it leaves in ``grad``: the sum costs no pass of its own."""
    ss = theta.dtype.type(0.0)
    for i in range(theta.shape[0]):
        w = theta[i]
        ss += w * w
        g0 = _add(grad[i], grad1[i])
        grad[i] = g0
        theta[i], m[i], v[i] = _adam_entry(w, g0, m[i], v[i], a, s, c1, d1, c2, d2,
                                           neg_lr, ep)
    return ss


@njit(**_F)
def _adam_part(theta, grad, grad1, summed, m, v, lo, hi, alpha, inv_s, lr_t, b1, b2, eps):
    """Adam on ``[lo, hi)`` of the slices, in blocks of ``_OPT_BLOCK`` from ``lo``
    (scikit-learn's order of operations), the gradient formed on the fly as in
    :func:`_sgd_range` (from ``grad + grad1`` when ``summed``); returns ``sum theta^2`` of the
    range before the step."""
    t = theta.dtype.type
    a, s = t(alpha), t(inv_s)
    c1, d1 = t(b1), t(1.0 - b1)
    c2, d2 = t(b2), t(1.0 - b2)
    neg_lr, ep = t(-lr_t), t(eps)
    ss = 0.0
    for b0 in range(lo, hi, _OPT_BLOCK):
        b1_ = min(b0 + _OPT_BLOCK, hi)
        if summed:
            ss += np.float64(_adam_block_sum(
                _span(theta, b0, b1_), _span(grad, b0, b1_), _span(grad1, b0, b1_),
                _span(m, b0, b1_), _span(v, b0, b1_), a, s, c1, d1, c2, d2, neg_lr, ep))
        else:
            ss += np.float64(_adam_block(
                _span(theta, b0, b1_), _span(grad, b0, b1_), _span(m, b0, b1_),
                _span(v, b0, b1_), a, s, c1, d1, c2, d2, neg_lr, ep))
    return ss


@njit(**_F)
def _adam_span(theta, grad, grad1, summed, opt_state, lo, hi, n_coef, inv_s, hyper, lr_t):
    """The Adam step on the entries ``[lo, hi)``: the weights' (``< n_coef``) with the L2
    term, the rest without; returns the weights' ``sum theta^2`` in the range."""
    m, v = _row(opt_state, 0), _row(opt_state, 1)
    b1, b2, eps, alpha = hyper[BETA_1], hyper[BETA_2], hyper[EPSILON], hyper[ALPHA]
    top = min(hi, n_coef)
    ss = 0.0
    if lo < top:
        ss = _adam_part(theta, grad, grad1, summed, m, v, lo, top, alpha, inv_s, lr_t, b1,
                        b2, eps)
    rest = max(lo, n_coef)
    if rest < hi:
        _adam_part(theta, grad, grad1, summed, m, v, rest, hi, 0.0, inv_s, lr_t, b1, b2, eps)
    return ss


@njit(**_F)
def _adam_rate(hyper, counters):
    """Count the step (``counters[ADAM_T]``) and return its bias-corrected rate."""
    counters[ADAM_T] += 1
    step = counters[ADAM_T]
    b1, b2 = hyper[BETA_1], hyper[BETA_2]
    return hyper[LR] * math.sqrt(1.0 - b2**step) / (1.0 - b1**step)


@njit(**_F)
def opt_split(n_params):
    """Where the Adam step splits the flat vectors into two ranges (0: it does not): half-way,
    on an ``_OPT_BLOCK`` boundary, from :data:`OPT_PAR_MIN` parameters. The ranges are the
    same whether one thread or two runs them, and ``||W||^2`` is the sum of their two parts
    in that order, so the numbers do not depend on the threads."""
    if n_params < OPT_PAR_MIN:
        return 0
    return (n_params // 2 // _OPT_BLOCK) * _OPT_BLOCK


@njit(**_F)
def _optimizer_step(theta, grad, grad1, summed, opt_state, n_coef, inv_s, hyper, counters):
    """The L2 term, the 1/sum(w) scaling and the SGD or Adam step: one pass over ``theta``.

    The weights (``theta[:n_coef]``) get the L2 term, the rest does not. With ``summed`` the
    gradient is ``grad + grad1`` (a split batch's halves): Adam sums them as it reads them,
    SGD in a pass of its own first (the same IEEE sums either way). Returns
    ``sum ||W_l||^2`` of the weights before the step."""
    alpha = hyper[ALPHA]
    n = theta.shape[0]
    if counters[SOLVER] == SGD:
        if summed:
            for i in range(n):
                grad[i] += grad1[i]
        lr, mom, nesterov = hyper[LR], hyper[MOMENTUM], counters[NESTEROV] != 0
        vel = _row(opt_state, 0)
        ss = _sgd_range(_span(theta, 0, n_coef), _span(grad, 0, n_coef),
                        _span(vel, 0, n_coef), alpha, inv_s, lr, mom, nesterov)
        _sgd_range(_span(theta, n_coef, n), _span(grad, n_coef, n), _span(vel, n_coef, n), 0.0,
                   inv_s, lr, mom, nesterov)
    else:
        lr_t = _adam_rate(hyper, counters)
        ss = _adam_span(theta, grad, grad1, summed, opt_state, 0, n, n_coef, inv_s, hyper,
                        lr_t)
    return ss


@njit(**_F_SUM)
def _sum_squares(x):
    ss = 0.0
    for i in range(x.shape[0]):
        ss += np.float64(x[i]) * np.float64(x[i])
    return ss


# ------------------------------------------------------------------------ entry points
@njit(**_F)
def _validate(layout, act_params, n_params, n_in, n_out, n_work, n_rows):
    """Check that the arrays fit the layout before any unchecked access.

    The kernels index without bounds checks and build views with :func:`_view`, so a layout
    that does not match ``theta``, ``X``, ``Y`` or ``work`` would read or write out of
    bounds; this raises ``ValueError`` instead. Returns the plan (offsets into ``work``).
    """
    L = layout.shape[0]
    if L < 1 or layout.shape[1] < 8 or act_params.shape[0] != L or act_params.shape[1] < 2:
        raise ValueError("layout must have shape (n_layers - 1, 8) and act_params "
                         "(n_layers - 1, 2)")
    for l in range(L):
        fi, fo, npre, k = layout[l, FAN_IN], layout[l, FAN_OUT], layout[l, N_PRE], layout[l, K]
        if fi < 1 or fo < 1 or k < 1 or npre != fo * k or (l > 0 and fi != layout[l - 1, FAN_OUT]):
            raise ValueError("inconsistent layer sizes in layout")
        c, io, so = layout[l, COEF_OFF], layout[l, INTER_OFF], layout[l, SLOPE_OFF]
        if c < 0 or c + fi * npre > n_params or io < 0 or io + npre > n_params:
            raise ValueError("layout offsets point outside theta")
        if so >= 0 and so + fo > n_params:
            raise ValueError("layout offsets point outside theta")
        if layout[l, ACT] == PRELU and so < 0:
            raise ValueError("a prelu layer needs its slopes in theta (SLOPE_OFF)")
    if layout[0, INTER_OFF] < 0 or layout[0, INTER_OFF] > n_params:
        raise ValueError("layout offsets point outside theta")
    if layout[0, FAN_IN] != n_in:
        raise ValueError("X does not have layout[0, FAN_IN] columns")
    if layout[L - 1, FAN_OUT] != n_out:
        raise ValueError("Y or out does not have layout[-1, FAN_OUT] columns")
    if n_rows < 1:
        raise ValueError("batch_size, chunk_rows and the number of rows must be at least 1")
    offs = np.empty((L + 1, 3), np.int64)  # once per call, not per batch
    plan(layout, n_rows, offs)
    if work_size(layout, n_rows) > n_work:
        raise ValueError("work is smaller than workspace_size(layout, n_rows)")
    return offs


@njit(**_F)
def _check_serial(serial):
    """Raise unless ``serial`` (``counters[SERIAL]``) is one of the three modes."""
    if serial < 0 or serial > 2:
        raise ValueError("counters[SERIAL] must be 0 (the fit runs alone), 1 (fits "
                         "overlap) or 2 (alone, BLAS held at one thread)")


def _train_sig(dt):
    return float64(dt[::1], dt[::1], dt[:, ::1], _I2RO, _F2RO, _ro(dt, 2), _ro(dt, 2),
                   _ro(dt, 1), boolean, _I1, int64, _F1RO, _I1, dt[::1])


def _train_epoch(theta, grad, opt_state, layout, act_params, X, Y, sw, has_sw, order,
                 batch_size, hyper, counters, work):
    """One epoch of mini-batch training (``train_epoch`` of the contract).

    Parameters
    ----------
    theta : D array of shape (n_params,), read and written
    grad : D array of shape (n_params,), scratch
        On return it holds the last batch's *unscaled* data gradient (no L2 term, not divided
        by the sum of weights): the scaling is fused into the optimizer pass.
    opt_state : D array of shape (2, n_params), read and written
    layout : int64 array of shape (L, 8); act_params : float64 array of shape (L, 2)
    X : D array of shape (n_samples, n_in); Y : D array of shape (n_samples, n_out)
    sw : D array of shape (n_samples,), read only if ``has_sw``
    has_sw : bool
    order : int64 array of shape (n_batch_rows,)
        Rows of this epoch, in order; batches are consecutive slices of ``batch_size``.
    batch_size : int
    hyper : float64 array of shape (6,); counters : int64 array of shape (7,), ADAM_T and
        STEP updated
    work : D array of at least ``work_size(layout, batch_size)`` elements, scratch

    Returns
    -------
    float
        Sum over batches of the batch loss (L2 term included) times the batch's rows.

    D is float32 or float64 (the same for every D array). Unless :func:`split_kind`
    says ``SPLIT_NONE``, each batch of at least ``SPLIT_MIN_ROWS`` rows is computed as two
    halves, each with its own plan in ``work`` and its own gradient (the second after both
    halves), then summed; the products of a half always run as single-threaded blocks
    (``SPLIT_SERIAL``) or always whole (``SPLIT_ONE_BLAS``, in two threads only while the
    caller holds BLAS at one thread: ``counters[SERIAL] == 2``). This function is compiled
    twice:
    :func:`train_epoch_kernel` runs the halves one after the other,
    :func:`train_epoch_parallel_kernel` (``parallel=True``) in two threads. The arithmetic is
    the same, so a fit gives the same numbers whichever runs it.
    """
    L = layout.shape[0]
    n = order.shape[0]
    offs = _validate(layout, act_params, theta.shape[0], X.shape[1], Y.shape[1],
                     work.shape[0], batch_size)
    if grad.shape[0] != theta.shape[0] or opt_state.shape[1] != theta.shape[0]:
        raise ValueError("grad and opt_state must have the length of theta")
    if opt_state.shape[0] < 2 or hyper.shape[0] < 6 or counters.shape[0] != N_COUNTERS:
        raise ValueError("opt_state needs 2 rows, hyper 6 entries and counters 7")
    _check_serial(counters[SERIAL])
    if Y.shape[0] != X.shape[0] or (has_sw and sw.shape[0] != X.shape[0]):
        raise ValueError("X, Y and sample_weight must have the same number of rows")
    for i in range(n):
        if order[i] < 0 or order[i] >= X.shape[0]:
            raise ValueError("order holds a row index outside X")
    eps, top = _dtype_consts(theta)
    n_out = layout[L - 1, FAN_OUT]
    n_params = theta.shape[0]
    n_coef = layout[0, INTER_OFF]  # the weight matrices come first in theta
    loss_code = counters[LOSS]
    seed = counters[SEED]
    alpha = hyper[ALPHA]
    use_order = _unlit(True)
    kind = split_kind(layout, batch_size, theta.itemsize == 4)
    split = kind != SPLIT_NONE
    adam = counters[SOLVER] != SGD
    mid = opt_split(n_params)  # Adam as two ranges (two threads in the parallel kernel)
    # the halves' products: always the single-threaded blocks (SPLIT_SERIAL) or always whole
    # (SPLIT_ONE_BLAS), so every mode gives the same numbers
    serial = kind == SPLIT_SERIAL or (kind == SPLIT_NONE and counters[SERIAL] == 1)
    # the halves' plans and the second gradient (once per call, not per batch)
    offs_h = np.empty((L + 1, 3), np.int64)
    size_h = plan(layout, (batch_size + 1) // 2, offs_h)
    grad1 = work[work.shape[0] - n_params :]
    parts = np.zeros(4)  # per half: sum_i w_i l_i, sum_i w_i
    ss_w = np.zeros(2)  # per range of the Adam step: its weights' sum of squares
    loss_sum = 0.0
    csr = _ftz_enter()  # after every check: nothing below raises
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        if split and rows >= SPLIT_MIN_ROWS:
            c0 = (rows + 1) // 2
            for w in prange(2):
                csr_w = _ftz_enter()  # each thread has its own MXCSR
                parts[w], parts[2 + w] = _batch_part(
                    theta, grad if w == 0 else grad1, layout, act_params, X, Y, order,
                    start + w * c0, c0 if w == 0 else rows - c0, use_order, sw, has_sw,
                    loss_code, seed, counters[STEP], _span(work, w * size_h, (w + 1) * size_h),
                    offs_h, eps, top, serial, w * c0)
                _ftz_exit(csr_w)
            total = parts[0] + parts[1]
            S = parts[2] + parts[3]
            summed = True  # the optimizer sums the halves' gradients
        else:
            summed = False
            total, S = _batch_part(theta, grad, layout, act_params, X, Y, order, start, rows,
                                   use_order, sw, has_sw, loss_code, seed, counters[STEP],
                                   work, offs, eps, top, serial, _unlit(0))
        if adam and mid > 0:
            lr_t = _adam_rate(hyper, counters)
            for w in prange(2):
                csr_w = _ftz_enter()
                ss_w[w] = _adam_span(theta, grad, grad1, summed, opt_state, w * mid,
                                     mid if w == 0 else n_params, n_coef, 1.0 / S, hyper,
                                     lr_t)
                _ftz_exit(csr_w)
            ss = ss_w[0] + ss_w[1]
        else:
            ss = _optimizer_step(theta, grad, grad1, summed, opt_state, n_coef, 1.0 / S, hyper,
                                 counters)
        batch_loss = _data_loss(total, loss_code, S, n_out) + 0.5 * alpha * ss / S
        loss_sum += batch_loss * rows
        counters[STEP] += 1
    _ftz_exit(csr)
    return loss_sum


train_epoch_kernel = PerDtype(_train_epoch, _train_sig, **_F)
"""The epoch with the halves of a split batch run one after the other (see
:func:`_train_epoch`)."""


def _renamed(func, name):
    """A copy of ``func`` called ``name``: Numba names a function's cache entries after its
    qualified name, so the parallel compilation of :func:`_train_epoch` needs its own name
    (under the same one it would load, and overwrite, the serial machine code)."""
    copy = FunctionType(func.__code__, func.__globals__, name, func.__defaults__,
                        func.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = func.__doc__
    return copy


train_epoch_parallel_kernel = PerDtype(_renamed(_train_epoch, "_train_epoch_parallel"),
                                       _train_sig, **_F, parallel=True)
"""The epoch with the halves of a split batch in two threads (``parallel=True``); the
backend calls it only for a split network (:func:`split_kind`; ``SPLIT_ONE_BLAS`` only with
``counters[SERIAL] == 2``) when no other fit runs in the process, with
Numba's thread count for the calling thread set to at most 2."""


def _loss_grad_sig(dt):
    return float64(dt[::1], dt[::1], _I2RO, _F2RO, _ro(dt, 2), _ro(dt, 2), _ro(dt, 1),
                   boolean, float64, _I1, dt[::1])


def _loss_grad(theta, grad, layout, act_params, X, Y, sw, has_sw, alpha, counters,
                     work):
    """Full-batch loss (L2 term included) at ``theta``; the gradient into ``grad``.

    Parameters
    ----------
    theta : D array of shape (n_params,), read
    grad : D array of shape (n_params,), written: the gradient of the returned loss
    layout, act_params, X, Y, sw, has_sw : as in :func:`train_epoch_kernel`
    alpha : float
    counters : int64 array of shape (7,), read (LOSS, SEED, SERIAL, and STEP for RReLU)
    work : D array of at least ``plan(layout, n_samples)`` elements, scratch

    Returns
    -------
    float
    """
    L = layout.shape[0]
    n = X.shape[0]
    offs = _validate(layout, act_params, theta.shape[0], X.shape[1], Y.shape[1],
                     work.shape[0], n)
    if grad.shape[0] != theta.shape[0] or counters.shape[0] != N_COUNTERS:
        raise ValueError("grad must have the length of theta, counters 7 entries")
    _check_serial(counters[SERIAL])
    if Y.shape[0] != n or (has_sw and sw.shape[0] != n):
        raise ValueError("X, Y and sample_weight must have the same number of rows")
    eps, top = _dtype_consts(theta)
    # the rows are copied into XB, so the batch code is compiled once per dtype
    no_order, start, use_order = counters[:0], _unlit(0), _unlit(False)
    loss_code = counters[LOSS]
    csr = _ftz_enter()  # after every check: nothing below raises
    total, S = _batch_part(theta, grad, layout, act_params, X, Y, no_order, start, n,
                           use_order, sw, has_sw, loss_code, counters[SEED], counters[STEP],
                           work, offs, eps, top, counters[SERIAL] == 1, _unlit(0))
    n_coef = layout[0, INTER_OFF]
    t = theta.dtype.type
    a, s = t(alpha), t(S)
    gw, w = grad[:n_coef], theta[:n_coef]
    for i in range(n_coef):
        gw[i] = (gw[i] + a * w[i]) / s
    rest = grad[n_coef:]
    for i in range(rest.shape[0]):
        rest[i] = rest[i] / s
    ss = _sum_squares(theta[:n_coef])
    _ftz_exit(csr)
    return _data_loss(total, loss_code, S, layout[L - 1, FAN_OUT]) + 0.5 * alpha * ss / S


def _forward_sig(dt):
    # theta is declared writable (it always is) so that the activation helpers get the same
    # argument types as in training and are compiled once per dtype
    return int64(dt[::1], _I2RO, _F2RO, _ro(dt, 2), dt[:, ::1], boolean, int64, dt[::1])


@njit(**_F)
def _all_finite(a):
    # x * 0 is 0 for finite x and NaN for +-inf and NaN; four partial sums per row (in
    # float64, which keeps the NaN of a float32 inf)
    z = 0.0
    s0 = s1 = s2 = s3 = z
    for r in range(a.shape[0]):
        row = a[r]
        m = row.shape[0]
        i = 0
        while i + 4 <= m:
            s0 += row[i] * z
            s1 += row[i + 1] * z
            s2 += row[i + 2] * z
            s3 += row[i + 3] * z
            i += 4
        while i < m:
            s0 += row[i] * z
            i += 1
    return (s0 + s1) + (s2 + s3) == z


def _forward(theta, layout, act_params, X, out, apply_output, chunk_rows, work):
    """Prediction, ``chunk_rows`` rows at a time.

    Parameters
    ----------
    theta : D array of shape (n_params,), read (declared writable, never written)
    layout, act_params : as in :func:`train_epoch_kernel`
    X : D array of shape (n_samples, n_in), read
    out : D array of shape (n_samples, n_out), written: the output activations, or the
        logits if not ``apply_output``
    apply_output : bool
    chunk_rows : int
    work : D array of at least ``plan(layout, chunk_rows)`` elements, scratch

    RReLU uses its mean slope; PReLU its learned slopes.

    Returns
    -------
    status : int
        0: ``X`` and ``out`` are finite; 1: ``X`` holds NaN or inf (nothing computed,
        ``out`` undefined); 2: ``X`` is finite but some output is not (overflow).
    """
    L = layout.shape[0]
    last = L - 1
    n = X.shape[0]
    offs = _validate(layout, act_params, theta.shape[0], X.shape[1], out.shape[1],
                     work.shape[0], chunk_rows)
    if out.shape[0] != n:
        raise ValueError("out must have the rows of X")
    if not _all_finite(X):
        return 1
    eps, top = _dtype_consts(work)
    csr = _ftz_enter()  # after every check: nothing below raises
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rows = stop - start
        for l in range(L):
            fi, fo, npre = layout[l, FAN_IN], layout[l, FAN_OUT], layout[l, N_PRE]
            c, io = layout[l, COEF_OFF], layout[l, INTER_OFF]
            W = _view(theta, c, fi, npre)
            b = _span(theta, io, io + npre)
            # the output layer is computed straight into out
            Z = _view(work, offs[l, P_Z], rows, npre) if l < last else out[start:stop]
            if l == 0:
                _mm_nn(X[start:stop], W, Z, False)
            else:
                _mm_nn(_view(work, offs[l - 1, P_A], rows, fi), W, Z, False)
            if l < last:
                so = layout[l, SLOPE_OFF]
                slopes = _span(theta, so, so + fo) if so >= 0 else _span(theta, 0, 0)
                A = _view(work, offs[l, P_A], rows, fo)
                _hidden_forward(layout[l, ACT], act_params[l, 0], act_params[l, 1], Z, A, b,
                                slopes, _no_rows(work, fo), layout[l, K],
                                _unlit(False), np.uint64(0), _unlit(0))
            else:
                _output_forward(layout[l, ACT], Z, b, apply_output, top)
    _ftz_exit(csr)
    return 0 if _all_finite(out) else 2


loss_grad_kernel = PerDtype(_loss_grad, _loss_grad_sig, **_F)
"""Full-batch loss and gradient (see :func:`_loss_grad`), one dispatcher per dtype."""

forward_kernel = PerDtype(_forward, _forward_sig, **_F)
"""Prediction (see :func:`_forward`), one dispatcher per dtype."""


# ------------------------------------------------------------ first touch of BLAS's buffers
WARM_N = 512
"""Side of the float32 products :func:`warm_blas_kernel` runs (the Cython extension's
``warm_blas`` explains why: OpenBLAS's kernels are slow on small products until a larger one
has touched the pages of the buffer each calling thread packs into)."""


def _warm_products(bufs):
    for w in prange(bufs.shape[0]):
        np.dot(bufs[w, 0], bufs[w, 1], bufs[w, 2])


_warm_lock = threading.Lock()
_warm_kernels = {}


def warm_blas_kernel(parallel):
    """The compiled ``bufs[w, 2] = bufs[w, 0] @ bufs[w, 1]`` for every ``w`` of a C-contiguous
    float32 array ``bufs`` of shape (n, 3, k, k): in ``n`` threads at once with ``parallel``
    (each concurrent caller of BLAS has a buffer of its own), else one after the other.
    Compiled (or loaded from the cache) on first use, not at import."""
    with _warm_lock:
        if parallel not in _warm_kernels:
            func = _renamed(_warm_products, "_warm_products_parallel") if parallel else (
                _warm_products)
            _warm_kernels[parallel] = njit(void(float32[:, :, :, ::1]), **_F,
                                           parallel=parallel)(func)
        return _warm_kernels[parallel]
