"""Networks (aalr_jax.nn): embeddings (shapes, determinism, gradients, save/load, a tiny fit), the
head's quadratic terms in θ by hand, the exp-based activations."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aalr_jax import fit, io, simulate
from aalr_jax.nn import EMBEDDINGS, NetworkConfig, RatioEstimator, Standardization, init_estimator
from aalr_jax.priors import box_uniform

CASES = [
    ("cnn", (12, 12)),  # channel axis added
    ("cnn", (9, 11, 3)),  # odd sizes, 3 channels
    ("resnet", (8, 8, 2)),
    ("conv1d", (25, 3)),
    ("resnet1d", (30,)),
]

embed = jax.jit(lambda est, x: est.embed(x))
log_ratio = jax.jit(lambda est, theta, x: est.log_ratio(theta, x))


@functools.lru_cache(maxsize=None)
def _estimator(name, x_shape, features=16, seed=0):
    config = NetworkConfig(2, x_shape, (32, 32), embedding=name, embedding_features=features)
    rng = np.random.default_rng(seed)
    std = Standardization(
        jnp.asarray(rng.normal(size=2), jnp.float32),
        jnp.asarray(rng.uniform(0.5, 2.0, size=2), jnp.float32),
        jnp.asarray(rng.normal(size=x_shape), jnp.float32),
        jnp.asarray(rng.uniform(0.5, 2.0, size=x_shape), jnp.float32),
    )
    return init_estimator(jax.random.PRNGKey(seed), config, std)


def _x(x_shape, batch=(), seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), batch + tuple(x_shape))


@pytest.mark.parametrize("name,x_shape", CASES)
def test_shapes_batched_and_unbatched(name, x_shape):
    est = _estimator(name, x_shape)
    shape = lambda f, *args: jax.eval_shape(f, est, *args).shape
    assert shape(embed, _x(x_shape)) == (16,)
    assert shape(embed, _x(x_shape, (5,))) == (5, 16)
    assert shape(embed, _x(x_shape, (2, 3))) == (2, 3, 16)
    theta = jnp.zeros((4, 2))
    assert shape(log_ratio, theta, _x(x_shape)) == (4,)  # many θ, one x
    assert shape(log_ratio, theta[0], _x(x_shape, (4,))) == (4,)  # one θ, many x
    assert shape(log_ratio, theta, _x(x_shape, (4,))) == (4,)


@pytest.mark.parametrize("name,x_shape", CASES)
def test_deterministic_and_per_example(name, x_shape):
    """Same input, same output; no statistics are shared across a batch."""
    est = _estimator(name, x_shape)
    x = _x(x_shape, (6,))
    a = embed(est, x)
    np.testing.assert_array_equal(embed(est, x), a)
    assert np.all(np.isfinite(a)) and np.std(np.asarray(a)) > 0
    np.testing.assert_allclose(embed(est, x[:1])[0], a[0], rtol=1e-5, atol=1e-5)  # alone = in a batch
    perturbed = x.at[1:].add(10.0)  # other rows change: row 0 must not
    np.testing.assert_allclose(embed(est, perturbed)[0], a[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,x_shape", CASES)
def test_gradients_finite(name, x_shape):
    est = _estimator(name, x_shape)
    theta, x = jax.random.normal(jax.random.PRNGKey(2), (8, 2)), _x(x_shape, (8,))

    def loss(params, theta):
        return dataclasses.replace(est, params=params).log_ratio(theta, x).mean()

    grads, g_theta = jax.jit(jax.grad(loss, argnums=(0, 1)))(est.params, theta)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves) and np.all(np.isfinite(g_theta))
    assert all(float(jnp.abs(g).sum()) > 0 for g in leaves)  # every parameter is used


def test_config_defaults_and_validation():
    config = NetworkConfig(3, (8, 8))  # positional construction still works
    assert config.embedding == "flatten" and config.embedding_features == 64
    assert {"flatten", "cnn", "resnet", "conv1d", "resnet1d"} <= set(EMBEDDINGS)
    with pytest.raises(ValueError, match="embedding_features"):
        NetworkConfig(1, (8, 8), embedding="cnn", embedding_features=0).validate()
    with pytest.raises(ValueError, match="x_shape"):
        _estimator("cnn", (30,))
    with pytest.raises(ValueError, match="x_shape"):
        _estimator("conv1d", (4, 4, 4))


def test_quadratic_form_by_hand():
    """``quadratic=True``: the logit is the plain MLP's plus θ̃ᵀ A u, θ̃ = z(θ)/√(1 + (z(θ)/b)²) and
    u = [θ̃, z(x)] computed here from the standardisation by hand; A starts at zero (training starts
    from the MLP)."""
    rng = np.random.default_rng(0)
    config = NetworkConfig(2, (3,), (8,), quadratic=True)
    std = Standardization(*(jnp.asarray(v, jnp.float32) for v in (
        rng.normal(size=2), rng.uniform(0.5, 2.0, 2), rng.normal(size=3), rng.uniform(0.5, 2.0, 3))))
    est = init_estimator(jax.random.PRNGKey(0), config, std)
    plain = RatioEstimator(config._replace(quadratic=False), nnx.State({"head": est.params["head"]}), std)
    theta, x = 8.0 * rng.normal(size=(6, 2)), rng.normal(size=(6, 3))  # |z(θ)| up to ~20: the bound acts
    np.testing.assert_allclose(est.log_ratio(theta, x), plain.log_ratio(theta, x), rtol=1e-6)
    a = rng.normal(size=(5, 2)).astype(np.float32)  # (p, d): nnx.Linear's kernel layout
    params = jax.tree_util.tree_map(lambda v: v, est.params)
    params["quad"]["kernel"].value = jnp.asarray(a)
    z = (theta - np.asarray(std.theta_loc)) / np.asarray(std.theta_scale)
    bounded = z / np.sqrt(1 + (z / 10.0) ** 2)
    u = np.concatenate([bounded, (x - np.asarray(std.x_loc)) / np.asarray(std.x_scale)], -1)
    expected = np.asarray(plain.log_ratio(theta, x)) + np.einsum("nk,kj,nj->n", u, a, bounded)
    np.testing.assert_allclose(RatioEstimator(config, params, std).log_ratio(theta, x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="quadratic must be True, False or None \(fit chooses\), got 'yes'"):
        NetworkConfig(2, (3,), quadratic="yes").validate()
    # None (fit's choice) builds the plain network directly, and its config says so
    unset = init_estimator(jax.random.PRNGKey(0), config._replace(quadratic=None), std)
    assert unset.config.quadratic is False and set(unset.params) == {"head"}
    np.testing.assert_allclose(unset.log_ratio(theta, x), plain.log_ratio(theta, x), rtol=1e-6)


@pytest.mark.parametrize("name,x_shape", CASES[1:4])
def test_save_load_round_trip(tmp_path, name, x_shape):
    est = _estimator(name, x_shape, features=24)
    path = tmp_path / f"{name}.npz"
    io.save_estimator(path, est)
    loaded = io.load_estimator(path)
    assert loaded.config == est.config and loaded.config.embedding_features == 24
    assert io.load_metadata(path)["config"]["embedding_features"] == 24
    theta, x = jax.random.normal(jax.random.PRNGKey(3), (5, 2)), _x(x_shape, (5,))
    np.testing.assert_array_equal(log_ratio(loaded, theta, x), log_ratio(est, theta, x))


def _blob_simulator(rng_key, theta):
    """Toy images: a Gaussian blob at column θ_1, row θ_2 (pixels) on a 12 × 12 grid, plus noise."""
    i = jnp.arange(12.0)
    image = jnp.exp(-0.5 * (((i[None, :] - theta[0]) ** 2 + (i[:, None] - theta[1]) ** 2) / 1.5**2))
    return image + 0.1 * jax.random.normal(rng_key, (12, 12))


@pytest.mark.parametrize("name", ["cnn", pytest.param("resnet", marks=pytest.mark.slow)])
def test_tiny_fit_reduces_loss(name):
    problem = (box_uniform(2.0, 9.0 * jnp.ones(2)), _blob_simulator)
    bank = simulate(jax.random.PRNGKey(0), problem, 2000, progress=False)
    result = fit(jax.random.PRNGKey(1), bank, embedding=name, embedding_features=16, hidden_features=(32, 32),
                 batch_size=128, learning_rate=3e-3, max_epochs=8, patience=8, progress=False)
    val = result.history.validation_loss
    assert result.estimator.config.embedding == name
    # 2 log 2 ≈ 1.386 is the loss of a classifier that knows nothing
    assert val.min() < 0.8 * 2 * np.log(2) and val.min() < val[0]


@pytest.mark.parametrize("name, reference", [("selu", jax.nn.selu), ("elu", jax.nn.elu)])
def test_activation_matches_jax(name, reference):
    """The exp-based ELU/SELU agree with jax.nn's expm1-based ones in value and gradient."""
    from aalr_jax.nn import ACTIVATIONS

    x = jnp.concatenate([jnp.linspace(-30.0, 30.0, 2001), jnp.array([-1e-9, -1e-4, 0.0, 1e-9, 1e-4])])
    ours, theirs = ACTIVATIONS[name], reference
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=2e-7)
    grad = lambda f: jax.vmap(jax.grad(f))(x)
    np.testing.assert_allclose(grad(ours), grad(theirs), rtol=1e-6, atol=2e-7)
    assert np.all(np.isfinite(grad(ours)))
