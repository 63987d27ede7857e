r"""Bernoulli GLM (sbibm v1.1.0, Lueckmann et al. 2021; after Lueckmann et al. 2017).

A neuron's spike train over 100 time bins, driven by a fixed white-noise stimulus through a
linear filter. θ = (offset, 9 filter coefficients) ∈ R^10.

* prior: Gaussian ``θ ~ N(0, B⁻¹)`` with precision ``B`` (smooth filters are favoured by a penalty
  on second differences):

  .. math::  B = \begin{pmatrix} 0.5 & 0 \\ 0 & F^\top F \end{pmatrix},\quad
             F = D^2 + \mathrm{diag}\bigl(\sqrt{j/9}\bigr)_{j=0..8},\quad D = I_9 - (\text{sub-diagonal of ones});

* simulator: with the fixed design matrix ``X (100, 10)`` (a column of ones, then the stimulus
  ``I`` and its delays: ``X[t, 1+j] = I[t-j]`` for ``t ≥ j``, else 0),

  .. math::  ψ = Xθ,\quad y_t \sim \mathrm{Bernoulli}(σ(ψ_t))\ \text{independently},\quad t = 1..100,

  and the output is the 10 sufficient statistics ``x = Xᵀy`` (spike count and spike-triggered
  sums). sbibm computes them as ``[Σ y, conv1d(y, I, padding=8)[-9:]]``, which equals ``Xᵀy``
  (checked in the tests against sbibm's stored observation). :mod:`aalr_jax.tasks.bernoulli_glm_raw`
  returns ``y`` itself.

``X`` and ``I`` (sbibm's ``design_matrix.pt`` and ``stimulus_I.pt``; ``I ~ N(0, 1)`` drawn with seed
42) are stored in ``aalr_jax/tasks/data/bernoulli_glm.npz`` (see the README there).

Likelihood. ``log p(y|θ) = Σ_t [y_t ψ_t - log(1 + e^{ψ_t})] = θᵀ(Xᵀy) - Σ_t softplus(ψ_t)``,
a function of ``Xᵀy`` only. For this continuous stimulus the map ``y ↦ Xᵀy`` is one-to-one
(almost surely), so :func:`log_likelihood` ``θᵀx - Σ_t softplus((Xθ)_t)`` is the exact
``log p(x|θ)`` for every ``x`` the simulator produces (for other ``x`` it is the same formula, not
``-inf``). The posterior is log-concave and is the same for ``x = Xᵀy`` and for ``y``.

Reference posterior: NUTS on this exact likelihood (:func:`aalr_jax.sampling.sample_posterior`
with an ``ExactLikelihood``). sbibm uses Pólya-Gamma Gibbs sampling instead; the target is the same.

Parameters. Every θ ∈ R^10 is in the prior's support; a θ of the wrong shape raises ``ValueError``.

Default observation: sbibm observation 1 (numbers below, copied from
``sbibm/tasks/bernoulli_glm/files/num_observation_1``; sbibm is MIT-licensed, © 2020 Lueckmann,
Boelts, Greenberg, Gonçalves, Macke).

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import functools
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from aalr_jax.types import ExactLikelihood
from aalr_jax.tasks._common import check_theta, nuts_reference
from aalr_jax.tasks.base import Task

__all__ = [
    "make",
    "simulator",
    "simulate_spikes",
    "log_likelihood",
    "reference_posterior",
    "prior_precision",
    "constants",
]

DIM = 10
NUM_BINS = 100
LABELS = tuple(f"parameter_{i + 1}" for i in range(DIM))

# sbibm v1.1.0, bernoulli_glm, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array(
    [1.215716, 2.1386335, 3.6156292, 3.3703978, 0.3342961,
     -1.5749966, -2.4357948, -2.1009881, -1.1669482, 0.3189116],
    dtype=np.float32,
)  # fmt: skip
OBSERVATION = np.array(
    [56.0, 3.32306, 14.356438, 11.104893, -4.167525,
     -18.507809, -21.917496, -9.553517, -0.357257, -5.497825],
    dtype=np.float32,
)  # fmt: skip
# The raw spike train behind it (observation_raw.csv), one character per bin.
OBSERVATION_RAW_BITS = (
    "1101111111100000011111110001110111100000111100001110001111001100011111001110000000111000111110000111"
)
OBSERVATION_RAW = np.array([float(c) for c in OBSERVATION_RAW_BITS], dtype=np.float32)


@functools.lru_cache(maxsize=None)
def constants() -> dict:
    """sbibm's ``design_matrix (100, 10)`` and ``stimulus_I (100,)`` (float32 NumPy, read once)."""
    path = importlib.resources.files("aalr_jax.tasks").joinpath("data/bernoulli_glm.npz")
    with path.open("rb") as f, np.load(f) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def prior_precision() -> np.ndarray:
    """The prior precision matrix ``B (10, 10)`` (float64; see the module docstring)."""
    m = DIM - 1
    d = np.eye(m) - np.eye(m, k=-1)
    f = d @ d + np.diag(np.sqrt(np.arange(m) / m))
    b = np.zeros((DIM, DIM))
    b[0, 0] = 0.5
    b[1:, 1:] = f.T @ f
    return b


def prior() -> dist.Distribution:
    """``N(0, B⁻¹)`` as a numpyro distribution with event shape ``(10,)``."""
    return dist.MultivariateNormal(jnp.zeros(DIM), precision_matrix=jnp.asarray(prior_precision(), jnp.float32))


def _design() -> jax.Array:
    return jnp.asarray(constants()["design_matrix"], jnp.float32)


def simulate_spikes(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One spike train ``y: (100,)`` of 0./1. for ``theta: (10,)``: ``y_t ~ Bernoulli(σ((Xθ)_t))``."""
    psi = _design() @ check_theta(theta, DIM, "bernoulli_glm")
    return (jax.random.uniform(rng_key, psi.shape) < jax.nn.sigmoid(psi)).astype(jnp.float32)


def summary(y: jax.Array) -> jax.Array:
    """Sufficient statistics ``Xᵀy: (..., 10)`` of spike trains ``y: (..., 100)``."""
    return jnp.asarray(y, jnp.float32) @ _design()


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x = Xᵀy: (10,)`` for ``theta: (10,)``."""
    return summary(simulate_spikes(rng_key, theta))


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``θᵀx - Σ_t softplus((Xθ)_t)`` for ``theta: (10,)``, ``x = Xᵀy: (10,)``; a scalar."""
    theta = check_theta(theta, DIM, "bernoulli_glm")
    return jnp.dot(theta, jnp.asarray(x, jnp.float32)) - jnp.sum(jax.nn.softplus(_design() @ theta))


_LIKELIHOOD = ExactLikelihood(log_likelihood, (DIM,))


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int, **kwargs) -> jax.Array:
    """Posterior samples ``(num_samples, 10)`` for ``x_obs = Xᵀy: (10,)`` by NUTS on the exact likelihood.

    Keyword arguments go to :func:`aalr_jax.tasks._common.nuts_reference` (``num_chains=10``,
    ``num_warmup=1000``, then those of :func:`aalr_jax.sampling.sample_posterior`).
    """
    x_obs = jnp.asarray(x_obs, jnp.float32)
    if x_obs.shape != (DIM,):
        raise ValueError(f"bernoulli_glm: x_obs must have shape ({DIM},), got {x_obs.shape}")
    return nuts_reference(rng_key, _LIKELIHOOD, prior(), x_obs, num_samples, **kwargs)


def make() -> Task:
    """The sbibm Bernoulli-GLM task (sufficient statistics) with sbibm observation 1."""
    return Task(
        name="bernoulli_glm",
        prior=prior(),
        simulator=simulator,
        x_shape=(DIM,),
        parameter_labels=LABELS,
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "Bernoulli GLM (sbibm v1.1.0): θ ∈ R^10 (offset, 9 filter weights) ~ N(0, B⁻¹) with a "
            "smoothness precision B; 100 bins y_t ~ Bernoulli(σ((Xθ)_t)) for a fixed white-noise "
            "design X; x = Xᵀy (spike count, spike-triggered sums). Exact likelihood; reference by "
            "NUTS. Default observation: sbibm observation 1."
        ),
    )
