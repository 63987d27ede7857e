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

Ratio weighting (``α = ratio_weighting``). The cross-entropy's curvature in ``f`` at its optimum is
``p(θ, x) / (1 + r)`` per unit measure, so it weighs an error δ of the log-ratio at ``(θ, x)`` by
about ``½ δ² p(θ, x) / (1 + r)``, while the posteriors' expected KL divergence,
``E_{p(x)} KL(p(θ|x) || p̂(θ|x))``, weighs it by ``½ δ² p(θ, x)``. Inside a posterior much narrower
than the prior ``r`` is large (of the order of the prior's volume over the posterior's), so the
plain loss barely sees errors there: dependent pairs sit at ``σ(f) ≈ 1`` and independent ones
rarely land there. Multiplying both terms of every pair by ``w = (1 + r̂)^α`` with
``r̂ = exp(f)`` held constant (no gradient through ``w``) moves the weight to
``p(θ, x) (1 + r)^{α-1}``: α = 1 is the posterior's weighting (a dependent pair's gradient is
then ``-1`` and an independent pair's ``r̂``, the high-variance NWJ form), α = ½ the middle way.
``w`` depends only on the pair, not its label, so the pointwise optimum ``f = log r`` is
unchanged; the ``f`` inside ``w`` is clipped at 12 so that one confidently wrong independent pair
cannot dominate a batch.

Balanced NRE (Delaunoy et al., NeurIPS 2022) adds ``λ (E_joint[σ(f)] + E_marginal[σ(f)] - 1)²``;
the optimum is unchanged and small-budget posteriors become conservative (λ = 100 in the paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["aalr_loss", "balance_penalty", "estimator_loss", "ratio_weights", "repair"]


WEIGHT_LOGIT_CLIP = 12.0


def ratio_weights(logits: jax.Array, ratio_weighting: float) -> jax.Array:
    """``(1 + exp(min(f, 12)))^α`` with no gradient, the shape of ``logits``."""
    clipped = jnp.minimum(jax.lax.stop_gradient(logits), WEIGHT_LOGIT_CLIP)
    return jnp.exp(ratio_weighting * jax.nn.softplus(clipped))


def aalr_loss(logits_joint: jax.Array, logits_marginal: jax.Array, ratio_weighting: float = 0.0) -> jax.Array:
    """Binary cross-entropy on logits, each class averaged over its batch: ``()``.

    With ``ratio_weighting = α > 0`` every pair's term is multiplied by :func:`ratio_weights`.
    """
    joint, marginal = jax.nn.softplus(-logits_joint), jax.nn.softplus(logits_marginal)
    if ratio_weighting:
        joint = joint * ratio_weights(logits_joint, ratio_weighting)
        marginal = marginal * ratio_weights(logits_marginal, ratio_weighting)
    return jnp.mean(joint) + jnp.mean(marginal)


def balance_penalty(logits_joint: jax.Array, logits_marginal: jax.Array) -> jax.Array:
    """``(mean σ(f_joint) + mean σ(f_marginal) - 1)²``: ``()``."""
    gap = jnp.mean(jax.nn.sigmoid(logits_joint)) + jnp.mean(jax.nn.sigmoid(logits_marginal)) - 1.0
    return gap**2


def repair(theta: jax.Array, shift: int = 1) -> jax.Array:
    """Independent partners for a batch: θ rolled ``shift`` places along the batch axis, ``(n, d)``."""
    return jnp.roll(theta, shift, axis=0)


def estimator_loss(estimator, theta: jax.Array, x: jax.Array, balance: float = 0.0, num_negatives: int = 1,
                   ratio_weighting: float = 0.0) -> jax.Array:
    """AALR loss (plus ``balance`` × BNRE penalty) of a ratio estimator on a batch.

    The observations are embedded once and shared by the dependent and independent pairs.

    Args:
        estimator: a :class:`aalr_jax.nn.RatioEstimator`.
        theta: ``(n, d)``.
        x: ``(n, *x_shape)``.
        balance: λ of the balanced term; 0 gives plain AALR.
        num_negatives: K independent partners per x (θ rolled by 1..K; K < n, static).
        ratio_weighting: α of the ratio weights (0: plain cross-entropy; static).
    """
    features = estimator.embed(x)
    logits_joint = estimator.head(theta, features)
    # (K·n, d) partners and their x's features; K = 1 is the plain rolled batch
    partners = jnp.concatenate([repair(theta, k) for k in range(1, num_negatives + 1)])
    logits_marginal = estimator.head(partners, jnp.concatenate([features] * num_negatives, axis=-2))
    loss = aalr_loss(logits_joint, logits_marginal, ratio_weighting)
    return loss + balance * balance_penalty(logits_joint, logits_marginal)
