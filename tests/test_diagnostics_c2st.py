"""C2ST as sbibm computes it: 0.5 for one distribution, Φ(δ/2) for N(0, 1) against N(δ, 1)."""

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("sklearn")

from aalr_jax.diagnostics import c2st  # noqa: E402


def test_same_distribution_is_chance():
    rng = np.random.default_rng(0)
    score = c2st(rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2)))
    assert abs(score - 0.5) < 0.05


def test_shifted_gaussians_reach_the_bayes_accuracy():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2000, 1)), 1.0 + rng.standard_normal((2000, 1))
    score = c2st(x, y)
    assert abs(score - stats.norm.cdf(0.5)) < 0.03, score  # 0.691


def test_z_scoring_uses_the_reference_and_inputs_are_checked():
    rng = np.random.default_rng(2)
    x = 1000.0 + 50.0 * rng.standard_normal((500, 1))
    assert c2st(x, x + 0.0) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="shapes"):
        c2st(np.zeros((10, 2)), np.zeros((10, 3)))
