r"""The ratio estimator: a Flax NNX network whose output is the logit ``f(θ, x) = log r̂(x|θ)``.

The network is split in two so that a fixed observation is embedded once, not at every MCMC step:

* ``embed(x) -> features``: an embedding of the standardised observation (here the identity on the
  flattened ``x``; convolutional embeddings plug in through :data:`EMBEDDINGS`).
* ``head(θ, features) -> logit``: an MLP (SELU by default) on ``[z(θ), features]``.

Inputs are z-scored inside the estimator with statistics of the training bank, so users pass raw
θ and x: ``z(θ) = (θ - θ_loc) / θ_scale``, ``z(x) = (x - x_loc) / x_scale`` (elementwise).

The module is split once (``nnx.split``) into a static graph, cached per :class:`NetworkConfig`,
and a parameter pytree. :class:`RatioEstimator` carries ``(config, params, standardization)`` as a
JAX pytree whose config is static, so it passes straight through ``jax.jit`` and every function
downstream is pure: ``estimator.log_ratio(theta, x)``. This is the only module importing Flax.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "ACTIVATIONS",
    "EMBEDDINGS",
    "NetworkConfig",
    "RatioEstimator",
    "Standardization",
    "init_estimator",
    "standardization_from",
]

ACTIVATIONS = {
    "selu": jax.nn.selu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


class NetworkConfig(NamedTuple):
    """Static, JSON-serialisable description of the network (hashable: it keys the graph cache).

    Attributes:
        theta_dim: d, the parameter dimension.
        x_shape: shape of one observation.
        hidden_features: widths of the head's hidden layers.
        activation: a key of :data:`ACTIVATIONS`.
        embedding: a key of :data:`EMBEDDINGS`.
    """

    theta_dim: int
    x_shape: tuple
    hidden_features: tuple = (128, 128, 128)
    activation: str = "selu"
    embedding: str = "flatten"

    def validate(self) -> "NetworkConfig":
        if self.theta_dim < 1:
            raise ValueError(f"theta_dim must be >= 1, got {self.theta_dim}")
        if len(self.hidden_features) == 0 or min(self.hidden_features) < 1:
            raise ValueError(f"hidden_features must be positive widths, got {self.hidden_features}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {sorted(EMBEDDINGS)}, got {self.embedding!r}")
        return self


class Standardization(NamedTuple):
    """z-scoring statistics: ``theta_loc, theta_scale: (d,)``, ``x_loc, x_scale: x_shape``."""

    theta_loc: jax.Array
    theta_scale: jax.Array
    x_loc: jax.Array
    x_scale: jax.Array


def standardization_from(theta: jax.Array, x: jax.Array, *, min_scale: float = 1e-6) -> Standardization:
    """Mean and standard deviation over the leading axis; constant components get scale 1.

    Args:
        theta: ``(n, d)``.
        x: ``(n, *x_shape)``.
    """

    def stats(a):
        a = jnp.asarray(a, jnp.float32)
        loc, scale = a.mean(0), a.std(0)
        return loc, jnp.where(scale > min_scale, scale, 1.0)

    return Standardization(*stats(theta), *stats(x))


class Flatten(nnx.Module):
    """Identity embedding: ``(..., *x_shape) -> (..., prod(x_shape))``."""

    def __init__(self, x_shape: tuple, *, rngs: nnx.Rngs):
        del rngs
        self.x_ndim = len(x_shape)
        self.num_features = math.prod(x_shape)

    def __call__(self, x):
        return x.reshape(x.shape[: x.ndim - self.x_ndim] + (self.num_features,))


EMBEDDINGS = {"flatten": Flatten}


class MLP(nnx.Module):
    """Fully connected layers with an activation between them and a linear scalar output."""

    def __init__(self, in_features: int, hidden: tuple, activation: str, *, rngs: nnx.Rngs):
        widths = (in_features,) + tuple(hidden)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.out = nnx.Linear(widths[-1], 1, rngs=rngs)
        self.activation = activation

    def __call__(self, h):
        act = ACTIVATIONS[self.activation]
        for layer in self.layers:
            h = act(layer(h))
        return self.out(h)[..., 0]


class RatioNetwork(nnx.Module):
    """``embed(z(x)) -> features``; ``head(z(θ), features) -> logit``."""

    def __init__(self, config: NetworkConfig, *, rngs: nnx.Rngs):
        self.embedding = EMBEDDINGS[config.embedding](tuple(config.x_shape), rngs=rngs)
        self.head = MLP(
            config.theta_dim + self.embedding.num_features,
            tuple(config.hidden_features),
            config.activation,
            rngs=rngs,
        )

    def embed(self, x):
        return self.embedding(x)

    def logit(self, theta, features):
        batch = jnp.broadcast_shapes(theta.shape[:-1], features.shape[:-1])
        theta = jnp.broadcast_to(theta, batch + theta.shape[-1:])
        features = jnp.broadcast_to(features, batch + features.shape[-1:])
        return self.head(jnp.concatenate([theta, features], axis=-1))


@functools.lru_cache(maxsize=64)
def _graphdef(config: NetworkConfig):
    graphdef, _ = nnx.split(RatioNetwork(config, rngs=nnx.Rngs(0)))
    return graphdef


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["params", "standardization"],
    meta_fields=["config"],
)
@dataclasses.dataclass(frozen=True)
class RatioEstimator:
    """A ratio estimator as a pytree: static ``config``, array ``params`` and ``standardization``.

    Shapes broadcast over leading dimensions: one θ with many x, many θ with one x, or both.
    """

    config: NetworkConfig
    params: nnx.State
    standardization: Standardization

    def _network(self) -> RatioNetwork:
        return nnx.merge(_graphdef(self.config), self.params)

    def embed(self, x: jax.Array) -> jax.Array:
        """Features of raw observations: ``(..., *x_shape) -> (..., num_features)``."""
        s = self.standardization
        return self._network().embed((jnp.asarray(x, jnp.float32) - s.x_loc) / s.x_scale)

    def head(self, theta: jax.Array, features: jax.Array) -> jax.Array:
        """Logit from raw θ ``(..., d)`` and features ``(..., num_features)``: ``(...,)``."""
        s = self.standardization
        z = (jnp.asarray(theta, jnp.float32) - s.theta_loc) / s.theta_scale
        return self._network().logit(z, features)

    def log_ratio(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        """``log r̂(x|θ)`` for θ ``(..., d)`` and x ``(..., *x_shape)``: ``(...,)``."""
        return self.head(theta, self.embed(x))

    @property
    def theta_dim(self) -> int:
        return self.config.theta_dim

    @property
    def x_shape(self) -> tuple:
        return tuple(self.config.x_shape)


def init_estimator(rng_key: jax.Array, config: NetworkConfig, standardization: Standardization) -> RatioEstimator:
    """A freshly initialised estimator (weights drawn from ``rng_key``)."""
    config = config.validate()
    seed = jax.random.randint(rng_key, (), 0, 2**31 - 1)
    _, params = nnx.split(RatioNetwork(config, rngs=nnx.Rngs(params=int(seed))))
    return RatioEstimator(config, params, standardization)
