r"""Bernoulli GLM, raw spike trains (sbibm v1.1.0 ``bernoulli_glm_raw``, Lueckmann et al. 2021).

The model of :mod:`aalr_jax.tasks.bernoulli_glm` (same prior ``N(0, B⁻¹)`` on θ ∈ R^10, same
design matrix ``X``), but the observation is the spike train itself, ``x = y ∈ {0, 1}^100`` with
``y_t ~ Bernoulli(σ((Xθ)_t))`` independently, instead of its sufficient statistics ``Xᵀy``.

Likelihood (exact): ``log p(y|θ) = Σ_t [y_t ψ_t - softplus(ψ_t)]``, ``ψ = Xθ``; ``-inf`` unless every
``y_t`` is 0 or 1. The posterior depends on ``y`` only through ``Xᵀy``, so
:func:`reference_posterior` is :func:`aalr_jax.tasks.bernoulli_glm.reference_posterior` (NUTS on
the exact likelihood) applied to ``Xᵀy``; it equals sbibm's reference for the same observation.

Parameters. Every θ ∈ R^10 is in the prior's support; a θ of the wrong shape raises ``ValueError``.

Default observation: sbibm observation 1 (``observation_raw.csv``, stored as a 0/1 string in
:data:`aalr_jax.tasks.bernoulli_glm.OBSERVATION_RAW_BITS`), generated from the same θ as the
``bernoulli_glm`` observation 1 (sbibm is MIT-licensed, © 2020 Lueckmann, Boelts, Greenberg,
Gonçalves, Macke).

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aalr_jax.tasks import bernoulli_glm as glm
from aalr_jax.tasks.base import Task

__all__ = ["make", "simulator", "log_likelihood", "reference_posterior"]


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One spike train ``x: (100,)`` of 0./1. for ``theta: (10,)``."""
    return glm.simulate_spikes(rng_key, theta)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(y|θ)`` for ``theta: (10,)``, ``x = y: (100,)``; ``-inf`` if some ``y_t ∉ {0, 1}``."""
    y = jnp.asarray(x, jnp.float32)
    if y.shape != (glm.NUM_BINS,):
        raise ValueError(f"bernoulli_glm_raw: x must have shape ({glm.NUM_BINS},), got {y.shape}")
    ll = glm.log_likelihood(theta, glm.summary(y))
    binary = jnp.all((y == 0.0) | (y == 1.0))
    return jnp.where(binary, ll, -jnp.inf)


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int, **kwargs) -> jax.Array:
    """Posterior samples ``(num_samples, 10)`` for a spike train ``x_obs: (100,)`` (NUTS, exact likelihood)."""
    y = jnp.asarray(x_obs, jnp.float32)
    if y.shape != (glm.NUM_BINS,):
        raise ValueError(f"bernoulli_glm_raw: x_obs must have shape ({glm.NUM_BINS},), got {y.shape}")
    return glm.reference_posterior(rng_key, glm.summary(y), num_samples, **kwargs)


def make() -> Task:
    """The sbibm ``bernoulli_glm_raw`` task with sbibm observation 1 (raw spike train)."""
    return Task(
        name="bernoulli_glm_raw",
        prior=glm.prior(),
        simulator=simulator,
        x_shape=(glm.NUM_BINS,),
        parameter_labels=glm.LABELS,
        true_theta=glm.TRUE_THETA,
        observation_seed=1,
        observation=glm.OBSERVATION_RAW,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "Bernoulli GLM raw (sbibm v1.1.0): the Bernoulli GLM with the 100-bin spike train "
            "y_t ~ Bernoulli(σ((Xθ)_t)) as observation. Exact likelihood; reference by NUTS (on the "
            "sufficient statistics Xᵀy). Default observation: sbibm observation 1."
        ),
    )
