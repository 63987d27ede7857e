"""The ROC diagnostic and the normalisation check with exact and deliberately wrong ratios
(gaussian_linear in 2-D: log r = log N(x; θ, 0.1 I) - log N(x; 0, 0.2 I))."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from aalr_jax import ExactLikelihood
from aalr_jax.diagnostics import normalization_check, roc_diagnostic, weighted_auc
from aalr_jax.tasks import gaussian_linear

TASK = gaussian_linear.make(2)
THETA = jnp.array([[0.3, -0.2], [-0.4, 0.3]])
SETTINGS = dict(num_samples=2000, hidden_features=(32, 32), num_epochs=300)


def ratio(shift=0.0, offset=0.0):
    """Exact log-ratio (``shift=offset=0``), with the likelihood's mean shifted, or off by a constant."""
    def log_r(theta, x):
        log_lik = dist.Normal(theta + shift, np.sqrt(0.1)).log_prob(x).sum()
        return log_lik - dist.Normal(0.0, np.sqrt(0.2)).log_prob(x).sum() + offset

    return ExactLikelihood(log_r, (2,))


def test_weighted_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 300), np.round(rng.normal(0, 1, 400), 1)  # ties included
    w = rng.exponential(size=400)
    got = weighted_auc(jnp.asarray(pos), jnp.asarray(neg), jnp.asarray(w))
    scores, labels = np.concatenate([pos, neg]), np.concatenate([np.ones(300), np.zeros(400)])
    want = metrics.roc_auc_score(labels, scores, sample_weight=np.concatenate([np.ones(300), w]))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(weighted_auc(jnp.asarray(pos), jnp.asarray(pos)), 0.5)


def test_exact_ratio_passes_and_wrong_ratio_fails():
    exact = roc_diagnostic(jax.random.PRNGKey(0), ratio(), TASK, THETA, **SETTINGS)
    assert exact.auc.shape == (2,) and exact.tpr.shape == (2, len(exact.fpr))
    assert exact.hidden_features == (32, 32) and exact.num_epochs == 300
    assert exact.num_train == exact.num_test == 1000
    assert np.all(np.abs(exact.auc - 0.5) < 3 * exact.auc_std + 0.02), (exact.auc, exact.auc_std)
    assert np.all(exact.auc_std > 0) and np.all(exact.weight_ess > 50)
    assert np.all(np.diff(exact.tpr, axis=1) >= -1e-9) and np.allclose(exact.tpr[:, -1], 1.0)

    wrong = roc_diagnostic(jax.random.PRNGKey(0), ratio(shift=0.3), TASK, THETA, **SETTINGS)
    assert np.all(wrong.auc > 0.7) and np.all(wrong.auc - 5 * wrong.auc_std > 0.5), (wrong.auc, wrong.auc_std)


def test_roc_rejects_bad_theta():
    with pytest.raises(ValueError, match="theta"):
        roc_diagnostic(jax.random.PRNGKey(0), ratio(), TASK, jnp.zeros(3), **SETTINGS)


def test_normalization_check():
    x = jnp.array([[0.1, 0.2], [0.6, -0.5], [-0.3, 0.0]])
    good = normalization_check(jax.random.PRNGKey(1), ratio(), TASK.prior, x, num_samples=50_000)
    assert good.mean.shape == good.stderr.shape == (3,)
    assert np.all(np.abs(good.mean - 1) < 4 * good.stderr + 1e-3), (good.mean, good.stderr)
    off = normalization_check(jax.random.PRNGKey(1), ratio(offset=0.5), TASK.prior, x[0], num_samples=50_000)
    np.testing.assert_allclose(off.mean, np.exp(0.5) * good.mean[0], rtol=1e-4)
    with pytest.raises(ValueError, match="x_obs"):
        normalization_check(jax.random.PRNGKey(1), ratio(), TASK.prior, jnp.zeros(3))
