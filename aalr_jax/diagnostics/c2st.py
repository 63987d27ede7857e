r"""Classifier two-sample test (C2ST) exactly as the sbibm benchmark computes it
(Lueckmann et al. 2021, ``sbibm.metrics.c2st``; Lopez-Paz & Oquab 2017).

Given samples ``X: (n, d)`` (the reference, e.g. exact posterior draws) and ``Y: (m, d)``:

1. both are z-scored with the mean and the standard deviation (``ddof=1``, as ``torch.std``) of X;
2. label X 0 and Y 1 and estimate by 5-fold cross-validation (``KFold(shuffle=True,
   random_state=seed)``, ``cross_val_score`` with accuracy) the accuracy of scikit-learn's
   ``MLPClassifier(activation="relu", hidden_layer_sizes=(10 d, 10 d), max_iter=10000,
   solver="adam", random_state=seed)``;
3. return the mean accuracy over folds.

0.5 means the samples cannot be told apart; 1.0 means disjoint. For 1-D ``N(0, 1)`` against
``N(δ, 1)`` the Bayes-optimal accuracy is ``Φ(δ/2)`` (0.69 at δ = 1). sbibm's defaults (seed 1,
``max_iter=10000``) are kept. scikit-learn is optional: ``pip install "aalr-jax[diagnostics]"``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["c2st"]


def c2st(X, Y, *, seed: int = 1, n_folds: int = 5, scoring: str = "accuracy", z_score: bool = True,
         noise_scale: float | None = None) -> float:
    """sbibm's C2ST accuracy (``scoring="roc_auc"`` gives its ``c2st_auc``).

    Args:
        X: ``(n, d)`` reference samples; Y: ``(m, d)`` samples to compare.
        seed: random state of the classifier, the folds and the optional noise.
        n_folds: cross-validation folds.
        scoring: a scikit-learn scorer name.
        z_score: standardise with X's mean and standard deviation.
        noise_scale: add Gaussian noise of this scale to both samples (sbibm's option).

    Returns:
        Mean cross-validated score (0.5 for indistinguishable samples).
    """
    try:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('c2st needs scikit-learn: pip install "aalr-jax[diagnostics]" (or scikit-learn)') from err
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    if X.ndim == 1:
        X, Y = X[:, None], Y.reshape(-1, 1) if Y.ndim == 1 else Y
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1] or min(len(X), len(Y)) < n_folds:
        raise ValueError(f"X and Y must have shapes (n, d) and (m, d) with n, m >= {n_folds}, "
                         f"got {X.shape} and {Y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite")
    if z_score:
        mean, std = X.mean(0), X.std(0, ddof=1)
        X, Y = (X - mean) / std, (Y - mean) / std
    if noise_scale is not None:
        rng = np.random.default_rng(seed)
        X = X + noise_scale * rng.standard_normal(X.shape)
        Y = Y + noise_scale * rng.standard_normal(Y.shape)
    dim = X.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim), max_iter=10000,
                        solver="adam", random_state=seed)
    data = np.concatenate([X, Y])
    target = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, data, target, cv=folds, scoring=scoring)))
