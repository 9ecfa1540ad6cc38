# The C-level API of fastmlp's Cython kernels (implemented in _cy.pyx).
#
# Everything here is ``noexcept nogil`` and works on raw pointers: the ``def`` entry points
# of _cy.pyx validate the arrays once, then run a whole epoch (or a whole prediction)
# inside one ``with nogil:`` block. ``floating`` gives one source for float32 and float64.
# The arrays and codes are those of docs/kernel_contract.md.

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t


# columns of ``layout``
cdef enum:
    FAN_IN = 0
    FAN_OUT = 1
    N_PRE = 2
    COEF_OFF = 3
    INTER_OFF = 4
    ACT = 5
    SLOPE_OFF = 6
    KPIECES = 7
    N_COLS = 8

# ``hyper`` and ``counters`` indices
cdef enum:
    H_LR = 0
    H_MOMENTUM = 1
    H_BETA_1 = 2
    H_BETA_2 = 3
    H_EPSILON = 4
    H_ALPHA = 5
    C_SOLVER = 0
    C_NESTEROV = 1
    C_ADAM_T = 2
    C_STEP = 3
    C_SEED = 4
    C_LOSS = 5
    C_SERIAL = 6
    N_COUNTERS = 7

# activation codes
cdef enum:
    A_IDENTITY = 0
    A_LOGISTIC = 1
    A_TANH = 2
    A_RELU = 3
    A_LEAKY_RELU = 4
    A_PRELU = 5
    A_RRELU = 6
    A_ELU = 7
    A_SELU = 8
    A_SOFTPLUS = 9
    A_SWISH = 10
    A_GELU = 11
    A_GELU_TANH = 12
    A_HARD_SIGMOID = 13
    A_HARD_TANH = 14
    A_MAXOUT = 15
    A_SOFTMAX = 20
    A_EXP = 21

# loss codes
cdef enum:
    L_SQUARED = 0
    L_POISSON = 1
    L_BINARY = 2
    L_MULTICLASS = 3


cdef struct Net:
    # the network as the kernels see it (built and validated by the ``def`` wrappers)
    const int64_t* layout       # (n_layers, N_COLS)
    const double* act_params    # (n_layers, 2)
    Py_ssize_t n_layers         # weight layers
    Py_ssize_t n_params         # len(theta)
    Py_ssize_t n_coef           # theta[:n_coef] holds the weight matrices (L2 applies)
    Py_ssize_t row_width        # work elements per row of batch (see _layer_bufs)
    bint serial                 # counters[SERIAL]: keep every product on this thread


cdef struct Bufs:
    # element offsets of one layer's buffers in ``work``, each (cap_rows x width)
    Py_ssize_t z     # pre-activations (N_PRE wide)
    Py_ssize_t a     # activations (FAN_OUT wide); == z when computed in place
    Py_ssize_t f     # f'(z) stored by the training forward pass (FAN_OUT wide), or -1
    Py_ssize_t d     # delta w.r.t. the pre-activation (N_PRE wide)
    Py_ssize_t da    # delta w.r.t. the activation (maxout only, FAN_OUT wide); else == d


cdef uint64_t splitmix64(uint64_t x) noexcept nogil
cdef uint64_t rrelu_layer_key(uint64_t seed, uint64_t step, uint64_t layer) noexcept nogil

cdef Py_ssize_t row_width(const int64_t* layout, Py_ssize_t n_layers) noexcept nogil
cdef Bufs layer_bufs(const Net* net, Py_ssize_t l, Py_ssize_t cap) noexcept nogil

cdef void act_forward(int code, const double* p, floating* Z, floating* A, floating* F,
                      const floating* b, const floating* s, Py_ssize_t rows,
                      Py_ssize_t n_units, Py_ssize_t k, bint train,
                      uint64_t key, Py_ssize_t row0) noexcept nogil
cdef void act_backward(int code, floating* D, const floating* DA, const floating* Z,
                       const floating* A, const floating* F, const floating* s,
                       floating* gb, floating* gs, Py_ssize_t rows, Py_ssize_t n_units,
                       Py_ssize_t k) noexcept nogil

cdef double loss_delta(int loss, const floating* P, const floating* Y,
                       const floating* sw, Py_ssize_t rows, Py_ssize_t n_out, floating* D,
                       floating* gb, double* sw_sum) noexcept nogil

cdef void forward_rows(const Net* net, const floating* theta, const floating* X0,
                       Py_ssize_t rows, Py_ssize_t cap, floating* work, bint train,
                       uint64_t k_batch, floating* out, bint apply_output,
                       Py_ssize_t row0) noexcept nogil
cdef double batch_loss_grad(const Net* net, const floating* theta, floating* grad,
                            const floating* X0, const floating* Y, const floating* sw,
                            Py_ssize_t rows, Py_ssize_t cap, uint64_t k_batch, int loss,
                            floating* work, double* sw_sum, bint accumulate,
                            Py_ssize_t row0) noexcept nogil

cdef double sgd_step(floating* theta, floating* grad, floating* vel, Py_ssize_t n,
                     Py_ssize_t n_coef, double lr, double momentum, bint nesterov,
                     double alpha, double sw_sum, bint zero_grad) noexcept nogil
cdef double adam_step(floating* theta, floating* grad, floating* grad1, floating* m,
                      floating* v,
                      Py_ssize_t n, Py_ssize_t n_coef, double lr_t, double beta_1,
                      double beta_2, double epsilon, double alpha,
                      double sw_sum, bint zero_grad, int n_threads) noexcept nogil
cdef double finish_grad(const floating* theta, floating* grad, Py_ssize_t n,
                        Py_ssize_t n_coef, double alpha, double sw_sum) noexcept nogil
