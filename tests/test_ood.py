"""Observations outside the training data (aalr_jax.ood) and how mcmc_report reports them."""

from types import SimpleNamespace
from typing import NamedTuple

import jax
import numpy as np
import pytest

from aalr_jax import diagnostics, ood, simulate, tasks
from aalr_jax.nn import NetworkConfig, RatioEnsemble, init_estimator, standardization_from
from aalr_jax.types import ExactLikelihood


@pytest.fixture(scope="module")
def two_moons():
    task = tasks.get("two_moons")
    bank = simulate(jax.random.PRNGKey(0), task, 2000, progress=False)
    config = NetworkConfig(theta_dim=2, x_shape=(2,), hidden_features=(8,))
    return task, init_estimator(jax.random.PRNGKey(1), config, standardization_from(bank.theta, bank.x))


def test_far_observation_is_flagged_and_held_out_ones_are_not(two_moons):
    task, estimator = two_moons
    assert bool(ood.outside_training_data(estimator, np.array([1e20, 0.0])))
    held_out = simulate(jax.random.PRNGKey(7), task, 500, progress=False).x  # fresh draws, not in the bank
    assert not ood.outside_training_data(estimator, held_out).any()
    assert not ood.outside_training_data(estimator, task.default_observation)
    batch = np.array(held_out[:3]).copy()
    batch[1] = [0.0, -1e6]
    np.testing.assert_array_equal(ood.outside_training_data(estimator, batch), [False, True, False])
    # an i.i.d. set is outside when one member is; a batch of sets is judged set by set
    sets = np.stack([held_out[:4], np.asarray(held_out[4:8]).copy()])
    sets[1, 2] = [1e9, 0.0]
    np.testing.assert_array_equal(ood.outside_training_data(estimator, sets, iid=True), [False, True])


def test_ranges_with_margin_exact_likelihoods_and_ensembles(two_moons):
    _, estimator = two_moons
    std = SimpleNamespace(x_min=np.array([0.0, -1.0]), x_max=np.array([1.0, 1.0]), x_loc=np.zeros(2),
                          x_scale=np.ones(2))
    ranged = SimpleNamespace(x_shape=(2,), standardization=std)
    # the margin is a tenth of each component's width on either side
    inside, beyond = np.array([1.09, 0.0]), np.array([1.11, 0.0])
    assert not ood.outside_training_data(ranged, inside) and ood.outside_training_data(ranged, beyond)
    assert ood.outside_training_data(ranged, np.array([0.5, -1.21]))
    assert not ood.outside_training_data(ExactLikelihood(lambda t, x: 0.0, (2,)), np.array([1e20, 0.0]))
    s = estimator.standardization  # a member trained on data 100 units away: its range moves with it
    shifted = s._replace(x_loc=s.x_loc + 100.0, x_min=s.x_min + 100.0, x_max=s.x_max + 100.0)
    other = type(estimator)(estimator.config, estimator.params, shifted)
    ensemble = RatioEnsemble.stack([estimator, other])
    near_other = np.asarray(shifted.x_loc)
    assert ood.outside_training_data(estimator, near_other) and not ood.outside_training_data(ensemble, near_other)


def test_warnings_strictness_and_bad_shapes(two_moons):
    _, estimator = two_moons
    with pytest.warns(ood.OutOfDistributionWarning, match="1 of 2 observations"):
        ood.check_observations(estimator, np.array([[0.0, 0.0], [1e20, 0.0]]))
    with pytest.raises(ValueError, match="strict=True"):
        ood.check_observations(estimator, np.array([1e20, 0.0]), strict=True)
    with pytest.raises(ValueError, match=r"x_obs must have shape \(2,\)"):
        ood.outside_training_data(estimator, np.zeros(3))
    with pytest.raises(TypeError, match="x_obs must be real"):
        ood.outside_training_data(estimator, np.array([1j, 0.0]))


class Run(NamedTuple):
    chains: np.ndarray
    acceptance_rate: np.ndarray
    num_divergent: np.ndarray
    outside_training: np.ndarray


def test_mcmc_report_warns_about_healthy_chains_outside_the_training_data():
    """Chains that mix perfectly (R-hat 1.00) on an extrapolated ratio must not read as healthy."""
    chains = np.random.default_rng(0).normal(size=(4, 500, 2)).astype(np.float32)
    acceptance, divergent = np.full(4, 0.4), np.zeros(4)
    clean = diagnostics.mcmc_report(Run(chains, acceptance, divergent, np.asarray(False)))
    assert clean.ok and not clean.outside_training
    flagged = diagnostics.mcmc_report(Run(chains, acceptance, divergent, np.asarray(True)))
    assert not flagged.ok and flagged.outside_training
    assert flagged.warnings == (diagnostics.mcmc.OUTSIDE_TRAINING_WARNING,)
    batch = diagnostics.mcmc_report(np.stack([chains, chains]), outside_training=np.array([False, True]))
    assert [r.ok for r in batch] == [True, False]
    with pytest.raises(ValueError, match="outside_training must be booleans"):
        diagnostics.mcmc_report(chains, outside_training=np.array([True, False]))
