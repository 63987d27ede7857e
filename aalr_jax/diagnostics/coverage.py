r"""Expected coverage of highest-posterior-density (HPD) regions (Hermans et al. 2022,
"A Trust Crisis in Simulation-Based Inference? Your Posterior Approximations Can Be Unfaithful").

For a pair ``(θ*, x) ~ p(θ, x)`` and an approximate posterior ``p̂(θ|x)``, the HPD credibility of θ*
is the posterior mass of the densest region whose boundary passes through θ*,

.. math::  c(θ^*, x) = P_{θ \sim \hat p(θ|x)}\bigl[\hat p(θ|x) > \hat p(θ^*|x)\bigr],

and θ* lies in the HPD region of level ``1 - α`` iff ``c ≤ 1 - α``. The expected coverage at level
``γ = 1 - α`` is ``E_{p(θ, x)} 1[c(θ^*, x) ≤ γ]``, estimated over N pairs; for the exact posterior
``c ~ U(0, 1)`` and the coverage equals γ. Coverage ≥ γ at every level is *conservative*; below γ
is *over-confident* (regions too small), above *under-confident* (too wide).

``c`` needs only the unnormalised density ``log p(θ) + Σ_i f(θ, x_i)``
(:func:`aalr_jax.logdensity.log_posterior`):

* from posterior samples ``θ_1..θ_n`` (:func:`sample_credibility`, one batched
  :func:`~aalr_jax.sampling.sample_posterior` call for all observations):
  ``ĉ = (1/n) Σ_j 1[\log \hat p(θ_j|x) > \log \hat p(θ^*|x)]``;
* on a grid for 1- or 2-D θ (:func:`grid_credibility`): the posterior is normalised exactly over
  the cells of a grid inside the prior box, ``p_g ∝ \exp \log \hat p(θ_g|x)``, and
  ``ĉ = Σ_g p_g 1[\log \hat p(θ_g|x) > \log \hat p(θ^*|x)]``.

Many observations: with ``output=`` a folder, :func:`expected_coverage` samples ``batch_size``
observations at a time and writes each batch's ``(k, n, d)`` samples to disk one device block at a
time (:func:`write_sample_shards`), so memory holds one batch and the host never holds the samples
of all N pairs; with a device mesh (``mesh=``, passed to ``sample_posterior``) each batch's chains
are spread over the devices.

Uncertainty: each level's coverage is a binomial proportion. ``stderr`` is the binomial standard
deviation at the nominal level, ``\sqrt{γ(1-γ)/N}`` (the band around the diagonal), and
``lower``/``upper`` are Clopper–Pearson intervals at ``confidence``, made simultaneous over the L
levels by Bonferroni (each at ``1 - (1 - confidence)/L``). The verdict compares these intervals to γ.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from aalr_jax import priors
from aalr_jax.data import resolve_problem, simulate
from aalr_jax.files import atomic_write
from aalr_jax.logdensity import embed_observations, log_posterior
from aalr_jax.sampling import sample_posterior
from aalr_jax.validation import positive_int

__all__ = [
    "DEFAULT_LEVELS",
    "CoverageResult",
    "coverage_from_credibility",
    "expected_coverage",
    "grid_credibility",
    "hpd_credibility",
    "sample_credibility",
    "write_sample_shards",
]

DEFAULT_LEVELS = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05, 0.10, ..., 0.95


class CoverageResult(NamedTuple):
    """Expected coverage at L credibility levels from N pairs.

    Attributes:
        levels: ``(L,)`` nominal levels γ.
        coverage: ``(L,)`` fraction of pairs whose θ* lies in the HPD region of level γ.
        stderr: ``(L,)`` binomial standard deviation at the nominal level, ``sqrt(γ(1-γ)/N)``.
        lower: ``(L,)`` simultaneous Clopper–Pearson lower bounds of ``coverage``.
        upper: ``(L,)`` simultaneous Clopper–Pearson upper bounds.
        credibility: ``(N,)`` HPD credibility of θ* per pair.
        conservative: no level has coverage significantly below it (``upper >= levels`` everywhere).
        verdict: ``"nominal"``, ``"conservative"`` (some level significantly above, none below),
            ``"over-confident"`` (some level significantly below, none above) or ``"mixed"``.
        confidence: confidence of the simultaneous intervals.
    """

    levels: np.ndarray
    coverage: np.ndarray
    stderr: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    credibility: np.ndarray
    conservative: bool
    verdict: str
    confidence: float


def hpd_credibility(log_density_samples, log_density_truth) -> jax.Array:
    """``ĉ``: fraction of samples denser than the truth.

    Args:
        log_density_samples: ``(..., n)`` log-densities of posterior samples.
        log_density_truth: ``(...,)`` log-density at θ*.

    Returns:
        ``(...,)`` credibilities in ``[0, 1]``.
    """
    samples = jnp.asarray(log_density_samples)
    return jnp.mean(samples > jnp.asarray(log_density_truth)[..., None], axis=-1)


def coverage_from_credibility(credibility, levels=DEFAULT_LEVELS, *, confidence: float = 0.95) -> CoverageResult:
    """Expected coverage at ``levels`` from per-pair credibilities ``(N,)`` (see module docstring)."""
    credibility = np.asarray(credibility, np.float64).ravel()
    levels = np.asarray(levels, np.float64)
    if credibility.size < 1 or not np.isfinite(credibility).all():
        raise ValueError("credibility must hold at least one finite value")
    if levels.ndim != 1 or np.any((levels <= 0) | (levels >= 1)):
        raise ValueError(f"levels must lie in (0, 1), got {levels}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = credibility.size
    hits = (credibility[:, None] <= levels[None]).sum(0)
    alpha = (1 - confidence) / levels.size
    lower = np.where(hits > 0, stats.beta.ppf(alpha / 2, hits, n - hits + 1), 0.0)
    upper = np.where(hits < n, stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits), 1.0)
    over, under = np.any(upper < levels), np.any(lower > levels)
    verdict = "mixed" if over and under else "over-confident" if over else "conservative" if under else "nominal"
    return CoverageResult(levels, hits / n, np.sqrt(levels * (1 - levels) / n), lower, upper, credibility,
                          bool(not over), verdict, float(confidence))


@functools.partial(jax.jit, static_argnames=("iid", "batch_size"))
def _sample_credibility(estimator, prior, x_obs, theta_star, samples, iid, batch_size):
    def one(args):
        x, truth, draws = args
        features = embed_observations(estimator, x, iid=iid)
        return hpd_credibility(log_posterior(estimator, prior, features, draws),
                               log_posterior(estimator, prior, features, truth))

    return jax.lax.map(one, (x_obs, theta_star, samples), batch_size=batch_size)


def sample_credibility(estimator, prior, x_obs, theta_star, samples, *, iid: bool = False, batch_size: int = 16):
    """``ĉ`` from posterior samples, the density being ``log p(θ) + Σ_i f(θ, x_i)``.

    Args:
        estimator: ratio estimator (or :class:`~aalr_jax.sampling.ExactLikelihood`).
        prior: numpyro prior, event shape ``(d,)``.
        x_obs: ``(k, *x_shape)`` (``(k, n_iid, *x_shape)`` with ``iid``).
        theta_star: ``(k, d)`` true parameters.
        samples: ``(k, n, d)`` posterior samples (``PosteriorSamples.samples`` of a batched run).
        iid: observations are i.i.d. sets.
        batch_size: observations evaluated at once.

    Returns:
        ``(k,)`` NumPy credibilities.
    """
    x_obs, theta_star, samples = (jnp.asarray(a, jnp.float32) for a in (x_obs, theta_star, samples))
    k = theta_star.shape[0]
    if samples.ndim != 3 or samples.shape[0] != k or x_obs.shape[0] != k or theta_star.shape[1:] != samples.shape[2:]:
        raise ValueError(f"expected x_obs (k, ...), theta_star (k, d) and samples (k, n, d) with one k, got "
                         f"{tuple(x_obs.shape)}, {tuple(theta_star.shape)} and {tuple(samples.shape)}")
    return np.asarray(_sample_credibility(estimator, prior, x_obs, theta_star, samples, bool(iid), int(batch_size)))


def _grid(prior, bounds, resolution):
    """Cell centres ``(G, d)`` of a regular grid over ``bounds: (d, 2)``."""
    d = priors.validate_prior(prior)
    if d > 2:
        raise ValueError(f"grid integration is for 1- or 2-D θ, got d = {d}; use the sample-based path")
    if bounds is None:
        found = priors.box_bounds(prior.support)
        if found is None:
            raise ValueError("the prior is not a bounded box: pass bounds=[(low, high), ...] for the grid")
        _, lo, hi = found
        bounds = np.stack([np.broadcast_to(lo, (d,)), np.broadcast_to(hi, (d,))], 1)
    bounds = np.asarray(bounds, np.float64).reshape(d, 2)
    if not np.isfinite(bounds).all() or np.any(bounds[:, 1] <= bounds[:, 0]):
        raise ValueError(f"bounds must be finite (low, high) pairs with low < high, got {bounds.tolist()}")
    resolution = (1024 if d == 1 else 256) if resolution is None else int(resolution)
    axes = [lo + (np.arange(resolution) + 0.5) * (hi - lo) / resolution for lo, hi in bounds]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("iid", "batch_size"))
def _grid_credibility(estimator, prior, x_obs, theta_star, grid, iid, batch_size):
    def one(args):
        x, truth = args
        features = embed_observations(estimator, x, iid=iid)
        log_p = log_posterior(estimator, prior, features, grid)
        weights = jax.nn.softmax(log_p)
        return jnp.sum(jnp.where(log_p > log_posterior(estimator, prior, features, truth), weights, 0.0))

    return jax.lax.map(one, (x_obs, theta_star), batch_size=batch_size)


def grid_credibility(estimator, prior, x_obs, theta_star, *, bounds=None, resolution: int | None = None,
                     iid: bool = False, batch_size: int = 8):
    """``ĉ`` by exact normalisation on a grid (1- or 2-D θ).

    Args:
        estimator, prior, x_obs, theta_star, iid: as in :func:`sample_credibility`.
        bounds: ``(d, 2)`` box of the grid; default the prior's box (required for unbounded priors,
            whose mass outside ``bounds`` is then ignored).
        resolution: cells per axis (default 1024 in 1-D, 256 in 2-D).
        batch_size: observations evaluated at once (memory: ``batch_size · resolution^d`` evaluations).

    Returns:
        ``(k,)`` NumPy credibilities.
    """
    grid = _grid(prior, bounds, resolution)
    x_obs, theta_star = jnp.asarray(x_obs, jnp.float32), jnp.asarray(theta_star, jnp.float32)
    if theta_star.ndim != 2 or x_obs.shape[0] != theta_star.shape[0]:
        raise ValueError(f"expected x_obs (k, ...) and theta_star (k, d), got {tuple(x_obs.shape)} and "
                         f"{tuple(theta_star.shape)}")
    return np.asarray(_grid_credibility(estimator, prior, x_obs, theta_star, jnp.asarray(grid), bool(iid),
                                        int(batch_size)))


def expected_coverage(
    rng_key: jax.Array,
    estimator,
    task_or_prior_and_simulator,
    *,
    num_pairs: int = 1000,
    method: str = "mcmc",
    levels=DEFAULT_LEVELS,
    confidence: float = 0.95,
    num_samples: int = 1000,
    bounds=None,
    resolution: int | None = None,
    output=None,
    batch_size: int | None = None,
    **sampler_kwargs,
) -> CoverageResult:
    """Expected HPD coverage of ``estimator`` over ``num_pairs`` pairs ``(θ*, x) ~ p(θ, x)``.

    Args:
        rng_key: PRNG key.
        estimator: ratio estimator (with :class:`~aalr_jax.sampling.ExactLikelihood` the coverage is nominal).
        task_or_prior_and_simulator: a task, or ``(prior, simulator)``.
        num_pairs: N.
        method: ``"mcmc"`` (one batched :func:`~aalr_jax.sampling.sample_posterior` call) or
            ``"grid"`` (1- or 2-D θ).
        levels, confidence: see :func:`coverage_from_credibility`.
        num_samples: posterior draws per observation (``"mcmc"``).
        bounds, resolution: the grid (``"grid"``).
        output: a folder (``"mcmc"``): write the posterior samples there shard by shard
            (:func:`write_sample_shards`, with each block's ``x``, ``theta`` and ``credibility``)
            instead of keeping them; only the ``(N,)`` credibilities come back to the host.
        batch_size: observations per :func:`~aalr_jax.sampling.sample_posterior` call with
            ``output`` (default all ``num_pairs``); batch ``b`` samples with ``fold_in(key, b)``.
            With a device mesh, ``batch_size · num_chains`` (and the last, shorter batch's) must
            be a multiple of the device count.
        **sampler_kwargs: passed to :func:`~aalr_jax.sampling.sample_posterior` (method,
            num_chains, ``mesh``, ...).

    Returns:
        :class:`CoverageResult`.
    """
    if method not in ("mcmc", "grid"):
        raise ValueError(f"method must be 'mcmc' or 'grid', got {method!r}")
    prior, _ = resolve_problem(task_or_prior_and_simulator)
    key_pairs, key_sample = jax.random.split(rng_key)
    bank = simulate(key_pairs, task_or_prior_and_simulator, num_pairs, progress=False)
    if method == "grid":
        credibility = grid_credibility(estimator, prior, bank.x, bank.theta, bounds=bounds, resolution=resolution)
    elif output is not None:
        credibility = _streamed_credibility(key_sample, estimator, prior, bank, output, batch_size,
                                            num_samples, sampler_kwargs)
    else:
        post = sample_posterior(key_sample, estimator, prior, bank.x, num_samples=num_samples, **sampler_kwargs)
        credibility = sample_credibility(estimator, prior, bank.x, bank.theta, post.samples)
    return coverage_from_credibility(credibility, levels, confidence=confidence)


def _streamed_credibility(rng_key, estimator, prior, bank, output, batch_size, num_samples, sampler_kwargs):
    """Credibilities ``(N,)``, sampling ``batch_size`` observations at a time and writing each batch's
    samples to ``output`` shard by shard."""
    n = int(bank.theta.shape[0])
    batch_size = n if batch_size is None else positive_int("batch_size", batch_size)
    output = os.fspath(output)
    os.makedirs(output, exist_ok=True)
    credibility = []
    for b, start in enumerate(range(0, n, batch_size)):
        rows = slice(start, min(start + batch_size, n))
        post = sample_posterior(jax.random.fold_in(rng_key, b), estimator, prior, bank.x[rows],
                                num_samples=num_samples, **sampler_kwargs)
        cred = sample_credibility(estimator, prior, bank.x[rows], bank.theta[rows], post.samples)
        write_sample_shards(output, post.samples, start, x=np.asarray(bank.x[rows]),
                            theta=np.asarray(bank.theta[rows]), credibility=cred)
        credibility.append(cred)
    return np.concatenate(credibility)


def write_sample_shards(folder, samples: jax.Array, first_row: int = 0, **per_row) -> list:
    """Write each device's block of ``samples: (k, n, d)`` to its own ``.npz``, gathering nothing.

    One file per distinct block (``samples.addressable_shards``; copies on several devices are
    written once; in a multi-process run each process writes its own blocks), named
    ``pairs_{r0:08d}-{r1:08d}_draws_{s0:08d}-{s1:08d}.npz`` for observation rows ``[r0, r1)`` (counted
    from ``first_row``) and draws ``[s0, s1)``, written atomically (:func:`aalr_jax.files.atomic_write`).
    Each holds ``samples`` (the block), ``rows`` (its global observation indices), ``draws`` (its
    draw indices) and, for every ``per_row`` array ``(k, ...)``, the block's rows of it.

    Returns:
        The paths written.
    """
    paths = []
    for shard in samples.addressable_shards if isinstance(samples, jax.Array) else ():
        if shard.replica_id:
            continue
        rows, draws = (range(*i.indices(size)) for i, size in zip(shard.index[:2], samples.shape[:2]))
        arrays = {name: np.asarray(value)[rows.start:rows.stop] for name, value in per_row.items()}
        arrays.update(samples=np.asarray(shard.data), rows=np.arange(rows.start, rows.stop) + first_row,
                      draws=np.arange(draws.start, draws.stop))
        name = (f"pairs_{first_row + rows.start:08d}-{first_row + rows.stop:08d}"
                f"_draws_{draws.start:08d}-{draws.stop:08d}.npz")
        path = os.path.join(os.fspath(folder), name)
        atomic_write(path, lambda f, arrays=arrays: np.savez(f, **arrays))
        paths.append(path)
    return paths
