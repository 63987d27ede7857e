r"""MCMC health of a sampling run: R-hat, bulk and tail ESS, acceptance, divergences, stuck chains,
with a mode-aware view for multimodal posteriors.

For ``C`` chains of ``S`` draws in ``R^d`` (``chains: (C, S, d)``):

* **Across-chain R-hat** (Vehtari et al. 2021): the rank-normalised split R-hat of
  :func:`blackjax.diagnostics.rhat` (the larger of the bulk and folded values). With chain halves
  of ``n`` draws, mean ``\bar θ_j`` and variance ``s_j^2``, ``B = n \operatorname{Var}_j \bar θ_j``,
  ``W = \operatorname{mean}_j s_j^2`` and

  .. math::  \hat R = \sqrt{\bigl((n - 1)/n\, W + B/n\bigr) / W}.

* **Bulk and tail ESS** (:func:`blackjax.diagnostics.ess_bulk`, :func:`~blackjax.diagnostics.ess_tail`):
  ``C S / τ̂`` of rank-normalised draws, and the smaller ESS of the 5 % and 95 % quantile
  indicator chains.
* **Per-chain stationarity**: the classic split R-hat (:func:`blackjax.diagnostics.potential_scale_reduction`)
  of each chain cut into quarters, ``chain_rhat: (C, d)``. With short chains it is noisy (about
  ``1 + (χ²_3/3 - 1)/(2 S/4)``), so it is reported, not warned about, except for a lone chain.

**Modes.** Chains of HMC, NUTS and the plain random walk adapt one by one and do not jump between
separated modes (two moons' crescents, SLCP's sign modes): each chain mixes within its mode, the
mode weights come from the SIR initialisation, and the across-chain R-hat is large (two moons, exact
likelihood, 100 chains: classic split R-hat ≈ 13, rank-normalised ≈ 1.8) although nothing is wrong
within a mode. RWMH with independence moves (the default up to 4 parameters) does jump between
modes, but a chain still spends stretches in one mode, and a short run can leave chains' means apart.
So chains are clustered by location: chains ``i, j`` are
neighbours when

.. math::  z_{ij}^2 = \sum_k \frac{(\bar θ_{ik} - \bar θ_{jk})^2}{(s_{ik}^2 + s_{jk}^2)/2} < \text{separation}^2

(mean difference in units of within-chain standard deviation), and modes are the connected
components (single linkage). Chains of one mode differ by ``O(1/\sqrt{ESS})`` standard deviations;
on two moons the two crescents' chains are ≈ 30 apart. Per mode, the classic split R-hat of its
chains (``cluster_rhat: (M, d)``); pooled over modes, R-hat and ESS of the **mode-standardised**
chains ``(θ - μ_m) / σ_m`` (μ_m, σ_m: the chain's mode's pooled mean and standard deviation), which
are exchangeable across all chains exactly when every mode is well mixed. A large across-chain
R-hat is then warned about only when it is not explained by well-mixed separate modes.

**Outside the training data.** Healthy chains say nothing about the ratio they sample: for an
observation outside the estimator's training data (:mod:`aalr_jax.ood`) the chains can mix
perfectly (R-hat 1.00) on an extrapolated logit. A run flagged ``outside_training`` (the field of
:class:`~aalr_jax.sampling.PosteriorSamples` where present, or the ``outside_training`` argument)
gets a warning line saying so.

A chain far from all others (a mode of one chain) cannot be told apart from a chain stuck in a
local region without the density, so it is warned about. Stuck chains (acceptance below
``stuck_acceptance`` or a constant coordinate) are excluded from the clustering.

:func:`check` emits :class:`MCMCWarning` s naming the problem; :func:`to_inference_data` exports a
run to ArviZ (an optional dependency: ``pip install "aalr-jax[diagnostics]"``).
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import blackjax.diagnostics as bd
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MCMCReport",
    "MCMCWarning",
    "check",
    "mcmc_report",
    "to_inference_data",
]

RHAT_THRESHOLD = 1.01  # Vehtari et al. 2021
MIN_ESS = 400  # Vehtari et al. 2021: 100 per chain for 4 chains
MODE_SEPARATION = 4.0  # within-chain standard deviations between chain means
STUCK_ACCEPTANCE = 0.01
CHAIN_RHAT_THRESHOLD = 1.1  # per-chain (quarters) R-hat, only used for lone chains


class MCMCWarning(UserWarning):
    """A sampling run failed a health check (filter with ``warnings.simplefilter``)."""


class MCMCReport(NamedTuple):
    """Health of ``C`` chains of ``S`` draws in ``R^d`` grouped into ``M`` modes.

    Attributes:
        rhat: ``(d,)`` across-chain R-hat (rank-normalised split R-hat).
        ess_bulk: ``(d,)`` across-chain bulk ESS.
        ess_tail: ``(d,)`` across-chain tail ESS.
        mode_rhat: ``(d,)`` R-hat of the mode-standardised chains (pooled within-mode R-hat).
        mode_ess_bulk: ``(d,)`` bulk ESS of the mode-standardised chains.
        mode_ess_tail: ``(d,)`` tail ESS of the mode-standardised chains.
        cluster_rhat: ``(M, d)`` classic split R-hat within each mode (modes by decreasing size).
        mode_labels: ``(C,)`` mode of each chain, ``-1`` for a stuck chain.
        mode_chains: ``(M,)`` chains per mode.
        chain_rhat: ``(C, d)`` classic R-hat of each chain's quarters (NaN when S < 8).
        stuck: ``(C,)`` stuck chains.
        acceptance_rate: ``(C,)`` (NaN when unknown).
        num_divergent: divergent transitions, all chains.
        warnings: the problems found, one sentence each.
        notes: findings that are not problems (e.g. a large R-hat explained by modes).
        outside_training: the observation lies outside the estimator's training data.
    """

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    mode_rhat: np.ndarray
    mode_ess_bulk: np.ndarray
    mode_ess_tail: np.ndarray
    cluster_rhat: np.ndarray
    mode_labels: np.ndarray
    mode_chains: np.ndarray
    chain_rhat: np.ndarray
    stuck: np.ndarray
    acceptance_rate: np.ndarray
    num_divergent: int
    warnings: tuple
    notes: tuple
    outside_training: bool = False

    @property
    def num_modes(self) -> int:
        return int(len(self.mode_chains))

    @property
    def ok(self) -> bool:
        return not self.warnings


MIN_DRAWS = 4  # draws per chain the report needs (split R-hat cuts each chain into halves of >= 2)


def _split(chains):
    """``(C, S, d) -> (2C, S // 2, d)``: each chain cut in two halves."""
    half = chains.shape[1] // 2
    return jnp.concatenate([chains[:, :half], chains[:, half : 2 * half]], axis=0)


def _masked_split_rhat(chains, members):
    """Classic split R-hat of the chains selected by each row of ``members: (M, C)``: ``(M, d)``.

    The formula of :func:`blackjax.diagnostics.potential_scale_reduction` on the split chains of
    one mode; NaN for a mode without chains.
    """
    halves = _split(chains)  # (2C, n, d)
    n = halves.shape[1]
    mean, var = halves.mean(1), halves.var(1, ddof=1)  # (2C, d)
    w = jnp.concatenate([members, members], axis=1).astype(chains.dtype)  # (M, 2C)
    count = w.sum(1, keepdims=True)  # (M, 1)
    mode_mean = (w @ mean) / count
    between = n * (w @ mean**2 - count * mode_mean**2) / (count - 1)
    within = (w @ var) / count
    rhat = jnp.sqrt((between / within + n - 1) / n)
    return jnp.where(count > 1, rhat, jnp.nan)


def _cluster(mean, var, active, separation):
    """Connected components of chains closer than ``separation`` (see module docstring).

    Returns ``(C,)`` labels: the smallest chain index of each component, ``C`` for inactive chains.
    """
    num = mean.shape[0]
    scale = (var[:, None] + var[None]) / 2
    z2 = jnp.sum((mean[:, None] - mean[None]) ** 2 / jnp.maximum(scale, jnp.finfo(mean.dtype).tiny), -1)
    adjacent = (z2 < separation**2) & active[:, None] & active[None]
    labels = jnp.where(active, jnp.arange(num), num)

    def body(state):
        labels, _ = state
        new = jnp.minimum(labels, jnp.where(adjacent, labels[None], num).min(1))
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda s: s[1], body, (labels, jnp.array(True)))
    return labels


@functools.partial(jax.jit, static_argnames=("rank",))
def _health(chains, acceptance, separation, stuck_acceptance, rank=True):
    """Fixed-shape statistics of ``chains: (C, S, d)``; vmappable over observations."""
    num, size, dim = chains.shape
    constant = jnp.all(chains == chains[:, :1], axis=1).any(-1)
    stuck = constant | (acceptance < stuck_acceptance)
    mean, var = chains.mean(1), chains.var(1)
    labels = _cluster(mean, var, ~stuck, separation)

    # mode-standardised chains: (θ - μ_m) / σ_m with the pooled mean and std of the chain's mode
    same = (labels[:, None] == labels[None]) & ~stuck[None]
    w = same.astype(chains.dtype) / jnp.maximum(same.sum(1, keepdims=True), 1)
    mode_mean = w @ mean
    mode_var = w @ (var + mean**2) - mode_mean**2
    mode_std = jnp.sqrt(jnp.maximum(mode_var, 0.0))
    ok = ~stuck[:, None] & (mode_std > 0)
    standard = jnp.where(ok[:, None], (chains - mode_mean[:, None]) / jnp.where(ok, mode_std, 1.0)[:, None], 0.0)

    if rank:
        stats = lambda c: (bd.rhat(c), bd.ess_bulk(c), bd.ess_tail(c))
    else:
        stats = lambda c: (bd.potential_scale_reduction(_split(c)), bd.effective_sample_size(c), bd.ess_tail(c))
    rhat, ess_bulk, ess_tail = (v.reshape(dim) for v in stats(chains))  # blackjax squeezes d = 1
    mode_rhat, mode_ess_bulk, mode_ess_tail = (v.reshape(dim) for v in stats(standard))

    members = labels[None] == jnp.arange(num)[:, None]  # (C modes by representative, C chains)
    cluster_rhat = _masked_split_rhat(chains, members)
    if size >= 8:
        quarters = chains[:, : 4 * (size // 4)].reshape(num, 4, size // 4, dim)
        chain_rhat = jax.vmap(bd.potential_scale_reduction)(quarters)
    else:
        chain_rhat = jnp.full((num, dim), jnp.nan)
    return dict(rhat=rhat, ess_bulk=ess_bulk, ess_tail=ess_tail, mode_rhat=mode_rhat,
                mode_ess_bulk=mode_ess_bulk, mode_ess_tail=mode_ess_tail, cluster_rhat=cluster_rhat,
                labels=labels, chain_rhat=chain_rhat.reshape(num, dim), stuck=stuck)


def _ids(mask) -> str:
    idx = np.flatnonzero(mask)
    text = ", ".join(map(str, idx[:8])) + (f" ... ({idx.size} in all)" if idx.size > 8 else "")
    return text


def _names(values, threshold, labels, above=True) -> str:
    bad = values > threshold if above else values < threshold
    return ", ".join(f"{labels[i]} ({values[i]:.3g})" for i in np.flatnonzero(bad))


OUTSIDE_TRAINING_WARNING = (
    "the observation lies outside the estimator's training data: the ratio there is an extrapolation, "
    "so these chains can look healthy and still sample a meaningless posterior; simulate with a prior "
    "that covers it, or check the observation's units and preprocessing")


def _modes(raw_labels: np.ndarray, cluster_rhat: np.ndarray, dim: int) -> tuple:
    """``(mode_labels (C,), chains per mode (M,), R-hat within each mode (M, d))``, modes by size.

    ``raw_labels[c]``: the representative chain of chain ``c``'s cluster (``C`` or more: none);
    modes are numbered 0, 1, ... from the largest; chains in no mode get -1.
    """
    num = raw_labels.shape[0]
    reps, counts = np.unique(raw_labels[raw_labels < num], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    reps, counts = reps[order], counts[order]
    mode_labels = np.full(num, -1)
    for m, r in enumerate(reps):
        mode_labels[raw_labels == r] = m
    return mode_labels, counts, cluster_rhat[reps].reshape(len(reps), dim)


def _rhat_messages(rhat, mode_rhat, cluster_rhat, counts, rhat_threshold, labels) -> tuple:
    """``(warnings, notes)`` about R-hat: across chains, explained by separated modes or not."""
    num_modes, dim = len(counts), cluster_rhat.shape[-1]
    multi = counts > 1
    within_bad = (cluster_rhat[multi] > rhat_threshold).any(0) if multi.any() else np.zeros(dim, bool)
    within_ok = not (mode_rhat > rhat_threshold).any() and not within_bad.any()
    if num_modes > 1 and within_ok and (rhat > rhat_threshold).any():
        fractions = ", ".join(f"{c / counts.sum():.0%}" for c in counts)
        return [], [
            f"across-chain R-hat up to {np.nanmax(rhat):.3g} is explained by {num_modes} separated modes "
            f"(chains per mode: {', '.join(map(str, counts))}), each well mixed (within-mode R-hat "
            f"{np.nanmax(mode_rhat):.3g} <= {rhat_threshold}); the chains' time in each mode ({fractions} of the "
            f"chains) comes from the initialisation unless the kernel jumps between modes (RWMH's independence "
            f"moves do; HMC, NUTS and the plain random walk do not)"
        ]
    if within_ok and not (rhat > rhat_threshold).any():
        return [], []
    if num_modes <= 1:
        return [f"R-hat above {rhat_threshold} for {_names(rhat, rhat_threshold, labels)}: the chains "
                "disagree (not converged, shifted or drifting chains); they form one mode, so this is "
                "not explained by separated modes; run a longer warm-up, or HMC (method='hmc') if RWMH "
                "samples more than a few parameters"], []
    detail = "; ".join(
        f"mode {m} ({counts[m]} chains): R-hat {np.nanmax(cluster_rhat[m]):.3g}"
        for m in range(num_modes) if counts[m] > 1
    )
    return [f"R-hat above {rhat_threshold} (across chains up to {np.nanmax(rhat):.3g}), not explained "
            f"by separated modes: {num_modes} modes found, but within them R-hat is "
            f"{_names(mode_rhat, -np.inf, labels)} ({detail}); chains within a mode disagree or "
            "drift (slow mixing or too few draws per chain; HMC mixes faster than RWMH beyond a "
            "few parameters)"], []


def _lone_chain_warnings(mode_labels, counts, chain_rhat, separation) -> list:
    """Warnings about chains that form a mode of their own, and those of them not stationary."""
    warn = []
    num_modes = len(counts)
    lone = np.isin(mode_labels, np.flatnonzero(counts == 1)) if num_modes > 1 else np.zeros(len(mode_labels), bool)
    if lone.any():
        warn.append(f"chains {_ids(lone)} sit alone, more than {separation:g} within-chain standard deviations "
                    "from every other chain: a mode found by one chain only, or a chain stuck in a local "
                    "region; check their log density, or run more chains")
    drifting = lone & (chain_rhat > CHAIN_RHAT_THRESHOLD).any(1)
    if drifting.any():
        warn.append(f"lone chains {_ids(drifting)} are not stationary (R-hat of their quarters above "
                    f"{CHAIN_RHAT_THRESHOLD})")
    return warn


def _report(stats, acceptance, num_divergent, labels, rhat_threshold, min_ess, separation,
            outside_training=False) -> MCMCReport:
    """The :class:`MCMCReport` of one observation's statistics ``stats`` (arrays over chains and θ)."""
    s = {k: np.asarray(v) for k, v in stats.items()}
    dim = s["chain_rhat"].shape[1]
    mode_labels, counts, cluster_rhat = _modes(s["labels"], s["cluster_rhat"], dim)
    num_modes = len(counts)
    warn = [OUTSIDE_TRAINING_WARNING] if outside_training else []
    stuck = s["stuck"]
    if stuck.any():
        warn.append(f"chains {_ids(stuck)} are stuck (acceptance below {STUCK_ACCEPTANCE:g} or a coordinate "
                    "that never changes): lower the step size, or start them elsewhere")
    if num_divergent > 0:
        warn.append(f"{num_divergent} divergent transitions: the step size is too large for the posterior's "
                    "curvature; raise target_acceptance or reparametrise")
    rhat, mode_rhat = s["rhat"], s["mode_rhat"]
    rhat_warnings, notes = _rhat_messages(rhat, mode_rhat, cluster_rhat, counts, rhat_threshold, labels)
    warn += rhat_warnings
    warn += _lone_chain_warnings(mode_labels, counts, s["chain_rhat"], separation)
    ess = np.minimum(s["mode_ess_bulk"], s["mode_ess_tail"])
    if (ess < min_ess).any():
        where = "within modes" if num_modes > 1 else "across chains"
        warn.append(f"effective sample size (bulk/tail, {where}) below {min_ess} for "
                    f"{_names(ess, min_ess, labels, above=False)}: draw more samples or thin less")
    return MCMCReport(
        rhat=rhat, ess_bulk=s["ess_bulk"], ess_tail=s["ess_tail"], mode_rhat=mode_rhat,
        mode_ess_bulk=s["mode_ess_bulk"], mode_ess_tail=s["mode_ess_tail"], cluster_rhat=cluster_rhat,
        mode_labels=mode_labels, mode_chains=counts, chain_rhat=s["chain_rhat"], stuck=stuck,
        acceptance_rate=np.asarray(acceptance, np.float64), num_divergent=int(num_divergent),
        warnings=tuple(warn), notes=tuple(notes), outside_training=bool(outside_training),
    )


def _unpack(posterior, acceptance_rate, num_divergent):
    """``(chains (..., C, S, d), acceptance (..., C), divergent (...,))`` from samples or arrays."""
    if hasattr(posterior, "chains"):
        chains = posterior.chains
        acceptance_rate = posterior.acceptance_rate if acceptance_rate is None else acceptance_rate
        num_divergent = posterior.num_divergent if num_divergent is None else num_divergent
    else:
        chains = posterior
    chains = np.asarray(chains, np.float32)
    if chains.ndim not in (3, 4) or chains.shape[-2] < MIN_DRAWS or not np.isfinite(chains).all():
        raise ValueError(f"chains must be finite with shape ([k,] C, S, d) and S >= {MIN_DRAWS}, got {chains.shape}")
    batch = chains.shape[:-3]
    if acceptance_rate is None:
        acceptance_rate = np.full(batch + chains.shape[-3:-2], np.nan, np.float32)
    acceptance_rate = np.broadcast_to(np.asarray(acceptance_rate, np.float32), batch + chains.shape[-3:-2])
    divergent = np.zeros(batch) if num_divergent is None else np.asarray(num_divergent)
    if divergent.ndim > len(batch):  # per chain
        divergent = divergent.reshape(batch + (-1,)).sum(-1)
    return chains, acceptance_rate, np.broadcast_to(divergent, batch)


def mcmc_report(
    posterior,
    *,
    acceptance_rate=None,
    num_divergent=None,
    labels=None,
    rhat_threshold: float = RHAT_THRESHOLD,
    min_ess: float = MIN_ESS,
    separation: float = MODE_SEPARATION,
    stuck_acceptance: float = STUCK_ACCEPTANCE,
    rank_normalized: bool = True,
    outside_training=None,
):
    """Health of a sampling run, without emitting warnings (see :func:`check`).

    Args:
        posterior: a :class:`~aalr_jax.sampling.PosteriorSamples` (its ``chains``,
            ``acceptance_rate`` and ``num_divergent``), or chains ``(C, S, d)`` / ``(k, C, S, d)``.
        acceptance_rate: ``([k,] C)``, overrides the posterior's.
        num_divergent: ``([k,] [C])``, overrides the posterior's.
        labels: ``d`` parameter names for the messages.
        rhat_threshold: largest acceptable R-hat.
        min_ess: smallest acceptable bulk and tail ESS (within modes, summed over them).
        separation: chain means further apart than this many within-chain standard deviations are
            in different modes.
        stuck_acceptance: chains accepting less often are stuck.
        rank_normalized: rank-normalised R-hat and bulk ESS (Vehtari et al. 2021); ``False`` uses
            the classic split R-hat and ESS, several times faster for thousands of observations.
        outside_training: ``()`` or ``(k,)`` booleans, overriding the posterior's
            ``outside_training`` field: observations outside the estimator's training data get a
            warning (see the module docstring).

    Returns:
        An :class:`MCMCReport`, or a list of them (one per observation) for batched chains.
    """
    chains, acceptance, divergent = _unpack(posterior, acceptance_rate, num_divergent)
    dim = chains.shape[-1]
    labels = [f"θ{i + 1}" for i in range(dim)] if labels is None else [str(s) for s in labels]
    if len(labels) != dim:
        raise ValueError(f"labels must hold {dim} names, got {len(labels)}")
    if outside_training is None:
        outside_training = getattr(posterior, "outside_training", None)
    batch = chains.shape[:-3]
    outside = np.zeros(batch, bool) if outside_training is None else np.asarray(outside_training)
    if outside.dtype != bool or outside.shape not in (batch, ()):
        raise ValueError(f"outside_training must be booleans of shape {batch}, got {outside.dtype} {outside.shape}")
    outside = np.broadcast_to(outside, batch)
    fn = functools.partial(_health, rank=bool(rank_normalized))
    args = (jnp.float32(separation), jnp.float32(stuck_acceptance))
    build = lambda st, a, dv, o: _report(st, a, int(dv), labels, rhat_threshold, min_ess, separation, bool(o))
    if chains.ndim == 3:
        return build(fn(jnp.asarray(chains), jnp.asarray(acceptance), *args), acceptance, divergent, outside)
    stats = jax.vmap(lambda c, a: fn(c, a, *args))(jnp.asarray(chains), jnp.asarray(acceptance))
    stats = {k: np.asarray(v) for k, v in stats.items()}
    return [build({k: v[i] for k, v in stats.items()}, acceptance[i], divergent[i], outside[i])
            for i in range(len(chains))]


def check(posterior, *, max_warnings: int = 5, **kwargs):
    """:func:`mcmc_report` plus one :class:`MCMCWarning` per problem found.

    For batched chains the warnings are prefixed with the observation index and at most
    ``max_warnings`` are emitted, followed by a count of the rest.

    Returns:
        An :class:`MCMCReport` (or a list of them, one per observation).
    """
    report = mcmc_report(posterior, **kwargs)
    reports = report if isinstance(report, list) else [report]
    messages = [
        (f"observation {i}: " if isinstance(report, list) else "") + message
        for i, r in enumerate(reports) for message in r.warnings
    ]
    for message in messages[:max_warnings]:
        warnings.warn(message, MCMCWarning, stacklevel=2)
    if len(messages) > max_warnings:
        bad = sum(not r.ok for r in reports)
        warnings.warn(f"... and {len(messages) - max_warnings} more MCMC warnings ({bad} of {len(reports)} "
                      "observations have problems)", MCMCWarning, stacklevel=2)
    return report


def to_inference_data(posterior, *, labels=None, x_obs=None):
    """An ArviZ ``InferenceData`` of one run (needs ``arviz``: ``pip install "aalr-jax[diagnostics]"``).

    Args:
        posterior: a :class:`~aalr_jax.sampling.PosteriorSamples` of one observation, or chains ``(C, S, d)``.
        labels: ``d`` variable names (default ``theta_1 ... theta_d``).
        x_obs: the observation, stored as ``observed_data``.

    Returns:
        ``InferenceData`` with ``posterior`` (one variable per parameter, dims ``(chain, draw)``),
        ``sample_stats`` (``acceptance_rate`` and ``num_divergent`` per chain, constant along draws)
        and ``observed_data`` when ``x_obs`` is given.
    """
    try:
        import arviz as az
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('to_inference_data needs ArviZ: pip install "aalr-jax[diagnostics]" (or arviz)') from err
    chains, acceptance, divergent = _unpack(posterior, None, None)
    if chains.ndim != 3:
        raise ValueError(f"to_inference_data takes the chains of one observation (C, S, d), got {chains.shape}")
    num, size, dim = chains.shape
    labels = [f"theta_{i + 1}" for i in range(dim)] if labels is None else [str(s) for s in labels]
    if len(labels) != dim:
        raise ValueError(f"labels must hold {dim} names, got {len(labels)}")
    per_chain = lambda a: np.repeat(np.asarray(a, np.float64).reshape(num, 1), size, axis=1)
    stats = {"acceptance_rate": per_chain(acceptance)}
    if hasattr(posterior, "num_divergent"):
        stats["num_divergent"] = per_chain(np.asarray(posterior.num_divergent).reshape(num))
    return az.from_dict(
        posterior={name: chains[..., i] for i, name in enumerate(labels)},
        sample_stats=stats,
        observed_data=None if x_obs is None else {"x_obs": np.asarray(x_obs)},
    )
