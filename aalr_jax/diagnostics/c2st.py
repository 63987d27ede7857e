r"""Classifier two-sample test (C2ST) as the sbibm benchmark computes it
(Lueckmann et al. 2021, ``sbibm.metrics.c2st``; Lopez-Paz & Oquab 2017).

Given samples ``X: (n, d)`` (the reference, e.g. exact posterior draws) and ``Y: (m, d)``:

1. both are z-scored with the mean and the standard deviation (``ddof=1``, as ``torch.std``) of X;
2. label X 0 and Y 1 and estimate by 5-fold cross-validation (``KFold(shuffle=True,
   random_state=seed)``) the accuracy of scikit-learn's ``MLPClassifier(activation="relu",
   hidden_layer_sizes=(10 d, 10 d), max_iter=10000, solver="adam", random_state=seed)``;
3. return the mean accuracy over folds.

0.5 means the samples cannot be told apart; 1.0 means disjoint. For 1-D ``N(0, 1)`` against
``N(δ, 1)`` the Bayes-optimal accuracy is ``Φ(δ/2)`` (0.69 at δ = 1). sbibm's defaults (seed 1,
``max_iter=10000``) are kept.

Two backends run this protocol:

* ``"sklearn"`` (default) calls scikit-learn itself (optional: ``pip install "aalr-jax[diagnostics]"``).
* ``"jax"`` re-implements the same classifier and training in JAX, float32: Glorot-uniform
  initialisation with bound ``√(6/(fan_in + fan_out))`` for weights and biases, minibatches of
  ``min(200, n_train)`` reshuffled every epoch, binary cross-entropy plus the L2 penalty
  ``α/2 Σ‖W‖² / batch`` (α = 10⁻⁴), Adam with scikit-learn's update
  ``W ← W − η √(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)`` (η = 10⁻³, β = (0.9, 0.999), ε = 10⁻⁸), and its
  stopping rule: stop once the epoch's mean training loss has failed to fall by more than
  ``tol = 10⁻⁴`` below the best so far in 11 consecutive epochs, or after ``max_iter`` epochs. The
  folds are scikit-learn's exactly; the random initialisation and batch order are JAX's, so a
  score differs from the scikit-learn one by about the spread between scikit-learn seeds. All
  folds, and all pairs of a batch ``X: (k, n, d)``, train at once in one compiled program
  (vectorised ``while_loop``), which is several times faster on a CPU and runs on accelerators.
  Every pair uses the same classifier keys (sbibm gives every pair the same seed), so a pair's
  score does not depend on the batch it is in.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.diagnostics.roc import weighted_auc

__all__ = ["c2st"]

BACKENDS = ("sklearn", "jax")


def c2st(X, Y, *, seed: int = 1, n_folds: int = 5, scoring: str = "accuracy", z_score: bool = True,
         noise_scale: float | None = None, backend: str = "sklearn", max_iter: int = 10_000):
    """sbibm's C2ST accuracy (``scoring="roc_auc"`` gives its ``c2st_auc``).

    Args:
        X: ``(n, d)`` reference samples, or ``(k, n, d)`` for k independent tests.
        Y: ``(m, d)`` samples to compare (``(k, m, d)`` with a batched X).
        seed: random state of the classifier, the folds and the optional noise.
        n_folds: cross-validation folds.
        scoring: a scikit-learn scorer name; the ``"jax"`` backend offers ``"accuracy"`` and
            ``"roc_auc"``.
        z_score: standardise with X's mean and standard deviation.
        noise_scale: add Gaussian noise of this scale to both samples (sbibm's option).
        backend: ``"sklearn"`` or ``"jax"`` (see the module docstring).
        max_iter: the classifier's epoch limit (sbibm: 10,000). Nearly separable samples keep
            lowering the training loss and train to this limit (minutes per pair on a CPU);
            a smaller value gives a quicker, lower-bound score.

    Returns:
        Mean cross-validated score (0.5 for indistinguishable samples): a float, or a ``(k,)``
        array for batched inputs.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "jax" and scoring not in ("accuracy", "roc_auc"):
        raise ValueError(f"the jax backend scores 'accuracy' or 'roc_auc', got scoring={scoring!r}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    if X.ndim == 1 and Y.ndim == 1:
        X, Y = X[:, None], Y[:, None]
    batched = X.ndim == 3
    if batched != (Y.ndim == 3) or X.ndim not in (2, 3) or X.shape[-1] != Y.shape[-1] \
            or (batched and X.shape[0] != Y.shape[0]) or min(X.shape[-2], Y.shape[-2]) < n_folds:
        raise ValueError(f"X and Y must have shapes (n, d) and (m, d), or (k, n, d) and (k, m, d), "
                         f"with n, m >= n_folds = {n_folds}; got {X.shape} and {Y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite")
    X, Y = (X, Y) if batched else (X[None], Y[None])
    peak = lambda A, B: max(np.abs(A).max(), np.abs(B).max())
    if z_score:
        raw_peak = peak(X, Y)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mean, std = X.mean(1, keepdims=True), X.std(1, ddof=1, keepdims=True)
            X, Y = (X - mean) / std, (Y - mean) / std
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):  # else the classifier sees NaN: C2ST 0.5
            raise ValueError(f"X and Y cannot be z-scored by X's mean and standard deviation: X has a constant "
                             f"column or the values overflow (largest |value| {raw_peak:.3g}); "
                             "check the samples, or pass z_score=False")
    if noise_scale is not None:
        rng = np.random.default_rng(seed)
        X = X + noise_scale * rng.standard_normal(X.shape)
        Y = Y + noise_scale * rng.standard_normal(Y.shape)
    if backend == "jax" and peak(X, Y) > np.finfo(np.float32).max:
        raise ValueError(f"the jax backend trains in float32, and the (z-scored) samples reach {peak(X, Y):.3g}; "
                         "check the samples (diverged chains?) or use backend='sklearn'")
    score = _sklearn if backend == "sklearn" else _jax
    scores = score(X, Y, seed=seed, n_folds=n_folds, scoring=scoring, max_iter=int(max_iter))
    return scores if batched else float(scores[0])


def _sklearn(X, Y, *, seed, n_folds, scoring, max_iter) -> np.ndarray:
    """``(k,)`` scores, one scikit-learn cross-validation per pair."""
    try:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('c2st needs scikit-learn: pip install "aalr-jax[diagnostics]" '
                          '(or pass backend="jax")') from err
    dim = X.shape[-1]
    scores = []
    for x, y in zip(X, Y):
        clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim), max_iter=max_iter,
                            solver="adam", random_state=seed)
        data = np.concatenate([x, y])
        target = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
        folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
        scores.append(np.mean(cross_val_score(clf, data, target, cv=folds, scoring=scoring)))
    return np.asarray(scores)


# ---------------------------------------------------------------------------------------------
# JAX backend

ALPHA, LEARNING_RATE, BETA1, BETA2, EPSILON, TOL, N_ITER_NO_CHANGE, BATCH = 1e-4, 1e-3, 0.9, 0.999, 1e-8, 1e-4, 10, 200


class _Fit(NamedTuple):
    """State of one classifier's training (one fold of one pair)."""

    params: tuple  # ((W1, b1), (W2, b2), (W3, b3))
    m: tuple
    v: tuple
    t: jax.Array  # Adam steps taken
    epoch: jax.Array
    best: jax.Array  # best epoch loss so far
    stall: jax.Array  # epochs in a row without an improvement larger than TOL
    key: jax.Array


def _kfold(n_total: int, n_folds: int, seed: int):
    """scikit-learn's ``KFold(shuffle=True, random_state=seed)`` as padded index arrays.

    Returns ``(train, train_ok, test, test_ok)``: ``(n_folds, T)`` / ``(n_folds, S)`` indices and
    validity masks (fold sizes differ by one when ``n_folds`` does not divide ``n_total``).
    """
    order = np.random.RandomState(seed).permutation(n_total)
    sizes = np.full(n_folds, n_total // n_folds)
    sizes[: n_total % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    tests = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    trains = [np.setdiff1d(order, t, assume_unique=True) for t in tests]

    def pad(parts):
        width = max(len(p) for p in parts)
        idx = np.zeros((len(parts), width), np.int32)
        ok = np.zeros((len(parts), width), bool)
        for i, p in enumerate(parts):
            idx[i, : len(p)], ok[i, : len(p)] = p, True
        return idx, ok

    return (*pad(trains), *pad(tests))


def _init(key, sizes):
    """Glorot-uniform weights and biases as scikit-learn's ``MLPClassifier`` (factor 6)."""
    params = []
    for k, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        kw, kb = jax.random.split(k)
        params.append((jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
                       jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)))
    return tuple(params)


def _logit(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return (x @ w + b)[..., 0]


def _batch_loss(params, x, y, ok):
    """Mean cross-entropy over the valid rows plus ``α/2 Σ‖W‖² / rows``."""
    z = _logit(params, x)
    rows = jnp.maximum(ok.sum(), 1)
    cross_entropy = jnp.where(ok, jax.nn.softplus(z) - y * z, 0.0).sum()
    l2 = sum((w**2).sum() for w, _ in params)
    return (cross_entropy + 0.5 * ALPHA * l2) / rows


def _train(key, data, labels, train, train_ok, max_iter):
    """Fit one classifier on ``data[train]`` (rows with ``train_ok``); returns its parameters."""
    dim = data.shape[-1]
    n_train = train_ok.sum()
    batch = min(BATCH, train.shape[0])
    n_batches = -(-train.shape[0] // batch)
    width = n_batches * batch
    key, key_init = jax.random.split(key)
    params = _init(key_init, (dim, 10 * dim, 10 * dim, 1))
    zeros = jax.tree.map(jnp.zeros_like, params)
    fit = _Fit(params, zeros, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
               jnp.asarray(jnp.inf, jnp.float32), jnp.zeros((), jnp.int32), key)

    def step(carry, rows):
        params, m, v, t = carry
        idx, ok = rows
        loss, grad = jax.value_and_grad(_batch_loss)(params, data[idx], labels[idx], ok)
        live = ok.any()  # an all-padding batch takes no step
        t_new = t + 1
        m_new = jax.tree.map(lambda a, g: BETA1 * a + (1 - BETA1) * g, m, grad)
        v_new = jax.tree.map(lambda a, g: BETA2 * a + (1 - BETA2) * g**2, v, grad)
        rate = LEARNING_RATE * jnp.sqrt(1 - BETA2**t_new) / (1 - BETA1**t_new)
        new = jax.tree.map(lambda p, a, b: p - rate * a / (jnp.sqrt(b) + EPSILON), params, m_new, v_new)
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(live, x, y), a, b)
        return (keep(new, params), keep(m_new, m), keep(v_new, v), jnp.where(live, t_new, t)), loss * ok.sum()

    def epoch(fit: _Fit) -> _Fit:
        key, key_order = jax.random.split(fit.key)
        # valid rows first in a random order, then the padding: full batches but the last ones
        rank = jnp.where(train_ok, jax.random.uniform(key_order, train_ok.shape), 2.0)
        order = jnp.argsort(rank)
        pad = width - order.shape[0]
        idx = jnp.concatenate([train[order], jnp.zeros(pad, train.dtype)])
        ok = jnp.concatenate([train_ok[order], jnp.zeros(pad, bool)])
        rows = (idx.reshape(n_batches, batch), ok.reshape(n_batches, batch))
        (params, m, v, t), losses = jax.lax.scan(step, (fit.params, fit.m, fit.v, fit.t), rows)
        loss = losses.sum() / n_train
        stall = jnp.where(loss > fit.best - TOL, fit.stall + 1, 0)
        return _Fit(params, m, v, t, fit.epoch + 1, jnp.minimum(loss, fit.best), stall, key)

    running = lambda fit: (fit.stall <= N_ITER_NO_CHANGE) & (fit.epoch < max_iter)
    return jax.lax.while_loop(running, epoch, fit).params


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _test_logits(keys, data, labels, train, train_ok, test, max_iter):
    """``(k, F, S)`` held-out logits: data ``(k, N, d)``, keys ``(k, F)``, folds ``(F, T)``/``(F, S)``."""

    def one(key, data, train, train_ok, test):
        return _logit(_train(key, data, labels, train, train_ok, max_iter), data[test])

    per_fold = jax.vmap(one, in_axes=(0, None, 0, 0, 0))
    return jax.vmap(per_fold, in_axes=(0, 0, None, None, None))(keys, data, train, train_ok, test)


def _jax(X, Y, *, seed, n_folds, scoring, max_iter) -> np.ndarray:
    """``(k,)`` scores, all pairs and folds trained at once."""
    k, n, m = X.shape[0], X.shape[1], Y.shape[1]
    data = jnp.asarray(np.concatenate([X, Y], axis=1), jnp.float32)
    labels_np = np.concatenate([np.zeros(n), np.ones(m)])
    train, train_ok, test, test_ok = _kfold(n + m, n_folds, seed)
    # every pair gets the same fold keys, as sbibm gives every pair the same seed: a pair scores the
    # same alone or at any place in a batch (the keys of a lone pair, index 0, as before)
    fold_keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 0), n_folds)
    keys = jnp.broadcast_to(fold_keys, (k,) + fold_keys.shape)
    logits = np.asarray(_test_logits(keys, data, jnp.asarray(labels_np, jnp.float32), jnp.asarray(train),
                                     jnp.asarray(train_ok), jnp.asarray(test), max_iter=max_iter))
    scores = np.zeros((k, n_folds))
    for f in range(n_folds):
        truth, ok = labels_np[test[f]][test_ok[f]], test_ok[f]
        for i in range(k):
            z = logits[i, f][ok]
            scores[i, f] = np.mean((z > 0) == truth) if scoring == "accuracy" \
                else float(weighted_auc(z[truth == 1], z[truth == 0]))
    return scores.mean(1)
