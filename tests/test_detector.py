"""Detector-calibration task (aalr_jax.tasks.detector): generator, hit maps and inference of the offset."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aalr_jax import fit, sample_posterior, simulate, tasks
from aalr_jax.tasks import detector
from aalr_jax.tasks.detector import Detector, Tracks


def _eta_centres(bins, eta_max=2.5):
    return (np.arange(bins) + 0.5) / bins * 2 * eta_max - eta_max


def test_registry_and_observations():
    task = tasks.get("detector")
    assert task.name == "detector" and task.x_shape == (32, 32) and task.theta_dim == 1
    x_o = np.asarray(task.default_observation)
    assert x_o.shape == (32, 32) and set(np.unique(x_o)) <= {0.0, 1.0} and x_o.sum() >= 1
    obs = np.asarray(detector.observation_set())
    assert obs.shape == (32, 32, 32) and set(np.unique(obs)) <= {0.0, 1.0}
    np.testing.assert_array_equal(obs[:4], detector.observation_set(4))  # deterministic, prefix
    bank = simulate(jax.random.PRNGKey(0), detector.make(bins=16), 64, progress=False)
    assert bank.x.shape == (64, 16, 16) and np.all(np.abs(bank.theta) <= 30)


def test_thrust_axis_distribution():
    """cos ϑ has density (3/8)(1 + cos² ϑ): Kolmogorov–Smirnov against the exact CDF."""
    c = np.asarray(detector.sample_cos_theta(jax.random.PRNGKey(0), (20_000,)), np.float64)
    cdf = lambda t: (t**3 + 3 * t + 4) / 8
    assert stats.kstest(c, cdf).pvalue > 0.01
    np.testing.assert_allclose((c**2).mean(), 0.4, atol=0.01)


def test_hits_land_where_straight_tracks_cross_the_cylinder():
    """Each hit cell recomputed in NumPy: z = z_v + R sinh η, η_det = arsinh(z / R)."""
    det = Detector(bins=32, efficiency=1.0, noise_occupancy=0.0)
    eta = np.array([0.3, -1.2, 2.0, 0.0, 2.4, -0.7, 1.1, 0.5], np.float32)
    phi = np.array([0.1, 3.0, 5.5, 1.0, 4.0, 2.0, 6.2, 0.8], np.float32)
    present = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    for z_v in (-25.0, 0.0, 17.0):
        image = np.asarray(detector.hit_map(jax.random.PRNGKey(0), Tracks(eta, phi, present), z_v, det))
        expected = np.zeros((32, 32))
        eta_det = np.arcsinh((z_v + 50.0 * np.sinh(eta.astype(np.float64))) / 50.0)
        for e, p, keep in zip(eta_det, phi, present):
            row, col = int(np.floor((e + 2.5) / 5.0 * 32)), int(np.floor(p / (2 * math.pi) * 32))
            if keep and 0 <= row < 32:
                expected[row, col] = 1.0
        np.testing.assert_array_equal(image, expected)


def test_mean_hit_eta_shifts_monotonically_with_offset():
    centres = _eta_centres(32)
    means = []
    for offset in (-20.0, -10.0, 0.0, 10.0, 20.0):
        maps = np.asarray(detector.observation_set(2000, seed=5, offset=offset))
        per_row = maps.sum((0, 2))
        means.append((per_row * centres).sum() / per_row.sum())
    assert np.all(np.diff(means) > 0.05), means
    assert abs(means[2]) < 0.03  # symmetric at zero offset


def _posterior_means(bins, num_simulations, max_epochs, num_collisions):
    task = detector.make(bins=bins)
    bank = simulate(jax.random.PRNGKey(0), task, num_simulations, progress=False)
    estimator = fit(jax.random.PRNGKey(1), bank, embedding="cnn", embedding_features=32, hidden_features=(64, 64),
                    batch_size=128, max_epochs=max_epochs, patience=5, progress=False).estimator
    truths = (-10.0, 0.0, 10.0)
    x_obs = jnp.stack([detector.observation_set(num_collisions, seed=7, offset=t, bins=bins) for t in truths])
    post = sample_posterior(jax.random.PRNGKey(3), estimator, task.prior, x_obs, iid=True,
                            num_samples=1000, num_chains=10, num_warmup=200, num_init_candidates=2000)
    samples = np.asarray(post.samples)[..., 0]
    return np.array(truths), samples.mean(1), samples.std(1)


def test_posterior_centred_on_true_offset_small():
    """CI-sized: 16 × 16 maps, 5000 simulations, 32 collisions per observation."""
    truth, mean, std = _posterior_means(bins=16, num_simulations=5000, max_epochs=15, num_collisions=32)
    assert np.all(np.abs(mean - truth) < 3 * std + 1.0), (mean, std)
    assert np.all(std < 5.0)  # the prior's std is 17


@pytest.mark.slow
def test_posterior_centred_on_true_offset_full():
    """Full-size 32 × 32 maps, 20 000 simulations (about 5 minutes on 2 CPU cores)."""
    truth, mean, std = _posterior_means(bins=32, num_simulations=20_000, max_epochs=20, num_collisions=32)
    assert np.all(np.abs(mean - truth) < 3 * std + 0.5), (mean, std)
    assert np.all(std < 3.0)
