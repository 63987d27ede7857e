"""The estimator's arithmetic (aalr_jax.nn): standardisation, the bounded θ input, the quadratic
terms at initialisation, broadcasting over leading dimensions, the parameter template."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aalr_jax.nn import NetworkConfig, RatioEstimator, init_estimator, parameter_template, standardization_from

CONFIG = NetworkConfig(theta_dim=2, x_shape=(3,), hidden_features=(16, 16))


def _bank(seed=0, n=500):
    rng = np.random.default_rng(seed)
    theta = rng.normal([1.0, -2.0], [0.5, 3.0], size=(n, 2)).astype(np.float32)
    x = rng.normal([0.0, 10.0, -4.0], [1.0, 0.1, 2.0], size=(n, 3)).astype(np.float32)
    return theta, x


def test_standardization_values_and_training_range():
    theta, x = _bank()
    x[:, 2] = 7.0  # a constant component gets scale 1
    s = standardization_from(theta, x)
    theta64, x64 = theta.astype(np.float64), x.astype(np.float64)
    np.testing.assert_allclose(s.theta_loc, theta64.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.theta_scale, theta64.std(0), rtol=1e-5)
    np.testing.assert_allclose(s.x_loc, x64.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.x_scale, [x64[:, 0].std(), x64[:, 1].std(), 1.0], rtol=1e-5)
    np.testing.assert_array_equal(s.x_min, x.min(0))
    np.testing.assert_array_equal(s.x_max, x.max(0))
    assert s.x_min.shape == s.x_max.shape == (3,)


def test_standardization_of_large_x_is_finite_and_scale_free():
    """x · 1e20 overflows float32's squares (1e40 > 3.4e38): the statistics stay finite and equal
    the unscaled ones times 1e20, so the network sees the same z(x)."""
    theta, x = _bank()
    plain, large = standardization_from(theta, x), standardization_from(theta, x * np.float32(1e20))
    assert np.all(np.isfinite(large.x_scale)) and np.all(np.isfinite(large.x_loc))
    np.testing.assert_allclose(large.x_scale, np.asarray(plain.x_scale) * 1e20, rtol=1e-5)
    np.testing.assert_allclose(large.x_loc, np.asarray(plain.x_loc) * 1e20, rtol=1e-5)
    # a power of two rescales exactly: the statistics are those of the unscaled bank, bit for bit
    exact = standardization_from(theta, x * np.float32(2.0**60))
    np.testing.assert_array_equal(exact.x_scale, np.asarray(plain.x_scale) * 2.0**60)
    tiny = standardization_from(theta, x * np.float32(1e-20))  # not mistaken for constant
    np.testing.assert_allclose(tiny.x_scale, np.asarray(plain.x_scale) * 1e-20, rtol=1e-5)


def test_standardization_refuses_a_spread_beyond_float32():
    theta, x = _bank(n=4)
    x = x.copy()
    x[:, 1] = [-3e38, 3e38, -3e38, 3e38]
    with pytest.raises(ValueError, match=r"x component \(1,\) spreads beyond float32's range.*rescale"):
        standardization_from(theta, x)


def _estimator(config=CONFIG, seed=1):
    theta, x = _bank()
    return init_estimator(jax.random.PRNGKey(seed), config, standardization_from(theta, x))


def test_bounded_theta_input_follows_its_formula():
    """The head sees z / √(1 + (z/b)²), z = (θ - loc)/scale: the same network without the bound,
    fed the raw θ that maps to that value, gives the same logit."""
    est = _estimator(CONFIG._replace(theta_bound=3.0))
    free = dataclasses.replace(est, config=est.config._replace(theta_bound=None))
    s = est.standardization
    theta = np.array([[0.0, 0.0], [1.0, -2.0], [40.0, -300.0], [-1e6, 1e6]], np.float32)
    z = (theta - np.asarray(s.theta_loc)) / np.asarray(s.theta_scale)
    bounded = z / np.sqrt(1.0 + (z / 3.0) ** 2)
    assert np.all(np.abs(bounded) <= 3.0) and np.abs(bounded).max() > 2.99  # bounded by b, and reaching it
    features = est.embed(jnp.ones((4, 3)))
    raw = np.asarray(s.theta_loc) + np.asarray(s.theta_scale) * bounded
    np.testing.assert_allclose(est.head(theta, features), free.head(raw, features), rtol=1e-5, atol=1e-5)


def test_quadratic_terms_are_zero_at_initialisation():
    quad = _estimator(CONFIG._replace(quadratic=True))
    assert np.all(np.asarray(quad.params["quad"]["kernel"][...]) == 0.0)
    plain_params = jax.tree.map(lambda a: a, quad.params)
    del plain_params["quad"]
    plain = RatioEstimator(CONFIG, plain_params, quad.standardization)
    theta, x = _bank(seed=2, n=20)
    np.testing.assert_array_equal(quad.log_ratio(theta, x), plain.log_ratio(theta, x))


def test_log_ratio_broadcasts_over_leading_dimensions():
    """Every batch layout gives the values of one-at-a-time evaluation."""
    est = _estimator()
    theta, x = _bank(seed=3, n=6)
    single = lambda t, v: float(est.log_ratio(t, v))
    many_theta = np.asarray(est.log_ratio(theta, x[0]))
    np.testing.assert_allclose(many_theta, [single(t, x[0]) for t in theta], rtol=1e-5, atol=1e-6)
    many_x = np.asarray(est.log_ratio(theta[0], x))
    np.testing.assert_allclose(many_x, [single(theta[0], v) for v in x], rtol=1e-5, atol=1e-6)
    grid = np.asarray(est.log_ratio(theta[:, None, :], x[None, :3, :]))  # (6, 1, d) with (1, 3, m)
    assert grid.shape == (6, 3)
    np.testing.assert_allclose(grid, [[single(t, v) for v in x[:3]] for t in theta], rtol=1e-5, atol=1e-6)


def test_parameter_template_matches_initialised_parameters():
    config = CONFIG._replace(quadratic=True)
    template, params = parameter_template(config), _estimator(config).params
    shapes = lambda tree: [(jax.tree_util.keystr(p), tuple(l.shape), l.dtype)
                           for p, l in jax.tree_util.tree_leaves_with_path(tree)]
    assert shapes(template) == shapes(params)


def test_network_config_needs_its_dimensions_to_build():
    assert NetworkConfig().theta_dim is None  # fit fills theta_dim and x_shape from the bank
    with pytest.raises(ValueError, match="theta_dim must be a positive integer, got None"):
        NetworkConfig().validate()
    with pytest.raises(ValueError, match=r"x_shape must be a tuple of positive integers, got \[3\]"):
        NetworkConfig(2, [3]).validate()
    with pytest.raises(ValueError, match="theta_bound must be a positive finite number or None, got nan"):
        NetworkConfig(2, (3,), theta_bound=float("nan")).validate()
