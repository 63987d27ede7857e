"""The task interface: a prior, a simulator and what is known about the problem.

A task is a frozen record. ``simulator(rng_key, theta) -> x`` draws ONE example, ``theta: (d,)``,
``x: x_shape``; batching is done by ``jax.vmap`` (see :func:`aalr_jax.data.simulate`).
Where the likelihood is tractable, ``log_likelihood(theta, x) -> scalar`` and/or
``reference_posterior(rng_key, x_obs, num_samples) -> (num_samples, d)`` are set; otherwise
they are ``None``. The default observation is ``simulator(PRNGKey(observation_seed), true_theta)``
unless a fixed ``observation`` array is given (e.g. the one published by a benchmark). A task whose
default observation is a set of i.i.d. draws of one θ, shape ``(n, *x_shape)``, sets ``iid``.

JAX is imported only when the default observation is made, so that listing tasks stays cheap
(the command line builds its ``--help`` from the registry without importing JAX).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

if TYPE_CHECKING:
    import jax

__all__ = ["Task"]


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A simulation-based inference problem.

    Attributes:
        name: registry name, e.g. ``"two_moons"``.
        prior: numpyro distribution with event shape ``(d,)``.
        simulator: ``simulator(rng_key, theta: (d,)) -> x: x_shape`` (one draw, pure JAX).
        x_shape: shape of one observation.
        parameter_labels: ``d`` names, for plots and summaries.
        true_theta: ``(d,)`` parameters behind the default observation.
        observation_seed: seed of the simulation that made the default observation.
        observation: optional fixed default observation ``x_shape`` (overrides the seed).
        log_likelihood: optional exact ``log p(x|θ)``: ``(theta (d,), x x_shape) -> ()``.
        reference_posterior: optional exact sampler ``(rng_key, x_obs, num_samples) -> (n, d)``.
        description: one paragraph with the definition and its source.
        iid: the default observation is a set of i.i.d. draws of one θ, ``(n, *x_shape)``, to be
            sampled with ``iid=True``.
    """

    name: str
    prior: object
    simulator: Callable
    x_shape: tuple
    parameter_labels: tuple
    true_theta: np.ndarray
    observation_seed: int = 0
    observation: Optional[np.ndarray] = None
    log_likelihood: Optional[Callable] = None
    reference_posterior: Optional[Callable] = None
    description: str = ""
    iid: bool = False

    @property
    def theta_dim(self) -> int:
        return int(self.prior.event_shape[0])

    @functools.cached_property
    def default_observation(self) -> "jax.Array":
        """The documented default observation: ``x_shape``, or ``(n, *x_shape)`` when ``iid``."""
        import jax
        import jax.numpy as jnp

        if self.observation is not None:
            return jnp.asarray(self.observation, dtype=jnp.float32)
        key = jax.random.PRNGKey(self.observation_seed)
        return self.simulator(key, jnp.asarray(self.true_theta, dtype=jnp.float32))
