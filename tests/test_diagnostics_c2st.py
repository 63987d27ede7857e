"""C2ST as sbibm computes it: 0.5 for one distribution, Φ(δ/2) for N(0, 1) against N(δ, 1), with
scikit-learn and with the JAX re-implementation of the same protocol."""

import numpy as np
import pytest
from scipy import stats

from aalr_jax.diagnostics import c2st

try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sklearn = None
needs_sklearn = pytest.mark.skipif(sklearn is None, reason="scikit-learn is not installed")

BACKENDS = [pytest.param("sklearn", marks=needs_sklearn), "jax"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_distribution_is_chance(backend):
    rng = np.random.default_rng(0)
    score = c2st(rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2)), backend=backend)
    assert abs(score - 0.5) < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_shifted_gaussians_reach_the_bayes_accuracy(backend):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2000, 1)), 1.0 + rng.standard_normal((2000, 1))
    score = c2st(x, y, backend=backend)
    assert abs(score - stats.norm.cdf(0.5)) < 0.03, score  # 0.691


@needs_sklearn
def test_backends_agree_in_two_dimensions():
    """A 2-D Gaussian shifted by 0.6 along a diagonal: Bayes accuracy Φ(0.3) = 0.618."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 2))
    y = rng.standard_normal((3000, 2)) + 0.6 / np.sqrt(2)
    ours, theirs = c2st(x, y, backend="jax"), c2st(x, y, backend="sklearn")
    assert abs(ours - theirs) < 0.03, (ours, theirs)
    assert abs(ours - stats.norm.cdf(0.3)) < 0.03, ours


def test_jax_backend_batches_pairs_scores_auc_and_uneven_folds():
    rng = np.random.default_rng(4)
    # 1001 + 1000 rows: folds of 401 and 400, as scikit-learn's KFold
    x, y = rng.standard_normal((2, 1001, 1)), rng.standard_normal((2, 1000, 1))
    y[1] += 1.0
    batch = c2st(x, y, backend="jax")
    assert batch.shape == (2,)
    assert abs(batch[0] - 0.5) < 0.05 and abs(batch[1] - stats.norm.cdf(0.5)) < 0.04, batch
    for i in range(2):  # alone = at any place in a batch
        assert c2st(x[i], y[i], backend="jax") == pytest.approx(batch[i], abs=1e-3)
    auc = c2st(x[1], y[1], backend="jax", scoring="roc_auc")
    assert abs(auc - stats.norm.cdf(1.0 / np.sqrt(2))) < 0.03, auc  # P(Y > X) = 0.760


def test_jax_backend_stops_at_max_iter():
    """One epoch of Adam from the random start cannot fit a narrow band: accuracy stays lower."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2000, 1))
    y = np.where(rng.random((2000, 1)) < 0.5, rng.uniform(-1, -0.8, (2000, 1)), rng.uniform(0.8, 1, (2000, 1)))
    full, short = c2st(x, y, backend="jax"), c2st(x, y, backend="jax", max_iter=1)
    assert full > 0.85 and short < full - 0.05, (full, short)  # Bayes: 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_z_scoring_uses_the_reference_and_inputs_are_checked(backend):
    rng = np.random.default_rng(2)
    x = 1000.0 + 50.0 * rng.standard_normal((500, 1))
    assert c2st(x, x + 0.0, backend=backend) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="shapes"):
        c2st(np.zeros((10, 2)), np.zeros((10, 3)), backend=backend)


def test_bad_arguments_are_named():
    x = np.zeros((10, 1))
    with pytest.raises(ValueError, match="backend"):
        c2st(x, x, backend="torch")
    with pytest.raises(ValueError, match="scoring"):
        c2st(x, x, backend="jax", scoring="f1")
    with pytest.raises(ValueError, match="max_iter"):
        c2st(x, x, max_iter=0)
    with pytest.raises(ValueError, match="shapes"):
        c2st(np.zeros((2, 10, 1)), np.zeros((3, 10, 1)), backend="jax")
    with pytest.raises(ValueError, match="finite"):
        c2st(np.full((10, 1), np.nan), x, backend="jax")


def test_samples_that_cannot_be_z_scored_raise_instead_of_scoring_chance():
    """Values that overflow X's standard deviation, a constant reference column, or z-scored
    values beyond float32 for the jax backend (diverged MCMC chains at 1e38 did this): the
    classifier would see NaN and score exactly 0.5 ("indistinguishable"), so c2st must refuse."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 2))
    huge = np.concatenate([x[:50], np.full((50, 2), 1e308)])  # std overflows in float64
    with pytest.raises(ValueError, match="cannot be z-scored.*1e\\+308"):
        c2st(huge, x, backend="jax")
    constant = x.copy()
    constant[:, 1] = 3.0
    with pytest.raises(ValueError, match="constant column"):
        c2st(constant, x, backend="jax")
    assert c2st(constant, x + 10.0, backend="jax", z_score=False, max_iter=50) > 0.9
    # finite in float64 but not in the jax backend's float32: the case of diverged float32 chains
    far = np.concatenate([x[:50], np.full((50, 2), 1e39)])
    with pytest.raises(ValueError, match="float32"):
        c2st(x, far, backend="jax")
