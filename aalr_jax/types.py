"""The contracts that modules share: the estimator protocol, exact likelihoods, simulation banks.

Everything downstream of training talks to an estimator through two pure functions,

* ``embed(x) -> features``: ``(..., *x_shape) -> (..., num_features)`` (an ensemble may add a
  leading member axis, which its own ``head`` consumes), and
* ``head(θ, features) -> logit``: ``(..., d), (..., num_features) -> (...,)``, the estimate of
  ``log r(x|θ)`` (or, for :class:`ExactLikelihood`, of ``log p(x|θ)``: the two differ by a function
  of ``x`` alone, which cancels in every posterior),

plus the attribute ``x_shape`` (and ``theta_dim`` where the estimator knows it: a trained network
does, an :class:`ExactLikelihood` takes the prior's). A fixed observation is embedded once and the
MCMC target evaluates only the head.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

__all__ = ["ExactLikelihood", "RatioModel", "SimulationBank", "check_ratio_model"]


@runtime_checkable
class RatioModel(Protocol):
    """What samplers, posteriors and diagnostics need of an estimator (see the module docstring)."""

    x_shape: tuple

    def embed(self, x: jax.Array) -> jax.Array: ...

    def head(self, theta: jax.Array, features: jax.Array) -> jax.Array: ...


def check_ratio_model(estimator, name: str = "estimator") -> None:
    """Raise ``TypeError`` naming ``name`` unless ``estimator`` satisfies :class:`RatioModel`."""
    missing = [m for m in ("embed", "head", "x_shape") if not hasattr(estimator, m)]
    if missing:
        raise TypeError(
            f"{name} must be a ratio estimator (from fit, fit_ensemble or load_estimator) or an "
            f"ExactLikelihood, got {type(estimator).__name__} without {', '.join(missing)}"
        )


class SimulationBank(NamedTuple):
    """Paired simulations: ``theta: (n, d)``, ``x: (n, *x_shape)``."""

    theta: jax.Array
    x: jax.Array

    @property
    def num_simulations(self) -> int:
        return int(self.theta.shape[0])


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["log_likelihood_fn", "x_shape"])
@dataclasses.dataclass(frozen=True)
class ExactLikelihood:
    """An exact ``log p(x|θ)`` in place of a learned ratio (the same ``embed``/``head`` interface).

    Sampling with it gives the exact posterior: use it for references and to test samplers.

    Args:
        log_likelihood_fn: ``(theta (d,), x x_shape) -> ()``, pure JAX.
        x_shape: shape of one observation.

    It has no ``theta_dim``: the dimension is the prior's it is used with.
    """

    log_likelihood_fn: Callable
    x_shape: tuple

    def embed(self, x):
        x = jnp.asarray(x, jnp.float32)
        return x.reshape(x.shape[: x.ndim - len(self.x_shape)] + (-1,))

    def head(self, theta, features):
        fn = lambda t, f: self.log_likelihood_fn(t, f.reshape(self.x_shape))
        return jnp.vectorize(fn, signature="(d),(m)->()")(theta, features)
