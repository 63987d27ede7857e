r"""The AALR (NRE-A) classification loss on logits, its ratio weights, the balanced (BNRE) penalty
and the re-pairing that makes independent pairs: pure functions of logits and arrays.

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

:class:`LossConfig` (α, λ, K) selects the training objective, :func:`objective` assembles it from
the pieces, and :func:`plain_loss` is the unweighted one-negative loss every run is compared on.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aalr_jax.validation import check_number, positive_int

__all__ = ["DEFAULT_RATIO_WEIGHTING", "LossConfig", "aalr_loss", "balanced_penalty", "negatives", "objective",
           "pair_logits", "plain_loss", "ratio_weights", "repair"]

#: α of :class:`LossConfig` (the default of :func:`aalr_jax.train.fit`): chosen on fresh
#: observations, see benchmarks/README.md "Choosing the defaults".
DEFAULT_RATIO_WEIGHTING = 0.5
WEIGHT_LOGIT_CLIP = 12.0


class LossConfig(NamedTuple):
    """The training objective (static: it is closed over by the compiled epoch).

    Attributes:
        ratio_weighting: α in [0, 1] of :func:`ratio_weights`; 0 is the plain cross-entropy.
        balance: λ ≥ 0 of the balanced penalty; 0 is plain AALR, 100 the BNRE paper's value.
        num_negatives: K ≥ 1 independent partners per x (θ of K other simulations of the batch).
    """

    ratio_weighting: float = DEFAULT_RATIO_WEIGHTING
    balance: float = 0.0
    num_negatives: int = 1

    def validate(self) -> "LossConfig":
        """A copy with Python numbers, or an error naming the field, what it expects and what it got."""
        return LossConfig(
            ratio_weighting=check_number("ratio_weighting", self.ratio_weighting, low=0.0, high=1.0),
            balance=check_number("balance", self.balance, low=0.0),
            num_negatives=positive_int("num_negatives", self.num_negatives),
        )


def ratio_weights(logits: jax.Array, ratio_weighting: float) -> jax.Array:
    """``(1 + exp(min(f, 12)))^α`` with no gradient, the shape of ``logits``."""
    clipped = jnp.minimum(jax.lax.stop_gradient(logits), WEIGHT_LOGIT_CLIP)
    return jnp.exp(ratio_weighting * jax.nn.softplus(clipped))


def aalr_loss(logits_joint: jax.Array, logits_marginal: jax.Array, ratio_weighting: float = 0.0) -> jax.Array:
    """Binary cross-entropy on logits, each class averaged over its pairs: ``()``.

    ``mean softplus(-f_joint) + mean softplus(f_marginal)`` for ``logits_joint: (n,)`` and
    ``logits_marginal: (m,)``; with ``ratio_weighting = α > 0`` (static) every pair's term is
    multiplied by :func:`ratio_weights` of its logit.
    """
    joint, marginal = jax.nn.softplus(-logits_joint), jax.nn.softplus(logits_marginal)
    if ratio_weighting:
        joint = joint * ratio_weights(logits_joint, ratio_weighting)
        marginal = marginal * ratio_weights(logits_marginal, ratio_weighting)
    return jnp.mean(joint) + jnp.mean(marginal)


def balanced_penalty(logits_joint: jax.Array, logits_marginal: jax.Array) -> jax.Array:
    """``(mean σ(f_joint) + mean σ(f_marginal) - 1)²``: ``()``; zero for a balanced classifier."""
    gap = jnp.mean(jax.nn.sigmoid(logits_joint)) + jnp.mean(jax.nn.sigmoid(logits_marginal)) - 1.0
    return gap**2


def repair(theta: jax.Array, shift: int = 1) -> jax.Array:
    """θ rolled ``shift`` places along the batch axis, ``(n, d)``: x_i meets θ_{i-shift} (cyclic)."""
    return jnp.roll(theta, shift, axis=0)


def negatives(theta: jax.Array, num_negatives: int = 1) -> jax.Array:
    """Independent partners of a batch, ``(K·n, d)``: :func:`repair` by 1, ..., K stacked in that order
    (K = ``num_negatives`` < n, static), so rows ``k·n .. (k+1)·n`` pair x_i with θ_{i-k-1}."""
    return jnp.concatenate([repair(theta, k) for k in range(1, num_negatives + 1)])


def pair_logits(estimator, theta: jax.Array, x: jax.Array, num_negatives: int = 1) -> tuple[jax.Array, jax.Array]:
    """Logits of a batch's dependent pairs ``(n,)`` and of its :func:`negatives` ``(K·n,)``.

    The observations are embedded once and shared by both kinds of pairs.

    Args:
        estimator: anything with ``embed`` and ``head`` (:class:`aalr_jax.types.RatioModel`).
        theta: ``(n, d)``.
        x: ``(n, *x_shape)``.
        num_negatives: K (static).
    """
    features = estimator.embed(x)
    logits_joint = estimator.head(theta, features)
    logits_marginal = estimator.head(negatives(theta, num_negatives),
                                     jnp.concatenate([features] * num_negatives, axis=-2))
    return logits_joint, logits_marginal


def objective(logits_joint: jax.Array, logits_marginal: jax.Array, config: LossConfig) -> jax.Array:
    """The training objective ``aalr_loss(α) + λ · balanced_penalty`` of :func:`pair_logits`: ``()``."""
    loss = aalr_loss(logits_joint, logits_marginal, config.ratio_weighting)
    return loss + config.balance * balanced_penalty(logits_joint, logits_marginal)


def plain_loss(estimator, theta: jax.Array, x: jax.Array) -> jax.Array:
    """The unweighted AALR loss with one negative (θ rolled by one) of a batch: ``()``."""
    return aalr_loss(*pair_logits(estimator, theta, x))
