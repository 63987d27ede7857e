"""The loss pieces (aalr_jax.losses) against NumPy computations in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aalr_jax.losses import (WEIGHT_LOGIT_CLIP, LossConfig, aalr_loss, balanced_penalty, negatives, objective,
                             pair_logits, plain_loss, ratio_weights)

LJ = np.array([2.0, -1.0, 30.0, 0.3])
LM = np.array([0.5, -3.0, 14.0])


def softplus(v):
    return np.logaddexp(0.0, np.asarray(v, np.float64))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))


def np_weights(f, alpha):
    return (1.0 + np.exp(np.minimum(np.asarray(f, np.float64), WEIGHT_LOGIT_CLIP))) ** alpha


def np_aalr(lj, lm, alpha=0.0):
    return np.mean(np_weights(lj, alpha) * softplus(-lj)) + np.mean(np_weights(lm, alpha) * softplus(lm))


def test_aalr_loss_without_weights():
    expected = np.mean(-np.log(sigmoid(LJ))) + np.mean(-np.log(1.0 - sigmoid(LM)))
    np.testing.assert_allclose(aalr_loss(jnp.asarray(LJ), jnp.asarray(LM)), expected, rtol=1e-6)
    # the log-sigmoid form stays exact where σ saturates in float32
    np.testing.assert_allclose(aalr_loss(jnp.array([-200.0]), jnp.array([200.0])), 400.0, rtol=1e-6)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
def test_aalr_loss_with_ratio_weights(alpha):
    np.testing.assert_allclose(ratio_weights(jnp.asarray(LM), alpha), np_weights(LM, alpha), rtol=1e-5)
    np.testing.assert_allclose(aalr_loss(jnp.asarray(LJ), jnp.asarray(LM), alpha), np_aalr(LJ, LM, alpha), rtol=1e-5)


def test_ratio_weights_carry_no_gradient():
    """At α = 1 a dependent pair's gradient is -1/n below the clip (the weight is a constant) and
    an independent pair's e^f/m: the NWJ form; above the clip the weight stops growing."""
    lj, lm = jnp.array([2.0, -1.0, 30.0]), jnp.array([0.5, -3.0])
    grad_j, grad_m = jax.grad(lambda a, b: aalr_loss(a, b, 1.0), argnums=(0, 1))(lj, lm)
    np.testing.assert_allclose(grad_j[:2], [-1 / 3, -1 / 3], rtol=1e-5)
    np.testing.assert_allclose(grad_j[2], -(1 + np.exp(12.0)) / (1 + np.exp(30.0)) / 3, rtol=1e-4)
    np.testing.assert_allclose(grad_m, np.exp([0.5, -3.0]) / 2, rtol=1e-5)


def test_balanced_penalty():
    expected = (sigmoid(LJ).mean() + sigmoid(LM).mean() - 1.0) ** 2
    np.testing.assert_allclose(balanced_penalty(jnp.asarray(LJ), jnp.asarray(LM)), expected, rtol=1e-5)
    # a classifier with σ(f_joint) = 1 - σ(f_marginal) on average is balanced
    assert float(balanced_penalty(jnp.array([1.0, -2.0]), jnp.array([-1.0, 2.0]))) < 1e-12


class QuadraticLogit:
    """A stand-in estimator: the features are x itself and the logit is ``-|θ - x|²``."""

    def embed(self, x):
        return x

    def head(self, theta, features):
        return -jnp.sum((theta - features) ** 2, axis=-1)


def test_negatives_pair_every_x_with_the_k_previous_thetas():
    theta = np.arange(10.0).reshape(5, 2)
    got = np.asarray(negatives(jnp.asarray(theta), 3))
    expected = np.concatenate([theta[(np.arange(5) - k) % 5] for k in (1, 2, 3)])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("k", [1, 3])
def test_pair_logits_and_objective_with_k_negatives(k):
    rng = np.random.default_rng(0)
    theta, x = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    logit = lambda t, v: -np.sum((t - v) ** 2)
    joint = np.array([logit(theta[i], x[i]) for i in range(5)])
    marginal = np.array([logit(theta[(i - j) % 5], x[i]) for j in range(1, k + 1) for i in range(5)])
    lj, lm = pair_logits(QuadraticLogit(), jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32), k)
    np.testing.assert_allclose(lj, joint, rtol=1e-5)
    np.testing.assert_allclose(lm, marginal, rtol=1e-5)
    config = LossConfig(ratio_weighting=0.5, balance=2.0, num_negatives=k)
    penalty = (sigmoid(joint).mean() + sigmoid(marginal).mean() - 1.0) ** 2
    np.testing.assert_allclose(objective(lj, lm, config), np_aalr(joint, marginal, 0.5) + 2.0 * penalty, rtol=1e-5)
    # the plain loss is unweighted with one negative, whatever K
    np.testing.assert_allclose(plain_loss(QuadraticLogit(), jnp.asarray(theta), jnp.asarray(x)),
                               np_aalr(joint, marginal[:5]), rtol=1e-5)


@pytest.mark.parametrize("field, value, error, match", [
    ("ratio_weighting", 1.5, ValueError, r"ratio_weighting must be a finite number in \[0, 1\], got 1.5"),
    ("ratio_weighting", float("nan"), ValueError, r"ratio_weighting must be a finite number in \[0, 1\], got nan"),
    ("balance", -1.0, ValueError, r"balance must be a finite number in \[0, inf\), got -1.0"),
    ("balance", float("nan"), ValueError, "balance must be a finite number"),
    ("balance", "100", TypeError, "balance must be a real number"),
    ("num_negatives", 0, ValueError, "num_negatives must be a positive integer, got 0"),
    ("num_negatives", 1.5, TypeError, "num_negatives must be an integer"),
])
def test_loss_config_refuses_bad_values(field, value, error, match):
    with pytest.raises(error, match=match):
        LossConfig(**{field: value}).validate()
    assert LossConfig(balance=100, num_negatives=2.0).validate() == LossConfig(0.5, 100.0, 2)
