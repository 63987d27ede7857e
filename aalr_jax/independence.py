r"""An independence proposal built from the warm-up of all chains, mixed into RWMH.

After warm-up every chain has visited the posterior and adapted its own covariance
``Σ_c = L_c L_cᵀ``. Its late warm-up positions ``p`` (the last one and, when there are fewer than
``K`` chains, up to 9 more, 5 steps apart) are rough posterior draws. From ``K`` of them, picked at
random, we build a kernel density estimate with a broad "defensive" component (Hesterberg 1995),

    g(u) = (1 − β)/K Σ_k N(u; p_k, h² Σ_{c(k)}) + β N(u; p̄, 4 S),

where ``c(k)`` is the chain of point ``k``, ``h`` is Silverman's bandwidth for ``K`` kernels in
``d`` dimensions, ``p̄, S`` are the mean and covariance of all the points and ``β = 0.2``: the
broad component keeps ``π/g`` bounded in tails the kernels miss, so no chain gets stuck there.

Every post-warm-up step then proposes, with probability ``p``, ``u' ~ g`` (an independence
Metropolis–Hastings move, accepted with probability ``min(1, π(u') g(u) / (π(u) g(u')))``) and
otherwise the chain's own random walk ``u' = u + ε L z`` (accepted with ``min(1, π(u') / π(u))``).
Each move is a Metropolis–Hastings kernel that leaves π invariant, and the choice between them does
not depend on the state, so their mixture leaves π invariant too; ``g`` is frozen before the first
kept draw, so the kept draws are an exact MCMC. ``log g`` of the current position is carried in the
state, so a step costs one ``log π`` and one ``log g`` (``K + 1`` Gaussians in ``d`` dimensions).

Why: a random walk moves a distance of order ``ε`` per step, so successive draws stay strongly
correlated, and a chain rarely crosses between separated modes. An accepted independence move
lands anywhere in the posterior, in any mode, so the chains jump between modes and also correct
mode weights that the initial resampling got wrong. A kernel density needs points in proportion
to the volume it covers, so :class:`aalr_jax.samplers.RWMH` makes these moves by default only up to
4 parameters (chosen on exact likelihoods, see benchmarks/README.md, "Choosing the sampler").

The step is a kernel in BlackJAX's shape, ``kernel(rng_key, state, logdensity_fn, step_size, chol)``
on :class:`MixtureState`; :class:`aalr_jax.samplers.RWMH` builds it after warm-up.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Mixture", "MixtureInfo", "MixtureState", "build_kernel", "fit", "init", "log_prob", "sample", "silverman_bandwidth"]


class Mixture(NamedTuple):
    """``K`` weighted Gaussians ``N(μ_k, C_k)`` in R^d, with ``C_k = L_k L_kᵀ``.

    For speed the quadratic forms are one matrix product: with ``v = u − center``,
    ``(u − μ_k)ᵀ C_k⁻¹ (u − μ_k) = φ(v)ᵀ w_k + v_kᵀ C_k⁻¹ v_k`` where ``φ(v) = (vec(v vᵀ), v)``,
    ``w_k = (vec(C_k⁻¹), −2 C_k⁻¹ v_k)`` and ``v_k = μ_k − center``; centring on the points' mean
    keeps the expansion's float32 cancellation small.

    Attributes:
        means: ``(K, d)``.
        chols: ``(K, d, d)`` the ``L_k``.
        log_weights: ``(K,)`` log mixture weights.
        cdf: ``(K,)`` their cumulative sum (for drawing a component; computed once, not per step).
        center: ``(d,)``.
        quad_weights: ``(d² + d, K)`` the ``w_k``.
        log_norms: ``(K,)`` ``log w_k − d/2 log 2π − log det L_k − v_kᵀ C_k⁻¹ v_k / 2``.
    """

    means: jax.Array
    chols: jax.Array
    log_weights: jax.Array
    cdf: jax.Array
    center: jax.Array
    quad_weights: jax.Array
    log_norms: jax.Array


def _features(v: jax.Array) -> jax.Array:
    """``φ(v) = (vec(v vᵀ), v)``, ``(..., d² + d)``."""
    outer = v[..., :, None] * v[..., None, :]
    return jnp.concatenate([outer.reshape(v.shape[:-1] + (-1,)), v], axis=-1)


class MixtureState(NamedTuple):
    """A chain's position, ``log π`` and ``log g`` there (same fields as BlackJAX's RW state, plus one)."""

    position: jax.Array
    logdensity: jax.Array
    log_proposal: jax.Array


def silverman_bandwidth(num_kernels: int, dim: int) -> float:
    """Silverman's rule for a Gaussian kernel scaled by the data's own covariance:
    ``h = (4 / (d + 2))^{1/(d+4)} K^{-1/(d+4)}`` (Silverman 1986, eq. 4.14)."""
    return (4.0 / (dim + 2)) ** (1.0 / (dim + 4)) * num_kernels ** (-1.0 / (dim + 4))


def fit(rng_key, points, chols, max_components: int, bandwidth: float | None, defensive: float, inflation: float) -> Mixture:
    """The kernel mixture of ``min(P, max_components)`` of the points, picked without replacement,
    plus one broad "defensive" Gaussian (weight ``defensive``, Hesterberg 1995): the points' own
    mean and covariance, scaled by ``inflation²``, so that ``π/g`` stays bounded in the tails.

    Args:
        rng_key: PRNG key for the choice of points.
        points: ``(P, d)`` late warm-up positions of the chains.
        chols: ``(P, d, d)`` Cholesky factors ``L_c`` of the metric of each point's chain, or
            ``(P, d)`` square roots of diagonal ones.
        max_components: ``K`` at most.
        bandwidth: ``h``; ``None``: :func:`silverman_bandwidth` of ``K`` kernels in ``d`` dimensions.
        defensive: weight of the broad component, in ``[0, 1)``.
        inflation: its scale relative to the points' spread.
    """
    num, dim = points.shape
    k = min(num, max_components)
    idx = jax.random.choice(rng_key, num, (k,), replace=False)
    chols = chols[idx] if chols.ndim == 3 else jax.vmap(jnp.diag)(chols[idx])
    if bandwidth is None:
        bandwidth = silverman_bandwidth(k, dim)
    mean = points.mean(axis=0)
    centred = points - mean
    cov = centred.T @ centred / max(num - 1, 1) + 1e-6 * jnp.eye(dim, dtype=points.dtype)
    means = jnp.concatenate([points[idx], mean[None]])
    chols = jnp.concatenate([bandwidth * chols, inflation * jnp.linalg.cholesky(cov)[None]])
    eye = jnp.eye(dim, dtype=points.dtype)
    inv = jax.vmap(lambda l: jax.scipy.linalg.solve_triangular(l, eye, lower=True))(chols)
    precisions = jnp.einsum("kji,kjl->kil", inv, inv)  # C_k⁻¹ = L_k⁻ᵀ L_k⁻¹
    offsets = means - mean
    pv = jnp.einsum("kij,kj->ki", precisions, offsets)
    quad_weights = jnp.concatenate([precisions.reshape(-1, dim * dim), -2.0 * pv], axis=-1).T
    log_det = jnp.sum(jnp.log(jnp.diagonal(chols, axis1=-2, axis2=-1)), axis=-1)
    log_broad = math.log(defensive) if defensive > 0 else -math.inf
    log_w = jnp.concatenate([jnp.full(k, math.log((1.0 - defensive) / k)), jnp.full(1, log_broad)])
    log_norms = log_w - 0.5 * dim * math.log(2 * math.pi) - log_det - 0.5 * jnp.sum(pv * offsets, axis=-1)
    return Mixture(means, chols, log_w, jnp.cumsum(jnp.exp(log_w)), mean, quad_weights, log_norms)


def log_prob(mixture: Mixture, u: jax.Array) -> jax.Array:
    """``log g(u)`` for ``u: (..., d)``."""
    quad = _features(u - mixture.center) @ mixture.quad_weights
    return jax.nn.logsumexp(mixture.log_norms - 0.5 * quad, axis=-1)


def sample(mixture: Mixture, v: jax.Array, z: jax.Array) -> jax.Array:
    """One draw of ``g`` from ``v ~ U(0, 1)`` (picks the component by inverting the weights'
    cumulative sum) and a standard normal ``z: (d,)``: ``μ_k + L_k z``."""
    cdf = mixture.cdf
    k = jnp.minimum(jnp.searchsorted(cdf, v * cdf[-1], side="right"), cdf.shape[0] - 1)
    return mixture.means[k] + mixture.chols[k] @ z


def init(state, mixture: Mixture) -> MixtureState:
    """Extend a BlackJAX RW state (``position``, ``logdensity``) with ``log g(position)``."""
    return MixtureState(state.position, state.logdensity, log_prob(mixture, state.position))


class MixtureInfo(NamedTuple):
    """What one step of :func:`build_kernel` reports.

    Attributes:
        acceptance_rate: ``()`` Metropolis–Hastings acceptance probability of the proposal.
        is_independence_move: ``()`` bool, the proposal came from ``g`` (else from the random walk).
    """

    acceptance_rate: jax.Array
    is_independence_move: jax.Array


def build_kernel(mixture: Mixture, prob: float) -> Callable:
    """``kernel(rng_key, state, logdensity_fn, step_size, chol) -> (MixtureState, MixtureInfo)``.

    With probability ``prob`` an independence move from ``mixture``, else the random walk
    ``u + step_size · chol z`` (``chol``: ``(d, d)`` or ``(d,)`` for a diagonal metric).
    """

    def kernel(rng_key, state: MixtureState, logdensity_fn: Callable, step_size, chol):
        key_pick, key_z, key_accept = jax.random.split(rng_key, 3)
        z = jax.random.normal(key_z, state.position.shape, state.position.dtype)
        # one uniform both chooses the move (v < prob) and, given an independence move, the
        # component (v / prob is then uniform on [0, 1))
        v = jax.random.uniform(key_pick)
        independent = v < prob
        walk = state.position + step_size * (chol @ z if chol.ndim == 2 else chol * z)
        proposal = jnp.where(independent, sample(mixture, jnp.minimum(v / prob, 1.0), z), walk)
        logdensity = logdensity_fn(proposal)
        log_proposal = log_prob(mixture, proposal)
        log_ratio = logdensity - state.logdensity + jnp.where(independent, state.log_proposal - log_proposal, 0.0)
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accept = jax.random.uniform(key_accept) < accept_prob
        new = MixtureState(proposal, logdensity, log_proposal)
        state = jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, state)
        return state, MixtureInfo(accept_prob, independent)

    return kernel
