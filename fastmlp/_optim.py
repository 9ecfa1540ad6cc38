"""Optimizer state kept in Python between epochs: flat moment vectors, counters, schedules.

The per-step arithmetic lives in the backends (``train_epoch``); this module holds what
persists across epochs and ``partial_fit`` calls, and the learning-rate schedule that
scikit-learn applies at the end of each epoch.
"""

import numpy as np

LR, MOMENTUM, BETA_1, BETA_2, EPSILON, ALPHA = range(6)
SOLVER, NESTEROV, ADAM_T, STEP, SEED, LOSS, SERIAL = range(7)
SOLVER_CODES = {"sgd": 0, "adam": 1}


class OptimizerState:
    """State of an SGD or Adam optimizer over a flat parameter vector.

    Parameters
    ----------
    solver : {'sgd', 'adam'}
    n_params : int
    dtype : numpy dtype
    learning_rate_init : float
    lr_schedule : {'constant', 'invscaling', 'adaptive'}
        Only used by SGD.
    power_t : float
        Exponent of the ``invscaling`` schedule.

    Attributes
    ----------
    moments : ndarray of shape (2, n_params)
        SGD velocity (row 0) or Adam first and second moments.
    learning_rate : float
        Current learning rate (SGD); Adam rescales ``learning_rate_init`` at every step.
    """

    def __init__(self, solver, n_params, dtype, learning_rate_init, lr_schedule="constant",
                 power_t=0.5):
        self.solver = solver
        self.moments = np.zeros((2, n_params), dtype=dtype)
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.power_t = power_t
        self.adam_t = 0

    def set_learning_rate_init(self, value):
        """Take a new ``learning_rate_init`` (set with ``set_params`` between calls)."""
        if value != self.learning_rate_init:
            self.learning_rate_init = value
            self.learning_rate = float(value)

    def hyper(self, est):
        """The ``hyper`` array of the kernel contract."""
        lr = self.learning_rate if self.solver == "sgd" else self.learning_rate_init
        return np.array(
            [lr, est.momentum, est.beta_1, est.beta_2, est.epsilon, est.alpha],
            dtype=np.float64,
        )

    def iteration_ends(self, time_step):
        """Update the learning rate at the end of an epoch (``invscaling``)."""
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """Whether to stop when the loss stalls; ``adaptive`` SGD divides its rate by 5."""
        if self.solver != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False
