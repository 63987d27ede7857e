"""MCMC health on synthetic chains: well mixed, shifted, stuck, divergent, and separated modes.

Every report uses chains of one shape (8 chains × 400 draws × 2), so the checks compile once.
"""

import warnings

import blackjax.diagnostics as bd
import jax.numpy as jnp
import numpy as np
import pytest

from aalr_jax.diagnostics import MCMCWarning, check, mcmc_report, to_inference_data
from aalr_jax.diagnostics.mcmc import _masked_split_rhat
from aalr_jax.sampling import PosteriorSamples

C, S, D = 8, 400, 2


def ar1_chains(seed, centers=None, phi=0.5, scale=1.0):
    """``(C, S, D)`` stationary AR(1) chains around ``centers: (C, D)`` (default 0)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((C, S, D))
    x = np.empty((C, S, D))
    x[:, 0] = eps[:, 0]
    for t in range(1, S):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * eps[:, t]
    centers = np.zeros((C, D)) if centers is None else np.asarray(centers, float)
    return (centers[:, None] + scale * x).astype(np.float32)


def two_modes(seed):
    centers = np.zeros((C, D))
    centers[: C // 2, 0], centers[C // 2 :, 0] = -8.0, 8.0
    return ar1_chains(seed, centers)


def test_well_mixed_chains_pass():
    report = mcmc_report(ar1_chains(0), acceptance_rate=np.full(C, 0.4), num_divergent=0)
    assert report.ok, report.warnings
    assert report.num_modes == 1 and report.mode_chains.tolist() == [C]
    assert np.all(report.rhat < 1.01) and np.all(report.ess_bulk > 400) and np.all(report.ess_tail > 400)
    np.testing.assert_allclose(report.mode_rhat, report.rhat, rtol=1e-4)  # one mode: the same chains
    assert report.chain_rhat.shape == (C, D) and np.all(report.chain_rhat < 1.1)


def test_shifted_chain_is_flagged():
    centers = np.zeros((C, D))
    centers[3] = 1.0  # one chain one standard deviation off: same mode, not converged
    report = mcmc_report(ar1_chains(1, centers))
    assert report.num_modes == 1
    assert np.all(report.rhat > 1.01)
    assert any("R-hat above 1.01" in w and "not explained by separated modes" in w for w in report.warnings)


def test_stuck_chain_is_flagged():
    chains = ar1_chains(2)
    chains[5] = chains[5, :1]  # never moves
    acceptance = np.full(C, 0.4)
    report = mcmc_report(chains, acceptance_rate=acceptance)
    assert report.stuck.tolist() == [i == 5 for i in range(C)]
    assert report.mode_labels[5] == -1
    assert any("chains 5 are stuck" in w for w in report.warnings)
    acceptance[2] = 0.0  # a chain that rejects everything is stuck too
    assert mcmc_report(ar1_chains(2), acceptance_rate=acceptance).stuck[2]


def test_divergences_and_low_ess_are_flagged():
    report = mcmc_report(ar1_chains(3), num_divergent=np.array([0, 2, 0, 0, 0, 0, 0, 1]))
    assert report.num_divergent == 3 and any("3 divergent" in w for w in report.warnings)
    slow = mcmc_report(ar1_chains(3, phi=0.99))  # strongly autocorrelated
    assert any("effective sample size" in w for w in slow.warnings)


def test_separated_well_mixed_modes_are_not_non_convergence():
    report = mcmc_report(two_modes(4), acceptance_rate=np.full(C, 0.4))
    assert report.rhat[0] > 1.5  # across chains: large (the rank-normalised R-hat saturates)
    assert report.num_modes == 2 and report.mode_chains.tolist() == [4, 4]
    assert set(report.mode_labels[:4]) != set(report.mode_labels[4:])
    assert np.all(report.mode_rhat < 1.01) and np.all(report.cluster_rhat < 1.01)
    assert np.all(report.mode_ess_bulk > 400)
    assert report.ok, report.warnings
    assert len(report.notes) == 1 and "explained by 2 separated modes" in report.notes[0]
    assert "initialisation" in report.notes[0]


def test_shifted_chain_inside_a_mode_is_flagged():
    centers = np.zeros((C, D))
    centers[: C // 2, 0], centers[C // 2 :, 0] = -8.0, 8.0
    centers[1, 0] += 1.0
    report = mcmc_report(ar1_chains(5, centers))
    assert report.num_modes == 2
    assert any("not explained by separated modes" in w for w in report.warnings)
    assert report.cluster_rhat[list(report.mode_chains).index(4), 0] > 1.01


def test_lone_chain_is_warned_about():
    centers = np.zeros((C, D))
    centers[6] = 20.0
    report = mcmc_report(ar1_chains(6, centers))
    assert report.num_modes == 2 and report.mode_chains.tolist() == [7, 1]
    assert any("chains 6 sit alone" in w for w in report.warnings)


def test_masked_split_rhat_matches_blackjax():
    chains = two_modes(7)
    members = np.zeros((2, C), bool)
    members[0, :4], members[1, [4, 6]] = True, True
    got = np.asarray(_masked_split_rhat(jnp.asarray(chains), jnp.asarray(members)))
    for row, sel in zip(got, members):
        sub = jnp.asarray(chains[sel])
        half = S // 2
        split = jnp.concatenate([sub[:, :half], sub[:, half:]])
        np.testing.assert_allclose(row, bd.potential_scale_reduction(split), rtol=1e-4)


def test_check_warns_and_accepts_posterior_samples():
    chains = ar1_chains(8)
    chains[0] = chains[0, :1]
    post = PosteriorSamples(chains.reshape(-1, D), chains, np.full(C, 0.3), np.zeros(C, int), np.ones(C),
                            np.ones(D), np.ones(D))
    with pytest.warns(MCMCWarning) as record:
        report = check(post, labels=["a", "b"])
    assert report.stuck[0] and any("chains 0 are stuck" in str(w.message) for w in record)
    assert len(record) == len(report.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check(ar1_chains(0)).ok


def test_batched_chains_give_one_report_each():
    batch = np.stack([ar1_chains(0), two_modes(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two healthy runs: no warning
        reports = check(batch, rank_normalized=False)
    assert [r.num_modes for r in reports] == [1, 2]
    assert all(r.ok for r in reports)
    with pytest.raises(ValueError, match="chains must be finite"):
        mcmc_report(np.zeros((C, 2)))


def test_inference_data_export():
    pytest.importorskip("arviz")
    chains = ar1_chains(9)
    post = PosteriorSamples(chains.reshape(-1, D), chains, np.full(C, 0.3), np.zeros(C, int), np.ones(C),
                            np.ones(D), np.ones(D))
    idata = to_inference_data(post, labels=["a", "b"], x_obs=np.zeros(3))
    assert idata.posterior["a"].shape == (C, S)
    assert "acceptance_rate" in idata.sample_stats and "x_obs" in idata.observed_data
    with pytest.raises(ValueError, match="labels"):
        to_inference_data(post, labels=["a"])


def test_one_dimensional_chains_keep_their_shapes():
    report = mcmc_report(ar1_chains(10)[..., :1])
    assert report.rhat.shape == report.ess_bulk.shape == report.mode_rhat.shape == (1,)
    assert report.cluster_rhat.shape == (1, 1) and report.chain_rhat.shape == (C, 1)
    assert report.ok, report.warnings
