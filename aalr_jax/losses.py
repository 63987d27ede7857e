r"""The AALR (NRE-A) classification loss on logits, and the balanced (BNRE) penalty.

A classifier ``d(θ, x) = σ(f(θ, x))`` separates dependent pairs ``(θ, x) ~ p(θ, x)`` (label 1) from
independent pairs ``(θ', x) ~ p(θ) p(x)`` (label 0). At the optimum ``f = log r(x|θ)``
(Hermans, Begy & Louppe, ICML 2020). With logits the binary cross-entropy is

.. math::  L = E_{p(θ,x)}[\operatorname{softplus}(-f(θ, x))] + E_{p(θ)p(x)}[\operatorname{softplus}(f(θ', x))],

computed from ``f`` directly (``-log σ(f) = softplus(-f)``), never from ``log(σ(f))``, which
saturates. Independent pairs are made inside a batch by rolling θ one place (every x meets a θ
of another simulation; the batch is reshuffled every epoch). With ``K = num_negatives > 1`` every x
meets the θ of K other simulations (rolls by 1..K) and the second expectation averages all K·n
independent pairs: the same loss and optimum, a lower-variance estimate of its second term.

Balanced NRE (Delaunoy et al., NeurIPS 2022) adds ``λ (E_joint[σ(f)] + E_marginal[σ(f)] - 1)²``;
the optimum is unchanged and small-budget posteriors become conservative (λ = 100 in the paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["aalr_loss", "balance_penalty", "estimator_loss", "repair"]


def aalr_loss(logits_joint: jax.Array, logits_marginal: jax.Array) -> jax.Array:
    """Binary cross-entropy on logits, each class averaged over its batch: ``()``."""
    return jnp.mean(jax.nn.softplus(-logits_joint)) + jnp.mean(jax.nn.softplus(logits_marginal))


def balance_penalty(logits_joint: jax.Array, logits_marginal: jax.Array) -> jax.Array:
    """``(mean σ(f_joint) + mean σ(f_marginal) - 1)²``: ``()``."""
    gap = jnp.mean(jax.nn.sigmoid(logits_joint)) + jnp.mean(jax.nn.sigmoid(logits_marginal)) - 1.0
    return gap**2


def repair(theta: jax.Array, shift: int = 1) -> jax.Array:
    """Independent partners for a batch: θ rolled ``shift`` places along the batch axis, ``(n, d)``."""
    return jnp.roll(theta, shift, axis=0)


def estimator_loss(estimator, theta: jax.Array, x: jax.Array, balance: float = 0.0, num_negatives: int = 1) -> jax.Array:
    """AALR loss (plus ``balance`` × BNRE penalty) of a ratio estimator on a batch.

    The observations are embedded once and shared by the dependent and independent pairs.

    Args:
        estimator: a :class:`aalr_jax.nn.RatioEstimator`.
        theta: ``(n, d)``.
        x: ``(n, *x_shape)``.
        balance: λ of the balanced term; 0 gives plain AALR.
        num_negatives: K independent partners per x (θ rolled by 1..K; K < n, static).
    """
    features = estimator.embed(x)
    logits_joint = estimator.head(theta, features)
    # (K·n, d) partners and their x's features; K = 1 is the plain rolled batch
    partners = jnp.concatenate([repair(theta, k) for k in range(1, num_negatives + 1)])
    logits_marginal = estimator.head(partners, jnp.concatenate([features] * num_negatives, axis=-2))
    loss = aalr_loss(logits_joint, logits_marginal)
    return loss + balance * balance_penalty(logits_joint, logits_marginal)
