"""Strong-lensing task (aalr_jax.tasks.lensing): physics checks in NumPy and a small inference run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aalr_jax import fit, sample_posterior, simulate, tasks
from aalr_jax.tasks import lensing
from aalr_jax.tasks.lensing import Nuisance, Optics


def _nuisance(**changes):
    """A round, unsheared, centred lens and a small round source at the origin, unless changed."""
    base = dict(lens_q=1.0, lens_phi=0.0, lens_x=0.0, lens_y=0.0, shear_1=0.0, shear_2=0.0, source_x=0.0,
                source_y=0.0, source_re=0.1, source_n=1.0, source_q=1.0, source_phi=0.0, source_amplitude=50.0)
    base.update(changes)
    return Nuisance(**{k: jnp.float32(v) for k, v in base.items()})


def test_registry_and_default_observations():
    task = tasks.get("lensing")
    assert task.name == "lensing" and task.x_shape == (32, 32) and task.theta_dim == 1
    x_o = np.asarray(task.default_observation)
    assert x_o.shape == (32, 32) and np.all(np.isfinite(x_o))
    again = jax.jit(task.simulator)(jax.random.PRNGKey(0), jnp.asarray(task.true_theta))
    np.testing.assert_allclose(x_o, again, rtol=1e-5, atol=1e-4)  # regenerated deterministically
    pop = np.asarray(lensing.population_observation(4, seed=1, size=16))
    assert pop.shape == (4, 16, 16)
    np.testing.assert_allclose(pop[:2], lensing.population_observation(2, seed=1, size=16), rtol=1e-5)  # prefix
    assert not np.allclose(pop[0], pop[1])  # independent nuisances
    bank = simulate(jax.random.PRNGKey(1), lensing.make(size=16), 64, progress=False)
    assert bank.x.shape == (64, 16, 16) and np.all((bank.theta >= 0.5) & (bank.theta <= 3.0))


def test_sie_deflection_matches_convergence():
    """∇·α = 2κ and ∇×α = 0 for the SIE; |α| = θ_E for the round lens."""
    theta_e, phi, x0, y0 = 1.3, 0.7, 0.1, -0.2
    for q in (0.6, 0.85, 1.0):
        alpha = lambda p: jnp.stack(lensing.sie_deflection(p[0], p[1], theta_e, q, phi, x0, y0))
        for point in [(0.5, 0.8), (-1.2, 0.3), (2.0, -1.5)]:
            jac = np.asarray(jax.jacfwd(alpha)(jnp.array(point)))
            dx, dy = point[0] - x0, point[1] - y0
            u, v = np.cos(phi) * dx + np.sin(phi) * dy, -np.sin(phi) * dx + np.cos(phi) * dy
            kappa = theta_e * np.sqrt(q) / (2 * np.sqrt(q**2 * u**2 + v**2))
            np.testing.assert_allclose(jac[0, 0] + jac[1, 1], 2 * kappa, rtol=1e-4)
            assert abs(jac[0, 1] - jac[1, 0]) < 1e-4
    ax, ay = lensing.sie_deflection(jnp.array([0.3, -2.0]), jnp.array([1.1, 0.4]), theta_e, 1.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(np.hypot(ax, ay), theta_e, rtol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("theta_e", [0.8, 1.5, 2.5])
def test_einstein_ring_radius(size, theta_e):
    """A round lens and a centred source make a ring peaking at θ_E (radial profile in NumPy)."""
    optics = Optics(size=size)
    image = np.asarray(lensing.expected_counts(theta_e, _nuisance(), optics)) - optics.sky
    centre = (size - 1) / 2  # pixel centres at (j + 1/2 - size/2) s: the optical axis is between pixels
    rows, cols = np.indices(image.shape)
    radius = np.hypot(rows - centre, cols - centre)
    bins = np.arange(0.0, size / 2, 0.5)
    which = np.digitize(radius.ravel(), bins)
    profile = np.array([image.ravel()[which == i].mean() if np.any(which == i) else 0.0 for i in range(1, len(bins))])
    peak = bins[np.argmax(profile)] + 0.25
    expected = theta_e / optics.pixel_scale
    assert abs(peak - expected) <= 0.75, (peak, expected)
    assert profile.max() > 5 * image[int(centre), int(centre)] + 1e-3  # a ring, not a blob


def test_psf_conserves_flux_and_has_the_stated_width():
    optics = Optics(size=32, psf_fwhm=0.6)
    kernel = lensing.psf_matrix(optics.size, optics.pixel_scale, optics.psf_fwhm)
    image = np.random.default_rng(0).exponential(size=(32, 32)).astype(np.float32)
    np.testing.assert_allclose(float(lensing.blur(jnp.asarray(image), kernel).sum()), image.sum(), rtol=1e-5)
    point = np.zeros((32, 32), np.float32)
    point[16, 16] = 1.0
    blurred = np.asarray(lensing.blur(jnp.asarray(point), kernel))
    np.testing.assert_allclose(blurred.sum(), 1.0, rtol=1e-5)
    offsets = np.arange(32) - 16
    var_rows = (blurred.sum(1) * offsets**2).sum()
    sigma = optics.psf_fwhm / (2 * np.sqrt(2 * np.log(2))) / optics.pixel_scale
    np.testing.assert_allclose(var_rows, sigma**2, rtol=0.02)
    # and the lensed image keeps its flux through the PSF
    lensed = lensing.expected_counts(1.5, _nuisance(source_re=0.3), optics) - optics.sky
    sharp = lensing.expected_counts(1.5, _nuisance(source_re=0.3), optics._replace(psf_fwhm=1e-3)) - optics.sky
    np.testing.assert_allclose(float(lensed.sum()), float(sharp.sum()), rtol=1e-4)


def test_noise_level_follows_counts():
    """x = m + √m ε: residuals standardised by √m are N(0, 1); the variance grows as m."""
    optics = Optics(size=32)
    counts = lensing.expected_counts(1.5, _nuisance(source_re=0.3), optics)
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    draws = np.asarray(jax.vmap(lensing.noisy, in_axes=(0, None))(keys, counts), np.float64)
    m = np.asarray(counts, np.float64)
    z = (draws - m) / np.sqrt(m)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    bright, faint = m > 3 * optics.sky, m < 1.1 * optics.sky
    assert bright.sum() > 10 and faint.sum() > 10
    ratio = draws.var(0)[bright].mean() / draws.var(0)[faint].mean()
    np.testing.assert_allclose(ratio, m[bright].mean() / m[faint].mean(), rtol=0.1)
    # the full simulator has the same residual level, at its own nuisance draw
    key_nuisance, key_noise = jax.random.split(jax.random.PRNGKey(3))
    x = lensing.simulator(jax.random.PRNGKey(3), jnp.array([1.5]), optics)
    mean = lensing.expected_counts(1.5, lensing.sample_nuisance(key_nuisance), optics)
    np.testing.assert_allclose(np.std((x - mean) / np.sqrt(mean)), 1.0, atol=0.08)


@pytest.fixture(scope="module")
def trained():
    """A CNN estimator on 16 × 16 images (CI-sized: 4000 simulations, 15 epochs)."""
    task = lensing.make(size=16)
    bank = simulate(jax.random.PRNGKey(0), task, 4000, progress=False)
    result = fit(jax.random.PRNGKey(1), bank, embedding="cnn", embedding_features=32, hidden_features=(64, 64),
                 batch_size=128, max_epochs=15, patience=5, progress=False)
    return task, result.estimator


SAMPLER = dict(num_samples=1000, num_chains=10, num_warmup=200, num_init_candidates=2000)


def test_posterior_covers_held_out_einstein_radii(trained):
    task, estimator = trained
    test = simulate(jax.random.PRNGKey(9), task, 8, progress=False)
    post = sample_posterior(jax.random.PRNGKey(2), estimator, task.prior, test.x, **SAMPLER)
    samples, truth = np.asarray(post.samples)[..., 0], np.asarray(test.theta)[:, 0]
    lo, hi = np.quantile(samples, 0.005, 1), np.quantile(samples, 0.995, 1)
    assert np.sum((truth >= lo) & (truth <= hi)) >= 7, (truth, lo, hi)
    assert np.median(samples.std(1)) < 0.3  # informative: the prior's std is 0.72
    assert np.all(np.asarray(post.rhat) < 1.1)


@pytest.mark.slow
def test_population_posterior_narrows(trained):
    task, estimator = trained
    population = lensing.population_observation(5, seed=1, size=16)
    stds = []
    for k in (1, 5):
        post = sample_posterior(jax.random.PRNGKey(3), estimator, task.prior, population[:k], iid=True, **SAMPLER)
        s = np.asarray(post.samples)[:, 0]
        assert abs(s.mean() - lensing.TRUE_EINSTEIN_RADIUS) < 3 * s.std() + 0.05
        stds.append(s.std())
    assert stds[1] < 0.7 * stds[0], stds
