r"""The ROC diagnostic of a ratio estimator (Hermans et al. 2020, §3.3) and the normalisation check.

**ROC.** For a test parameter θ, positives are ``x ~ p(x|θ)`` from the simulator and negatives are
marginal draws ``x_i ~ p(x)`` (``θ_i ~ p(θ)``, ``x_i ~ p(x|θ_i)``) weighted by the estimated ratio

.. math::  w_i = \hat r(x_i|θ) \Big/ \tfrac1n \sum_j \hat r(x_j|θ) \quad (\text{self-normalised}).

If ``r̂ = r``, ``w(x) p(x) = p(x|θ)``: the weighted negatives are distributed as the positives and
no classifier beats chance, so the weighted ROC of a fresh classifier is the diagonal (AUC 0.5).
An AUC above 0.5 on held-out data flags a wrong ratio. A weak classifier also gives 0.5, so its
capacity is part of the result (``hidden_features``, ``num_epochs``).

The classifier is an MLP (SELU) on z-scored ``x`` trained with full-batch Adam on the class-balanced
weighted binary cross-entropy (logits ``g(x)``, positive label 1):

.. math::  L = -\sum_{\text{pos}} \tfrac{1}{n} \log σ(g) - \sum_{\text{neg}} \tfrac{w_i}{\sum w} \log(1 - σ(g)).

On the held-out half the weighted ROC is ``TPR(t) = P_pos(g > t)``, ``FPR(t) = Σ_{neg: g > t} w / Σ w``,
and the weighted AUC is the Mann–Whitney statistic
``Σ_{i∈pos} Σ_{j∈neg} w_j (1[g_i > g_j] + ½ 1[g_i = g_j]) / (n_pos Σ w)``; its standard error comes
from a bootstrap of the held-out set (resampling each class). The Kish effective sample size
``(Σ w)² / Σ w²`` of the negatives is reported: with few effective negatives the test is weak.

**Normalisation.** ``∫ p(θ) r(x|θ) dθ = ∫ p(θ|x) dθ = 1`` for every ``x``; :func:`normalization_check`
estimates ``E_{p(θ)}[r̂(x|θ)]`` by Monte Carlo over prior draws, with its standard error
``sd(r̂)/\sqrt{M}``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aalr_jax.data import resolve_problem, simulate

__all__ = ["NormalizationResult", "ROCResult", "normalization_check", "roc_diagnostic", "weighted_auc"]

FPR_GRID = np.linspace(0.0, 1.0, 101)


class ROCResult(NamedTuple):
    """ROC diagnostic at ``t`` test parameters.

    Attributes:
        theta: ``(t, d)`` test parameters.
        auc: ``(t,)`` weighted ROC AUC on held-out data (0.5: the ratio passes).
        auc_std: ``(t,)`` bootstrap standard error of ``auc``.
        fpr: ``(G,)`` false-positive rates, a common grid.
        tpr: ``(t, G)`` true-positive rates at ``fpr``.
        weight_ess: ``(t,)`` Kish effective sample size of the weighted negatives (training set).
        hidden_features: the classifier's hidden widths.
        num_epochs: full-batch Adam steps of the classifier.
        num_train: training examples per class.
        num_test: held-out examples per class.
    """

    theta: np.ndarray
    auc: np.ndarray
    auc_std: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    weight_ess: np.ndarray
    hidden_features: tuple
    num_epochs: int
    num_train: int
    num_test: int


class NormalizationResult(NamedTuple):
    """``E_{p(θ)}[r̂(x|θ)]`` per observation: ``mean: (k,)``, ``stderr: (k,)``, from ``num_samples`` prior draws."""

    mean: np.ndarray
    stderr: np.ndarray
    num_samples: int


def _log_ratio(estimator, theta, x):
    """``log r̂(x|θ)`` through the ``embed``/``head`` interface (works for ExactLikelihood too)."""
    return estimator.head(theta, estimator.embed(x))


def weighted_auc(pos_scores, neg_scores, neg_weights=None, pos_weights=None):
    """Weighted ROC AUC ``P(g_pos > g_neg)`` (ties count ½).

    Args:
        pos_scores: ``(n,)``; neg_scores: ``(m,)``; optional non-negative weights of the same shapes.

    Returns:
        A scalar in ``[0, 1]`` (jit- and vmap-able).
    """
    a = jnp.ones_like(pos_scores) if pos_weights is None else pos_weights
    b = jnp.ones_like(neg_scores) if neg_weights is None else neg_weights
    order = jnp.argsort(neg_scores)
    sorted_neg = neg_scores[order]
    cum = jnp.concatenate([jnp.zeros(1, b.dtype), jnp.cumsum(b[order])])
    below = cum[jnp.searchsorted(sorted_neg, pos_scores, side="left")]
    below_or_tied = cum[jnp.searchsorted(sorted_neg, pos_scores, side="right")]
    return jnp.sum(a * (below + below_or_tied) / 2) / (a.sum() * b.sum())


def _init_mlp(rng_key, widths):
    """LeCun-normal weights for layer widths ``(in, h1, ..., 1)``."""
    keys = jax.random.split(rng_key, len(widths) - 1)
    return [
        (jax.random.normal(k, (a, b)) / math.sqrt(a), jnp.zeros(b))
        for k, a, b in zip(keys, widths[:-1], widths[1:])
    ]


def _mlp(params, h):
    for w, b in params[:-1]:
        h = jax.nn.selu(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[..., 0]


def _classify(rng_key, x_pos, x_neg, log_w, hidden_features, num_epochs, learning_rate, num_bootstrap):
    """Train on the first half, evaluate on the second, for one test parameter."""
    n = x_pos.shape[0] // 2
    w = jax.nn.softmax(log_w)
    w_train, w_test = w[:n] / w[:n].sum(), w[n:] / w[n:].sum()
    train = jnp.concatenate([x_pos[:n], x_neg[:n]])
    loc, scale = train.mean(0), train.std(0) + 1e-6
    z = lambda a: (a - loc) / scale
    key_init, key_boot = jax.random.split(rng_key)
    params = _init_mlp(key_init, (train.shape[1],) + hidden_features + (1,))
    optimizer = optax.adam(learning_rate)

    def loss_fn(params):
        pos = -jax.nn.log_sigmoid(_mlp(params, z(x_pos[:n]))).mean()
        neg = -jnp.sum(w_train * jax.nn.log_sigmoid(-_mlp(params, z(x_neg[:n]))))
        return pos + neg

    def step(state, _):
        params, opt_state = state
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_epochs)
    s_pos, s_neg = _mlp(params, z(x_pos[n:])), _mlp(params, z(x_neg[n:]))
    auc = weighted_auc(s_pos, s_neg, w_test)

    def boot(key):
        kp, kn = jax.random.split(key)
        ip = jax.random.randint(kp, (s_pos.shape[0],), 0, s_pos.shape[0])
        ineg = jax.random.randint(kn, (s_neg.shape[0],), 0, s_neg.shape[0])
        return weighted_auc(s_pos[ip], s_neg[ineg], w_test[ineg])

    boots = jax.vmap(boot)(jax.random.split(key_boot, num_bootstrap))
    ess = 1.0 / jnp.sum(w_train**2)
    return auc, boots.std(ddof=1), ess, s_pos, s_neg, w_test


@functools.partial(jax.jit, static_argnames=("hidden_features", "num_epochs", "num_bootstrap"))
def _classify_all(keys, x_pos, x_neg, log_w, hidden_features, num_epochs, learning_rate, num_bootstrap):
    """:func:`_classify` for each test parameter: ``keys (t,)``, ``x_pos (t, n, m)``, ``log_w (t, n)``."""
    fn = lambda k, xp, lw: _classify(k, xp, x_neg, lw, hidden_features, num_epochs, learning_rate, num_bootstrap)
    return jax.vmap(fn)(keys, x_pos, log_w)


@functools.lru_cache(maxsize=32)
def _simulate_at(simulator):
    """Jitted ``(keys (t, n), theta (t, d)) -> x (t, n, *x_shape)``, cached per simulator."""
    return jax.jit(jax.vmap(jax.vmap(simulator, (0, None))))


@jax.jit
def _log_weights(estimator, theta, x_neg):
    return jax.vmap(lambda t: _log_ratio(estimator, t, x_neg))(theta)


def _roc_curve(s_pos, s_neg, w_neg):
    """Weighted ROC points ``(fpr, tpr)`` by decreasing threshold (numpy)."""
    scores = np.concatenate([s_pos, s_neg])
    is_pos = np.concatenate([np.ones(len(s_pos), bool), np.zeros(len(s_neg), bool)])
    weights = np.concatenate([np.full(len(s_pos), 1.0 / len(s_pos)), w_neg / w_neg.sum()])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(np.where(is_pos, weights, 0.0)[order])])
    fpr = np.concatenate([[0.0], np.cumsum(np.where(is_pos, 0.0, weights)[order])])
    return fpr, tpr


def roc_diagnostic(
    rng_key: jax.Array,
    estimator,
    task_or_prior_and_simulator,
    theta,
    *,
    num_samples: int = 4096,
    hidden_features: tuple = (64, 64),
    num_epochs: int = 1000,
    learning_rate: float = 3e-3,
    num_bootstrap: int = 200,
) -> ROCResult:
    """The ROC diagnostic of ``estimator`` at test parameters ``theta``.

    Args:
        rng_key: PRNG key.
        estimator: a ratio estimator (``embed``/``head``, e.g. :class:`~aalr_jax.nn.RatioEstimator`).
        task_or_prior_and_simulator: a task, or ``(prior, simulator)``.
        theta: ``(d,)`` or ``(t, d)`` test parameters.
        num_samples: draws per class, half to train the classifier and half held out.
        hidden_features: hidden widths of the classifier.
        num_epochs: full-batch Adam steps.
        learning_rate: Adam step size.
        num_bootstrap: bootstrap replicates of the held-out set for ``auc_std``.

    Returns:
        :class:`ROCResult` (AUC ≈ 0.5 for an exact ratio).
    """
    prior, simulator = resolve_problem(task_or_prior_and_simulator)
    theta = jnp.atleast_2d(jnp.asarray(theta, jnp.float32))
    d = prior.event_shape[0]
    if theta.ndim != 2 or theta.shape[1] != d:
        raise ValueError(f"theta must have shape ({d},) or (t, {d}), got {tuple(theta.shape)}")
    if num_samples < 4:
        raise ValueError(f"num_samples must be at least 4, got {num_samples}")
    num_samples = 2 * (int(num_samples) // 2)
    hidden_features = tuple(int(h) for h in hidden_features)
    key_pos, key_neg, key_fit = jax.random.split(rng_key, 3)

    bank = simulate(key_neg, (prior, simulator), num_samples, progress=False)
    x_neg = bank.x
    keys = jax.random.split(key_pos, theta.shape[0] * num_samples).reshape(theta.shape[0], num_samples, -1)
    x_pos = _simulate_at(simulator)(keys, theta)
    log_w = _log_weights(estimator, theta, x_neg)  # (t, n)
    if not bool(jnp.isfinite(x_pos).all()):
        raise ValueError("the simulator returned non-finite values at a test parameter")
    flat = lambda a: a.reshape(a.shape[: a.ndim - len(x_neg.shape[1:])] + (-1,))
    fit_keys = jax.random.split(key_fit, theta.shape[0])
    auc, auc_std, ess, s_pos, s_neg, w_test = _classify_all(
        fit_keys, flat(x_pos), flat(x_neg), log_w, hidden_features, int(num_epochs), float(learning_rate),
        int(num_bootstrap))
    s_pos, s_neg, w_test = np.asarray(s_pos), np.asarray(s_neg), np.asarray(w_test, np.float64)
    tpr = []
    for i in range(theta.shape[0]):
        fpr, tp = _roc_curve(s_pos[i], s_neg[i], w_test[i])
        tpr.append(np.interp(FPR_GRID, fpr, tp))
    half = num_samples // 2
    return ROCResult(np.asarray(theta), np.asarray(auc), np.asarray(auc_std), FPR_GRID.copy(), np.stack(tpr),
                     np.asarray(ess), hidden_features, int(num_epochs), half, half)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _normalization(estimator, theta, x_obs, batch_size):
    def one(x):
        lr = _log_ratio(estimator, theta, x[None])
        top = jnp.max(lr)
        r = jnp.exp(lr - top)
        return jnp.log(r.mean()) + top, jnp.log(r.std(ddof=1)) + top

    return jax.lax.map(one, x_obs, batch_size=batch_size)


def normalization_check(
    rng_key: jax.Array, estimator, prior, x_obs, *, num_samples: int = 100_000, batch_size: int = 1
) -> NormalizationResult:
    """Monte Carlo estimate of ``E_{p(θ)}[r̂(x|θ)]`` (1 for a normalised posterior) per observation.

    Args:
        rng_key: PRNG key.
        estimator: a ratio estimator.
        prior: its prior, event shape ``(d,)``.
        x_obs: ``x_shape`` or ``(k, *x_shape)``.
        num_samples: prior draws M.
        batch_size: observations evaluated at once (memory: ``batch_size · M`` network evaluations).

    Returns:
        :class:`NormalizationResult` with ``mean, stderr: (k,)`` (``(1,)`` for one observation).
    """
    x_shape = tuple(estimator.x_shape)
    x_obs = jnp.asarray(x_obs, jnp.float32)
    if tuple(x_obs.shape) == x_shape:
        x_obs = x_obs[None]
    if tuple(x_obs.shape[1:]) != x_shape or x_obs.ndim != len(x_shape) + 1:
        raise ValueError(f"x_obs must have shape {x_shape} or (k, *{x_shape}), got {tuple(x_obs.shape)}")
    theta = prior.sample(rng_key, (int(num_samples),))
    log_mean, log_std = _normalization(estimator, theta, x_obs, int(batch_size))
    return NormalizationResult(np.exp(np.asarray(log_mean, np.float64)),
                               np.exp(np.asarray(log_std, np.float64)) / math.sqrt(num_samples), int(num_samples))
