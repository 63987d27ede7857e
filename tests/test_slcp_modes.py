"""SLCP's four sign modes: the sign-symmetric ratio and the per-mode chains of the task module."""

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax import diagnostics, sample_posterior, tasks
from aalr_jax.chains import PosteriorSamples
from aalr_jax.tasks import slcp
from aalr_jax.types import ExactLikelihood

TASK = tasks.get("slcp")


def tilted(theta, x):
    """The exact log-likelihood plus terms odd in θ_3 and θ_4, which the sign average cancels."""
    return slcp.log_likelihood(theta, x) + 0.7 * theta[2] - 0.4 * theta[3] + 0.3 * theta[2] * theta[3]


def test_sign_symmetric_cancels_the_odd_part_exactly():
    theta = TASK.prior.sample(jax.random.PRNGKey(0), (64,))
    x = TASK.default_observation
    model = slcp.SignSymmetric(ExactLikelihood(tilted, (8,)))
    truth = jax.vmap(slcp.log_likelihood, (0, None))(theta, x)
    got = model.log_ratio(theta, x[None])
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-3)
    assert model.x_shape == (8,) and model.theta_dim == 5


def test_random_signs_changes_only_the_signs_of_theta3_and_theta4():
    chains = -jnp.abs(jax.random.normal(jax.random.PRNGKey(1), (8, 600, 5))) - 0.1  # every chain in (−, −)
    post = PosteriorSamples(samples=jnp.swapaxes(chains, 0, 1).reshape(4800, 5)[:4790], chains=chains,
                            acceptance_rate=jnp.ones(8), num_divergent=jnp.zeros(8), step_size=jnp.ones(8),
                            rhat=jnp.ones(5), ess=jnp.ones(5))
    out = slcp.random_signs(jax.random.PRNGKey(3), post)
    np.testing.assert_array_equal(np.abs(out.chains), np.abs(chains))
    np.testing.assert_array_equal(out.chains[..., [0, 1, 4]], chains[..., [0, 1, 4]])
    np.testing.assert_array_equal(out.samples, np.swapaxes(np.asarray(out.chains), 0, 1).reshape(4800, 5)[:4790])
    signs = np.sign(np.asarray(out.chains[..., 2:4])).reshape(8, 600, 2)
    for c in range(8):  # every chain visits the four modes, 150 of its 600 draws each, in random order
        mode = 2 * (signs[c, :, 0] > 0) + (signs[c, :, 1] > 0)
        np.testing.assert_array_equal(np.bincount(mode, minlength=4), 150)
        assert np.mean(mode[1:] != mode[:-1]) > 0.6  # about 3/4 of consecutive draws change mode
    batched = slcp.random_signs(jax.random.PRNGKey(3), post._replace(
        samples=post.samples[None], chains=chains[None], rhat=post.rhat[None], ess=post.ess[None]))
    assert batched.chains.shape == (1, 8, 600, 5) and batched.rhat.shape == (1, 5)


def test_tilted_likelihood_made_symmetric_has_four_modes_with_equal_weights():
    """HMC on SignSymmetric(tilted) samples the exact posterior: with random signs its four modes
    weigh exactly ¼ each, every chain visits them (mode-aware R-hat near 1), and the folded moments match
    self-normalised importance sampling from the prior."""
    x = TASK.default_observation
    post = sample_posterior(jax.random.PRNGKey(2), slcp.SignSymmetric(ExactLikelihood(tilted, (8,))),
                            TASK.prior, x, num_samples=4000, num_chains=40, num_warmup=300)
    post = slcp.random_signs(jax.random.PRNGKey(5), post)
    report = diagnostics.mcmc_report(post)
    assert np.nanmax(report.mode_rhat) < 1.05
    s = np.asarray(post.samples)
    quadrant = 2 * (s[:, 2] > 0) + (s[:, 3] > 0)
    np.testing.assert_array_equal(np.bincount(quadrant, minlength=4), len(s) // 4)  # 100 draws per chain
    theta = TASK.prior.sample(jax.random.PRNGKey(9), (1_000_000,))
    log_w = jax.vmap(slcp.log_likelihood, (0, None))(theta, x)
    w = np.exp(np.asarray(log_w - log_w.max()))
    w /= w.sum()
    assert 1.0 / np.sum(w**2) > 70
    fold = lambda t: np.concatenate([t[:, :2], np.abs(t[:, 2:4]), t[:, 4:]], axis=1)
    np.testing.assert_allclose(fold(s).mean(0), (w[:, None] * fold(np.asarray(theta))).sum(0), atol=0.2)
