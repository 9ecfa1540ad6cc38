"""Exceptions shared by the estimators and the training loops."""

__all__ = ["NonFiniteOutputError"]


class NonFiniteOutputError(ValueError):
    """The network has no finite output for some input rows: its activations overflowed
    (a hidden layer reached +-inf, and the next layer added inf - inf)."""
