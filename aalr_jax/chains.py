r"""The driver: many adapted chains, for many observations, in one compiled program.

For one observation, ``C`` chains start from ratio-weighted resampling of prior draws
(:func:`initial_positions`), adapt one by one (:mod:`aalr_jax.adaptation`), and then keep
``S`` draws each, one every ``thin`` steps, with the sampler's kernel frozen
(:func:`run_chains`, vmapped over chains inside ``lax.scan``). :func:`sample_batch` vmaps that over
the ``k`` observations of a batched :class:`~aalr_jax.ratio_posterior.Posterior` under one
``jax.jit``: the posterior (estimator parameters, prior parameters, observations, features) is a
traced argument and only the sampler value and the :class:`RunSettings` are static, so new
observations of the same shape, a new estimator of the same architecture or another prior of the
same structure reuse the compiled program. Observation ``i`` uses the key ``fold_in(rng_key, i)``.

Devices: :func:`chain_mesh` arranges the ``D`` devices of a one-axis mesh (:mod:`aalr_jax.sharding`)
as a ``D_k × D_c`` grid (axes :data:`MESH_AXES`, ``D_k = gcd(k, D)``), so the flattened
``observations × chains`` axis lies in contiguous blocks of ``k·C/D`` chains (1 observation × 96
chains on 8 devices: 12 chains per device; 8 × 64: one observation per device). :func:`sample_batch`
constrains the initial positions and results to that layout and XLA's SPMD partitioner splits the
whole program; the only cross-device traffic is the pooled RWMH metric at each window's end
(a sum of ``(d, d)`` covariances over one observation's chains), the RWMH independence proposal
built once after warm-up from all chains' late positions, and R-hat/ESS at the end. Every random
key is derived from ``rng_key`` by the same splits whatever the layout, so a run on ``D`` devices
draws the same numbers as on one, up to rounding: XLA compiles a program per device shape whose
floating-point results may differ in the last bits (and sums in another order). Without warm-up
the draws agree to that rounding; adaptive warm-up (accept/reject feeding the step size) amplifies
it, as it would a 10⁻⁷ change of the starting points, so adapted runs on different device counts
agree in distribution rather than draw by draw.

Initial positions (``init="sir"``) are drawn without replacement (Gumbel top-k) from
``num_init_candidates`` prior draws weighted by the estimated ratio ``exp Σ_i f(θ, x_i)``: the
sampling-importance-resampling start of sbi, which puts chains into every mode they should visit.
The default is ``max(10⁴, 10·C)`` candidates for C chains (with as many candidates as chains every
candidate would be taken and the start would be the prior), chosen on two_moons with 10⁴ chains,
see benchmarks/README.md, "aalr_jax vs sbi NRE_A".
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aalr_jax import adaptation, priors, sharding

__all__ = [
    "MESH_AXES", "ChainResult", "PosteriorSamples", "RunSettings", "chain_mesh", "initial_positions", "interleave",
    "run_chains", "sample_batch",
]

MESH_AXES = ("observations", "chain_blocks")  # device-grid axes of sample_batch: observations, their chains


class ChainResult(NamedTuple):
    """Output of :func:`run_chains` for C chains of S kept draws in R^d (unconstrained space).

    Attributes:
        positions: ``(C, S, d)``.
        acceptance_rate: ``(C,)`` mean Metropolis acceptance probability of the kept steps.
        num_divergent: ``(C,)`` divergent transitions after warm-up (always 0 for RWMH).
        step_size: ``(C,)`` adapted step size.
    """

    positions: jax.Array
    acceptance_rate: jax.Array
    num_divergent: jax.Array
    step_size: jax.Array


class PosteriorSamples(NamedTuple):
    """Posterior samples with per-chain health; a leading ``(k,)`` axis when x_obs was batched.

    Attributes:
        samples: ``([k,] num_samples, d)`` draws of θ, interleaved across chains.
        chains: ``([k,] C, S, d)`` the same draws by chain (S = ceil(num_samples / C)).
        acceptance_rate: ``([k,] C)``.
        num_divergent: ``([k,] C)``.
        step_size: ``([k,] C)``.
        rhat: ``([k,] d)`` split R-hat over all chains (NaN with fewer than 4 draws per chain).
        ess: ``([k,] d)`` bulk effective sample size over all chains (NaN with one draw per chain).
        outside_training: ``([k,])`` bool NumPy array, the observation lies outside the estimator's
            training data (:mod:`aalr_jax.ood`).
        sampler: the resolved sampler value that ran (:mod:`aalr_jax.samplers`; a pytree without
            leaves).
        thin: steps per kept draw.
        num_warmup: warm-up steps per chain.
        num_chains: chains per observation.
    """

    samples: jax.Array
    chains: jax.Array
    acceptance_rate: jax.Array
    num_divergent: jax.Array
    step_size: jax.Array
    rhat: jax.Array
    ess: jax.Array
    outside_training: object = None
    sampler: object = None
    thin: int | None = None
    num_warmup: int | None = None
    num_chains: int | None = None


class RunSettings(NamedTuple):
    """Static settings of one :func:`sample_batch` call (validated by the caller).

    Attributes:
        num_chains: chains per observation.
        num_warmup: adaptation steps per chain.
        num_draws: kept draws per chain.
        thin: steps per kept draw.
        init: ``"sir"`` or ``"prior"``.
        num_init_candidates: prior draws that ``init`` chooses from (at least ``num_chains``).
    """

    num_chains: int
    num_warmup: int
    num_draws: int
    thin: int
    init: str
    num_init_candidates: int


def _draw_one_chain(rng_key, logdensity_fn, kernel, adapted: adaptation.AdaptedChain, num_draws: int, thin: int):
    """``num_draws`` kept draws, every ``thin``-th step, with the warm-up's parameters frozen."""

    def draw(state, key):
        def inner(state, k):
            return kernel(k, state, logdensity_fn, adapted.step_size, adapted.metric)

        state, info = jax.lax.scan(inner, state, jax.random.split(key, thin))
        return state, (state.position, info.acceptance_rate.mean(), info.is_divergent.sum())

    _, (positions, accept, divergent) = jax.lax.scan(draw, adapted.state, jax.random.split(rng_key, num_draws))
    return ChainResult(positions, jnp.nan_to_num(accept).mean(), divergent.sum(), adapted.step_size)


def run_chains(rng_key: jax.Array, logdensity_fn: Callable, initial_positions: jax.Array, sampler, *,
               num_warmup: int, num_draws: int, thin: int = 1) -> ChainResult:
    """Run ``C`` adapted chains on ``logdensity_fn: (d,) -> ()`` (vmapped, not jitted).

    Every chain adapts its own step size and metric (:mod:`aalr_jax.adaptation`); then
    ``sampler.after_warmup`` builds the kernel of the kept draws (RWMH: the independence proposal
    from all chains' warm-ups, shared by every chain).

    Args:
        rng_key: PRNG key.
        logdensity_fn: unnormalised log-density on R^d.
        initial_positions: ``(C, d)``.
        sampler: a resolved sampler value (:func:`aalr_jax.samplers.resolve_sampler`).
        num_warmup: adaptation steps per chain.
        num_draws: kept draws per chain.
        thin: steps per kept draw.

    Returns:
        :class:`ChainResult` with ``positions: (C, num_draws, d)``.
    """
    num = initial_positions.shape[0]
    chain_keys = jax.vmap(jax.random.split)(jax.random.split(rng_key, num))
    warmup = lambda k, p: adaptation.window_adaptation(k, logdensity_fn, p, sampler, num_warmup, sampler.num_recent(num))
    adapted = jax.vmap(warmup, axis_name=adaptation.CHAIN_AXIS)(chain_keys[:, 0], initial_positions)
    kernel, init_draws = sampler.after_warmup(jax.random.fold_in(rng_key, 1), adapted)

    def one(key, chain):
        chain = chain._replace(state=init_draws(chain.state))
        return _draw_one_chain(key, logdensity_fn, kernel, chain, num_draws, thin)

    return jax.vmap(one)(chain_keys[:, 1], adapted)


def initial_positions(rng_key, posterior, num_chains: int, *, init: str = "sir", num_candidates: int = 10_000):
    """``(num_chains, d)`` starting points in constrained space for one observation's ``posterior``.

    ``init="prior"``: the first prior draws; ``"sir"``: ``num_chains`` of ``num_candidates`` prior
    draws without replacement, with weights ``p(θ|x)/p(θ)`` (Gumbel top-k).
    """
    key_prior, key_pick = jax.random.split(rng_key)
    candidates = posterior.prior.sample(key_prior, (num_candidates,))
    if init == "prior":
        return candidates[:num_chains]
    log_weights = posterior.log_prob(candidates) - priors.log_prob(posterior.prior, candidates)
    log_weights = jnp.where(jnp.isfinite(log_weights), log_weights, -jnp.inf)
    _, idx = jax.lax.top_k(log_weights + jax.random.gumbel(key_pick, log_weights.shape), num_chains)
    return candidates[idx]


def _chain_statistics(chains: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(rhat, ess)``, each ``(d,)``, of ``chains: (C, S, d)``; NaN with too few draws per chain."""
    nan = jnp.full(chains.shape[-1:], jnp.nan)
    half = chains.shape[1] // 2
    split = jnp.concatenate([chains[:, :half], chains[:, half : 2 * half]], axis=0)
    # BlackJAX squeezes a single parameter's axis away: keep the documented (d,)
    rhat = blackjax.diagnostics.potential_scale_reduction(split, chain_axis=0, sample_axis=1).reshape(nan.shape) \
        if chains.shape[1] >= 4 else nan
    ess = blackjax.diagnostics.effective_sample_size(chains, chain_axis=0, sample_axis=1).reshape(nan.shape) \
        if chains.shape[1] >= 2 else nan
    return rhat, ess


def _start(rng_key, posterior, settings: RunSettings):
    """``(C, d)`` initial positions (constrained) of one observation's chains."""
    return initial_positions(rng_key, posterior, settings.num_chains, init=settings.init,
                             num_candidates=settings.num_init_candidates)


def _sample_one(rng_key, posterior, theta0, sampler, settings: RunSettings):
    result = run_chains(rng_key, posterior.unconstrained_logdensity, posterior.transform.inv(theta0), sampler,
                        num_warmup=settings.num_warmup, num_draws=settings.num_draws, thin=settings.thin)
    chains = posterior.transform(result.positions)
    return (chains, result.acceptance_rate, result.num_divergent, result.step_size, *_chain_statistics(chains))


def chain_mesh(mesh, num_observations: int, num_chains: int, *, explicit: bool = True):
    """The two-axis ``(observations, chains)`` mesh that lays ``k × C`` chains over ``mesh``.

    The ``D`` devices of the one-axis ``mesh`` form a ``D_k × D_c`` grid with ``D_k = gcd(k, D)``
    devices along the observations and ``D_c = D / D_k`` along each observation's chains, so the
    flattened ``observations × chains`` axis lies in contiguous blocks of ``k·C / D`` chains, one
    block per device. That needs ``D`` to divide ``k·C``: otherwise an explicit ``mesh`` raises a
    ``ValueError`` naming ``num_chains``, and the default (``explicit=False``, all devices) warns
    and uses ``gcd(k·C, D)`` of the devices (one device: ``None``).

    Args:
        mesh: a one-axis mesh from :func:`aalr_jax.sharding.resolve_mesh`, or ``None``.
        num_observations: ``k``.
        num_chains: ``C``.
        explicit: whether the caller named the mesh.

    Returns:
        A :class:`jax.sharding.Mesh` with axes :data:`MESH_AXES`, or ``None`` for one device.
    """
    if mesh is None:
        return None
    total, size = num_observations * num_chains, mesh.size
    if explicit:
        sharding.check_divisible(f"num_chains (× {num_observations} observations)", total, mesh)
    elif total % size:
        size = math.gcd(total, size)
        warnings.warn(f"num_chains: {num_observations} observations × {num_chains} chains do not split over "
                      f"{mesh.size} devices; sampling on {size} of them (pass mesh= to choose)", stacklevel=4)
        if size == 1:
            return None
    devices = np.asarray(mesh.devices).reshape(-1)[:size]
    rows = math.gcd(num_observations, size)
    return Mesh(devices.reshape(rows, size // rows), MESH_AXES)


def _constrain(tree, mesh, *axes):
    """Lay each leaf's leading axes over the mesh axes ``axes`` (identity without a mesh)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec(*axes)))


@functools.partial(jax.jit, static_argnames=("sampler", "settings", "mesh"))
def sample_batch(rng_key, posterior, sampler, settings: RunSettings, mesh=None):
    """All ``k`` observations of a batched ``posterior`` at once; observation i uses ``fold_in(rng_key, i)``.

    With a ``mesh`` from :func:`chain_mesh` the ``(k, C)`` chains are laid over its devices
    (observations along :data:`MESH_AXES` ``[0]``, chains along ``[1]``) and XLA partitions the
    program; the pooled RWMH metric of one observation's chains becomes a reduction across the
    devices that hold them. The keys do not depend on the mesh (the module docstring says how far
    the values do).

    Returns:
        ``(chains (k, C, S, d), acceptance_rate, num_divergent, step_size (k, C), rhat, ess (k, d))``,
        laid out as ``(observations, chains)`` over the mesh.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(posterior.x_obs.shape[0]))
    keys = jax.vmap(jax.random.split)(keys)
    one = lambda x_obs, features: posterior.replace(x_obs=x_obs, features=features)
    start = lambda key, x_obs, features: _start(key, one(x_obs, features), settings)
    theta0 = _constrain(jax.vmap(start)(keys[:, 0], posterior.x_obs, posterior.features), mesh, *MESH_AXES)

    def run(key, x_obs, features, theta):
        return _sample_one(key, one(x_obs, features), theta, sampler, settings)

    out = jax.vmap(run)(keys[:, 1], posterior.x_obs, posterior.features, theta0)
    return (*_constrain(out[:4], mesh, *MESH_AXES), *_constrain(out[4:], mesh, MESH_AXES[0]))


@functools.partial(jax.jit, static_argnames=("num_samples", "single", "mesh"))
def interleave(stats, num_samples: int, single: bool, mesh=None):
    """``(samples (k, num_samples, d), stats)``: draw ``j`` of chain ``c`` at ``j·C + c``.

    ``single`` drops the observation axis. With a mesh, ``samples`` stay split over the observations
    and, when ``D_c`` divides ``num_samples``, over the draws.
    """
    k, c, s, d = stats[0].shape
    samples = jnp.swapaxes(stats[0], 1, 2).reshape(k, s * c, d)[:, :num_samples]
    split = mesh is not None and num_samples % mesh.shape[MESH_AXES[1]] == 0
    if single:
        samples, stats = samples[0], [a[0] for a in stats]
        samples = _constrain(samples, mesh, *MESH_AXES[1:2 if split else 1])
        return samples, (*_constrain(stats[:4], mesh, MESH_AXES[1]), *_constrain(stats[4:], mesh))
    samples = _constrain(samples, mesh, *MESH_AXES[: 2 if split else 1])
    return samples, (*_constrain(stats[:4], mesh, *MESH_AXES), *_constrain(stats[4:], mesh, MESH_AXES[0]))
