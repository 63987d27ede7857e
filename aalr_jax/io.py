"""Saving and loading trained estimators (placeholder; being written)."""


def save_estimator(path, estimator, *, metadata=None):
    raise NotImplementedError


def load_estimator(path):
    raise NotImplementedError
