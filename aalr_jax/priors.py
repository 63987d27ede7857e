r"""Priors: numpyro distributions over a parameter vector θ ∈ R^d, and their unconstrained maps.

Any numpyro distribution with ``event_shape == (d,)`` and an empty batch shape is a prior here.
Two helpers build the common cases:

* :func:`box_uniform` — ``U(low, high)`` on a box, as one distribution with a vector event.
* :func:`independent` — a product ``p(θ) = Π_i p_i(θ_i)`` of 1-D numpyro distributions whose
  supports may differ (an interval, the positive half-line, the whole line ...).

Samplers work in unconstrained space: ``θ = T(u)`` with ``T = biject_to(support)`` and

.. math::  \log p_U(u) = \log p(T(u)) + \log |\det J_T(u)| .

numpyro's ``biject_to`` of an interval with an infinite bound computes ``lower + (upper-lower)·σ(u)``,
which is NaN when a bound is infinite. :func:`support_transform` maps such intervals to the
half-line or real-line transforms instead, component by component for :func:`independent`.

Outside the support, numpyro's ``log_prob`` is finite unless validation is on;
:func:`log_prob` returns ``-inf`` there (and for NaN), never a finite number or NaN.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to

__all__ = [
    "IndependentPrior",
    "box_bounds",
    "box_uniform",
    "independent",
    "log_prob",
    "support_transform",
    "validate_prior",
]


def validate_prior(prior) -> int:
    """Check that ``prior`` is a continuous numpyro distribution over a vector θ; return its dimension d.

    Raises:
        TypeError: ``prior`` is not a numpyro distribution.
        ValueError: its event shape is not ``(d,)``, its batch shape is not empty, or its support is
            discrete (a posterior density over θ needs a continuous prior).
    """
    if not isinstance(prior, dist.Distribution):
        raise TypeError(
            f"prior must be a numpyro.distributions.Distribution, got {type(prior).__name__}; "
            "for independent 1-D components use aalr_jax.priors.independent([...])"
        )
    if len(prior.event_shape) != 1 or prior.batch_shape != ():
        hint = (
            f"; call .to_event({len(prior.batch_shape)}) to make its batch dimension the event"
            if len(prior.batch_shape) == 1 and prior.event_shape == ()
            else ""
        )
        raise ValueError(
            "prior must have event_shape (d,) and batch_shape (), got "
            f"event_shape {prior.event_shape} and batch_shape {prior.batch_shape}{hint}"
        )
    base = prior.support  # numpyro before 0.20 does not pass is_discrete through independent(...)
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if prior.support.is_discrete or base.is_discrete:
        raise ValueError(
            f"prior must be continuous, got {type(prior).__name__} with the discrete support "
            f"{prior.support}; the samplers move θ in R^d"
        )
    return int(prior.event_shape[0])


def log_prob(prior, theta: jax.Array) -> jax.Array:
    """``log p(θ)`` with ``-inf`` outside the support (and for non-finite values).

    Args:
        prior: numpyro distribution with event shape ``(d,)``.
        theta: ``(..., d)``.

    Returns:
        ``(...,)`` log-densities.
    """
    inside = prior.support(theta)
    # Evaluate the density at a feasible point where outside, so its gradient stays finite.
    safe = jnp.where(inside[..., None], theta, prior.support.feasible_like(theta))
    lp = prior.log_prob(safe)
    lp = jnp.where(inside, lp, -jnp.inf)
    return jnp.where(jnp.isnan(lp), -jnp.inf, lp)


def box_bounds(constraint):
    """The interval behind an interval-like constraint, and its bounds.

    Args:
        constraint: a numpyro constraint, e.g. ``prior.support``; ``independent`` wrappers are
            looked through.

    Returns:
        ``(interval, lower, upper)``: the interval constraint itself and its bounds as NumPy
        arrays (scalars or ``(d,)``, possibly infinite), or ``None`` when the constraint is not an
        interval (the real line, the positive half-line, a simplex...).
    """
    base = constraint
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if isinstance(base, constraints._Interval):  # covers open/closed/half-open intervals
        return base, np.asarray(base.lower_bound), np.asarray(base.upper_bound)
    return None


def _scalar_transform(constraint) -> Transform:
    """Bijection R → support of a 1-D constraint, safe for intervals with infinite bounds."""
    found = box_bounds(constraint)
    if found is not None:
        _, lo, hi = found
        if lo.ndim == 0 and hi.ndim == 0:
            lo_inf, hi_inf = bool(np.isinf(lo)), bool(np.isinf(hi))
            if lo_inf and hi_inf:
                return biject_to(constraints.real)
            if hi_inf:
                return biject_to(constraints.greater_than(float(lo)))
            if lo_inf:
                return biject_to(constraints.less_than(float(hi)))
    return biject_to(constraint)


def support_transform(prior) -> Transform:
    """The bijection ``T: R^d → support(prior)`` used for unconstrained sampling.

    Intervals with an infinite bound (e.g. ``interval(0, inf)``) become exponential maps
    instead of numpyro's NaN-producing scaled sigmoid. The transform is a pytree (its parameters
    are leaves): build it from a concrete prior, outside ``jax.jit``, and pass it through; under
    tracing the bounds cannot be inspected and numpyro's ``biject_to`` is used as is.
    """
    try:
        found = box_bounds(prior.support)
    except jax.errors.TracerArrayConversionError:
        found = None
    if found is not None:
        _, lo, hi = found
        if np.any(np.isinf(lo)) or np.any(np.isinf(hi)):
            d = validate_prior(prior)
            lo, hi = np.broadcast_to(lo, (d,)), np.broadcast_to(hi, (d,))
            parts = tuple(
                _scalar_transform(constraints.interval(float(a), float(b))) for a, b in zip(lo, hi)
            )
            return _ProductTransform(parts, prior.support)
    return biject_to(prior.support)


class _ProductConstraint(constraints.Constraint):
    """Support of a product of 1-D distributions: component i lies in ``parts[i]``."""

    event_dim = 1

    def __init__(self, parts: Sequence[constraints.Constraint]):
        self.parts = tuple(parts)
        super().__init__()

    def __call__(self, x):
        return jnp.stack([c(x[..., i]) for i, c in enumerate(self.parts)], axis=-1).all(-1)

    def feasible_like(self, prototype):
        return jnp.stack(
            [c.feasible_like(prototype[..., i]) for i, c in enumerate(self.parts)], axis=-1
        )

    def tree_flatten(self):
        return (self.parts,), (("parts",), {})


class _ProductTransform(Transform):
    """``T(u)_i = T_i(u_i)``: one scalar bijection per component; log|det J| = Σ_i log|T_i'(u_i)|."""

    domain = constraints.real_vector

    def __init__(self, parts: Sequence[Transform], codomain):
        super().__init__()
        self.parts = tuple(parts)
        self._codomain = codomain

    @property
    def codomain(self):
        return self._codomain

    def __call__(self, u):
        return jnp.stack([t(u[..., i]) for i, t in enumerate(self.parts)], axis=-1)

    def _inverse(self, x):
        return jnp.stack([t.inv(x[..., i]) for i, t in enumerate(self.parts)], axis=-1)

    def log_abs_det_jacobian(self, u, x, intermediates=None):
        terms = [t.log_abs_det_jacobian(u[..., i], x[..., i]) for i, t in enumerate(self.parts)]
        return sum(terms)

    def tree_flatten(self):
        return (self.parts, self._codomain), (("parts", "_codomain"), {"_inv": None})


@biject_to.register(_ProductConstraint)
def _biject_product(constraint):
    return _ProductTransform([_scalar_transform(c) for c in constraint.parts], constraint)


class IndependentPrior(dist.Distribution):
    """Product of independent 1-D numpyro distributions, ``θ_i ~ p_i``, as one vector event.

    Args:
        components: 1-D numpyro distributions (event shape ``()``, batch shape ``()``).

    ``sample(key, sample_shape)`` returns ``sample_shape + (d,)``; ``log_prob(θ)`` for θ of shape
    ``(..., d)`` returns ``(...,)`` and is ``-inf`` where any component lies outside its support.

    A pytree whose leaves are the components' parameters, like every numpyro distribution: it
    passes through ``jax.jit`` as a traced argument, so priors of one structure share one program.
    """

    arg_constraints = {}
    pytree_data_fields = ("components",)

    def __init__(self, components: Sequence[dist.Distribution], *, validate_args=None):
        components = tuple(components)
        if len(components) == 0:
            raise ValueError("components must hold at least one 1-D numpyro distribution")
        for i, c in enumerate(components):
            if not isinstance(c, dist.Distribution):
                raise TypeError(
                    f"components[{i}] must be a numpyro distribution, got {type(c).__name__}"
                )
            if c.event_shape != () or c.batch_shape != ():
                raise ValueError(
                    f"components[{i}] must be a scalar (1-D) distribution with event_shape () and "
                    f"batch_shape (), got event_shape {c.event_shape}, batch_shape {c.batch_shape}"
                )
            if c.support.is_discrete or getattr(c.support, "base_constraint", c.support).is_discrete:
                raise ValueError(f"components[{i}] is discrete; priors must be continuous")
        self.components = components
        super().__init__(batch_shape=(), event_shape=(len(components),), validate_args=validate_args)

    @property
    def support(self):
        return _ProductConstraint([c.support for c in self.components])

    def sample(self, key, sample_shape=()):
        keys = jax.random.split(key, len(self.components))
        draws = [c.sample(k, sample_shape) for c, k in zip(self.components, keys)]
        return jnp.stack(draws, axis=-1)

    def log_prob(self, value):
        value = jnp.asarray(value)
        if value.shape[-1:] != self.event_shape:
            raise ValueError(
                f"value must have shape (..., {self.event_shape[0]}), got {value.shape}"
            )
        total = 0.0
        for i, c in enumerate(self.components):
            v = value[..., i]
            inside = c.support(v) & jnp.isfinite(v)  # θ = ±inf (a saturated transform) has density 0
            lp = c.log_prob(jnp.where(inside, v, c.support.feasible_like(v)))
            total = total + jnp.where(inside, lp, -jnp.inf)
        return total

    @property
    def mean(self):
        return jnp.stack([jnp.asarray(c.mean) for c in self.components])

    @property
    def variance(self):
        return jnp.stack([jnp.asarray(c.variance) for c in self.components])


def independent(components: Sequence[dist.Distribution]) -> IndependentPrior:
    """Product prior of independent 1-D numpyro distributions with possibly different supports.

    Example::

        prior = independent([dist.Uniform(0.0, 1.0), dist.Normal(0.0, 2.0), dist.HalfNormal(1.0)])
    """
    return IndependentPrior(components)


def box_uniform(low, high) -> dist.Distribution:
    """Uniform prior on the box ``[low, high]`` (arrays broadcast to a common ``(d,)``)."""
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    low, high = np.broadcast_arrays(np.atleast_1d(low), np.atleast_1d(high))
    if low.ndim != 1:
        raise ValueError(f"low and high must be scalars or vectors, got shape {low.shape}")
    if not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)):
        raise ValueError("low and high of a box-uniform prior must be finite")
    if not np.all(low < high):
        raise ValueError(f"box_uniform needs low < high in every component, got {low} and {high}")
    return dist.Uniform(jnp.asarray(low), jnp.asarray(high)).to_event(1)
