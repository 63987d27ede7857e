r"""SLCP: simple likelihood, complex posterior (sbibm v1.1.0; the tractable problem of
Hermans et al. 2020, after Papamakarios et al. 2019).

Definition, θ ∈ [-3, 3]^5 and x ∈ R^8:

* prior ``θ ~ U(-3, 3)^5``;
* simulator: 4 i.i.d. draws ``x_j ~ N(m, S)``, ``j = 1..4``, with ``m = (θ_1, θ_2)``,
  ``s_1 = θ_3²``, ``s_2 = θ_4²``, ``ρ = tanh(θ_5)`` and

  .. math::  S = \begin{pmatrix} s_1^2 + ε & ρ s_1 s_2 \\ ρ s_1 s_2 & s_2^2 + ε \end{pmatrix},
             \quad ε = 10^{-6}

  (sbibm adds ε to keep S positive definite when θ_3 or θ_4 is 0); flattened as
  ``x = (x_{1,1}, x_{1,2}, x_{2,1}, x_{2,2}, ..., x_{4,2})`` like sbibm.

The likelihood ``Σ_j log N(x_j; m, S)`` is exact (:func:`log_likelihood`). The posterior has
four modes (the signs of θ_3 and θ_4).

Reference posterior (:func:`reference_posterior`): exact-likelihood MCMC with our sampler,
``sample_posterior(ExactLikelihood(log_likelihood), method="hmc")`` with 100 chains started by
sampling-importance-resampling from 10⁴ prior draws, 1000 warm-up steps and every 3rd step kept
(split R-hat ≤ 1.03 and bulk ESS ≥ 3000 per coordinate of ``(θ_1, θ_2, |θ_3|, |θ_4|, θ_5)`` for
10⁴ draws at the default observation). An HMC chain does not cross between the modes (θ_3 = 0
and θ_4 = 0 are valleys of the likelihood), so the weights of the modes would be those of the SIR
start. They are exactly 1/4 each: the likelihood depends on θ_3 and θ_4 only through θ_3², θ_4² and
the prior is symmetric, so the posterior is invariant under ``θ_3 → −θ_3`` and ``θ_4 → −θ_4``.
Hence each draw gets independent uniformly random signs of θ_3 and θ_4; the flipped draws are
still draws of the posterior, and the MCMC only has to get the folded distribution of
``(θ_1, θ_2, |θ_3|, |θ_4|, θ_5)`` right, which every chain targets in its own mode. Checked
against self-normalised importance sampling from the prior in the tests.

Learned ratios (:class:`SignSymmetric`, :func:`random_signs`). A classifier trained on simulations
learns the symmetry only approximately: at 10⁵ simulations (the package's training defaults) its
log-ratio at the four sign images of a parameter differs by 0.3–1.2 nats, so the learned modes
weigh 0.20–0.31 instead of ¼, and its valleys at θ_3 = 0 and θ_4 = 0 are about 10 nats deep (the
exact likelihood's are impassable), so a few HMC chains cross them, slowly, and the chains form one
cluster with R-hat ≈ 1.65. :class:`SignSymmetric` averages the log-ratio over the four images,
which makes the learned posterior exactly symmetric; :func:`random_signs` folds its chains and
gives every draw random signs, as the reference does, so that every chain visits the four modes
(benchmarks/README.md, "SLCP: finding the four modes").

Default observation: the paper's ``θ* = (0.7, -2.9, -1.0, -0.9, 0.6)``, simulated once with
``simulator(PRNGKey(1), θ*)`` under jax 0.10.2 and stored as :data:`OBSERVATION`, so that it does
not change with JAX's random-number generator. This is not one of sbibm's observations.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks.base import Task
from aalr_jax.types import ExactLikelihood

SIGNS = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)  # the sign modes of (θ_3, θ_4)

__all__ = ["PRIOR", "SIGNS", "SignSymmetric", "log_likelihood", "make", "random_signs", "reference_posterior",
           "simulator"]

NUM_POINTS = 4
EPS = 1e-6
PRIOR = box_uniform(-3.0, 3.0 * np.ones(5))  # one object: the sampler's compiled program is keyed on it
TRUE_THETA = np.array([0.7, -2.9, -1.0, -0.9, 0.6], dtype=np.float32)  # Hermans et al. 2020
OBSERVATION = np.array(  # simulator(PRNGKey(1), TRUE_THETA), jax 0.10.2
    [0.54556274, -2.9093032, 0.56401944, -3.0650856, 1.9666679, -2.2476587, 2.8415613, -1.283296],
    dtype=np.float32,
)


def _gaussian(theta: jax.Array):
    """Mean ``(2,)``, covariance entries ``a = S11, b = S12, d = S22`` and ``det S``, from ``theta: (5,)``."""
    theta = jnp.asarray(theta)
    s1, s2 = theta[2] ** 2, theta[3] ** 2
    rho = jnp.tanh(theta[4])
    a, d, b = s1**2 + EPS, s2**2 + EPS, rho * s1 * s2
    # det = a d - b² written without cancellation (1 - tanh² = 1 / cosh²).
    det = (s1 * s2 / jnp.cosh(theta[4])) ** 2 + EPS * (s1**2 + s2**2) + EPS**2
    return theta[:2], a, b, d, det


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (8,)`` (4 points of R², flattened point by point) for ``theta: (5,)``."""
    m, a, b, _, det = _gaussian(theta)
    z = jax.random.normal(rng_key, (NUM_POINTS, 2))
    l11 = jnp.sqrt(a)  # Cholesky factor of S
    x1 = m[0] + l11 * z[:, 0]
    x2 = m[1] + (b / l11) * z[:, 0] + jnp.sqrt(det / a) * z[:, 1]
    return jnp.stack([x1, x2], axis=-1).reshape(2 * NUM_POINTS)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(x|θ) = Σ_j log N(x_j; m, S)`` for ``theta: (5,)``, ``x: (8,)``; a scalar."""
    m, a, b, d, det = _gaussian(theta)
    u = jnp.asarray(x).reshape(NUM_POINTS, 2) - m
    quad = (d * u[:, 0] ** 2 - 2 * b * u[:, 0] * u[:, 1] + a * u[:, 1] ** 2) / det
    return -0.5 * jnp.sum(quad) - NUM_POINTS * (math.log(2 * math.pi) + 0.5 * jnp.log(det))


def reference_posterior(
    rng_key: jax.Array,
    x_obs: jax.Array,
    num_samples: int,
    *,
    num_chains: int = 100,
    num_warmup: int = 1000,
    thin: int = 3,
) -> jax.Array:
    """Posterior samples ``(num_samples, 5)`` for ``x_obs: (8,)`` (see the module docstring).

    HMC on the exact likelihood with ``num_chains`` chains (``ceil(num_samples / num_chains)``
    kept draws each, every ``thin``-th step after ``num_warmup`` warm-up steps), then independent
    random signs of θ_3 and θ_4. Not jit-able (it calls :func:`aalr_jax.sampling.sample_posterior`,
    which compiles its own program).
    """
    from aalr_jax.sampling import sample_posterior  # lazy: keeps task import light

    x_obs = jnp.asarray(x_obs, jnp.float32)
    if x_obs.shape != (2 * NUM_POINTS,):
        raise ValueError(f"slcp reference_posterior: x_obs must have shape (8,), got {x_obs.shape}")
    key_mcmc, key_sign = jax.random.split(rng_key)
    prior = PRIOR
    model = ExactLikelihood(log_likelihood, (2 * NUM_POINTS,))
    out = sample_posterior(key_mcmc, model, prior, x_obs, method="hmc", num_samples=num_samples,
                           num_chains=num_chains, num_warmup=num_warmup, thin=thin)  # fmt: skip
    signs = jnp.where(jax.random.bernoulli(key_sign, 0.5, (num_samples, 2)), 1.0, -1.0)
    return out.samples.at[:, 2:4].multiply(signs)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["estimator"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SignSymmetric:
    """A ratio estimator averaged over the sign flips of θ_3 and θ_4.

    ``log r̃(x|θ) = ¼ Σ_s log r̂(x|sθ)`` over the four sign images ``sθ`` (:data:`SIGNS`). The true
    ratio is invariant under these flips, so averaging removes the part of the estimator's error
    that breaks the symmetry, and the posterior it gives is exactly symmetric: its four modes
    weigh ¼ each. It has the ``embed``/``head`` interface of the estimator it wraps, so
    ``sample_posterior`` and ``aalr_jax.posterior`` take it; ``standardization`` is the wrapped
    estimator's (for the out-of-training check).
    """

    estimator: object

    def embed(self, x):
        return self.estimator.embed(x)

    def head(self, theta, features):
        theta = jnp.asarray(theta, jnp.float32)
        signs = jnp.concatenate([jnp.ones((4, 2)), jnp.asarray(SIGNS), jnp.ones((4, 1))], axis=1)  # (4, 5)
        images = theta[..., None, :] * signs  # (..., 4, 5)
        return jnp.mean(self.estimator.head(images, jnp.asarray(features)[..., None, :]), axis=-1)

    def log_ratio(self, theta, x):
        return self.head(theta, self.embed(x))

    @property
    def x_shape(self) -> tuple:
        return tuple(self.estimator.x_shape)

    @property
    def theta_dim(self) -> int:
        return 5

    @property
    def standardization(self):
        return getattr(self.estimator, "standardization", None)


def random_signs(rng_key, posterior):
    """Draws of a sign-symmetric posterior with random signs of θ_3 and θ_4.

    For a posterior invariant under ``θ_3 → −θ_3`` and ``θ_4 → −θ_4`` (the exact one, or that of
    :class:`SignSymmetric`), a chain folded onto ``(|θ_3|, |θ_4|)`` is a chain of the folded
    posterior whether or not it crossed between modes; giving its draws random signs makes it a
    chain of the posterior that visits the four modes (what :func:`reference_posterior` does to its
    draws). The signs are stratified: each chain's ``S`` draws take each of the four sign patterns
    ``⌊S/4⌋`` times (the ``S mod 4`` others from a random offset on), in a uniformly random order,
    so every chain, and the samples when ``S`` is a multiple of 4 and all are kept, put exactly ¼
    into each mode. Where two modes touch (a
    θ_3 or θ_4 near 0) a chain also moves between them freely, so every chain is exchangeable with
    every other and the chains' R-hat measures their mixing within the modes. Takes and returns a
    :class:`~aalr_jax.chains.PosteriorSamples` (batched or not) with ``chains``, ``samples``,
    ``rhat`` and ``ess`` replaced.
    """
    from aalr_jax.chains import _chain_statistics  # lazy: keeps task import light

    chains = jnp.asarray(posterior.chains)
    num_chains, draws, dim = chains.shape[-3:]
    # each chain's draws take the four sign patterns equally often, in random order; the S mod 4
    # draws left over take patterns from a random offset on
    key_order, key_offset = jax.random.split(rng_key)
    order = jnp.argsort(jax.random.uniform(key_order, chains.shape[:-1]), axis=-1)
    offset = jax.random.randint(key_offset, chains.shape[:-2] + (1,), 0, 4)
    signs = jnp.asarray(SIGNS)[(order + offset) % 4]
    signed = chains.at[..., 2:4].set(jnp.abs(chains[..., 2:4]) * signs)
    num_samples = posterior.samples.shape[-2]
    samples = jnp.swapaxes(signed, -3, -2).reshape(*chains.shape[:-3], draws * num_chains, dim)
    samples = samples[..., :num_samples, :]
    stats = _chain_statistics if chains.ndim == 3 else jax.vmap(_chain_statistics)
    rhat, ess = stats(signed)
    return posterior._replace(samples=samples, chains=signed, rhat=rhat, ess=ess)


def make() -> Task:
    """The SLCP task; default observation: the paper's θ* simulated with seed 1 (stored)."""
    return Task(
        name="slcp",
        prior=PRIOR,
        simulator=simulator,
        x_shape=(2 * NUM_POINTS,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(5)),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "SLCP (sbibm v1.1.0; Hermans et al. 2020): θ ~ U(-3,3)^5; x = 4 i.i.d. 2-D Gaussian "
            "draws with mean (θ1, θ2), std (θ3², θ4²), correlation tanh(θ5) (+1e-6 on the "
            "covariance diagonal, as sbibm). Four-mode posterior; reference posterior by HMC on the "
            "exact likelihood with symmetrised signs of θ3, θ4. Default observation: "
            "θ* = (0.7, -2.9, -1.0, -0.9, 0.6) simulated with observation_seed=1 (stored)."
        ),
    )
