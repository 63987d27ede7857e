r"""Observations outside the training data.

A classifier is trained where the simulations are; off that support its logit extrapolates
arbitrarily, and a posterior built on it can look healthy (chains mix, R-hat 1.00) while meaning
nothing. Each estimator keeps, per component of ``x``, the range its training bank covered,
``[x_min, x_max]`` (raw units), and its z-scoring statistics ``x_loc, x_scale``. An observation is
*outside the training data* when some component lies beyond the range widened on each side by
:data:`RANGE_MARGIN` of its width (``x_min - m (x_max - x_min)`` to ``x_max + m (x_max - x_min)``);
an estimator saved without ranges falls back to ``|x - x_loc| > `` :data:`Z_LIMIT` ``· x_scale``.
For an ensemble, the union of its members' ranges counts. An i.i.d. set is outside when any of its
members is. Estimators that do not keep statistics (:class:`~aalr_jax.types.ExactLikelihood`) never
flag anything: an exact likelihood is right everywhere.

A fresh draw from the simulator lands beyond the training range of one component with probability
about ``2/(n+1)`` for n simulations; the margin keeps a held-out, in-distribution observation
from being flagged.
"""

from __future__ import annotations

import warnings

import numpy as np

from aalr_jax.validation import check_real_array

__all__ = ["OutOfDistributionWarning", "RANGE_MARGIN", "Z_LIMIT", "check_observations", "outside_training_data"]

RANGE_MARGIN = 0.1
Z_LIMIT = 10.0


class OutOfDistributionWarning(UserWarning):
    """An observation lies outside the data the estimator was trained on."""


def _bounds(standardization):
    """``(low, high)`` per component of ``x`` (a leading member axis is reduced to the union)."""
    x_min, x_max = getattr(standardization, "x_min", None), getattr(standardization, "x_max", None)
    if x_min is not None and x_max is not None:
        lo, hi = np.asarray(x_min, np.float64), np.asarray(x_max, np.float64)
        width = hi - lo
        lo, hi = lo - RANGE_MARGIN * width, hi + RANGE_MARGIN * width
    else:
        loc, scale = np.asarray(standardization.x_loc, np.float64), np.asarray(standardization.x_scale, np.float64)
        lo, hi = loc - Z_LIMIT * scale, loc + Z_LIMIT * scale
    return lo, hi


def outside_training_data(estimator, x_obs, *, iid: bool = False) -> np.ndarray:
    """Which observations lie outside the estimator's training data.

    Args:
        estimator: a trained estimator or ensemble (anything without ``standardization``, such as
            an :class:`~aalr_jax.types.ExactLikelihood`, flags nothing).
        x_obs: ``x_shape`` or ``(k, *x_shape)``; with ``iid=True``, ``(n, *x_shape)`` or
            ``(k, n, *x_shape)``.
        iid: whether the axis before ``x_shape`` is a set of i.i.d. observations of one θ.

    Returns:
        Boolean array of the batch shape of ``x_obs``: ``()`` or ``(k,)``.
    """
    x_shape = tuple(estimator.x_shape)
    x = check_real_array("x_obs", x_obs).astype(np.float64)
    batch_ndim = x.ndim - len(x_shape) - (1 if iid else 0)
    if batch_ndim < 0 or tuple(x.shape[x.ndim - len(x_shape):]) != x_shape or (iid and x.shape[batch_ndim] < 1):
        expected = f"(n, {', '.join(map(str, x_shape))})" if iid else f"{x_shape}"
        raise ValueError(f"x_obs must have shape {expected} or a batch of them, got {x.shape}")
    members = getattr(estimator, "members", None)
    standardization = getattr(members if members is not None else estimator, "standardization", None)
    if standardization is None:
        return np.zeros(x.shape[:batch_ndim], bool)
    lo, hi = _bounds(standardization)
    if members is not None:  # (M, *x_shape): the union over members
        lo, hi = lo.min(0), hi.max(0)
    bad = (x < lo) | (x > hi) | ~np.isfinite(x)
    return bad.reshape(x.shape[:batch_ndim] + (-1,)).any(-1)


def check_observations(estimator, x_obs, *, iid: bool = False, strict: bool = False) -> np.ndarray:
    """:func:`outside_training_data`, plus a warning (or, with ``strict``, a ``ValueError``) naming
    the observations outside, how many there are, and what to do about it."""
    outside = outside_training_data(estimator, x_obs, iid=iid)
    if outside.any():
        which = "the observation" if outside.ndim == 0 else (
            f"{int(outside.sum())} of {outside.size} observations (indices {np.flatnonzero(outside)[:10].tolist()})")
        message = (f"{which} in x_obs lie outside the range of the training simulations; the estimated "
                   "ratio there is an extrapolation and the posterior cannot be trusted. Simulate with a "
                   "prior that covers this observation, or check its units and preprocessing.")
        if strict:
            raise ValueError(message + " (strict=True)")
        warnings.warn(message, OutOfDistributionWarning, stacklevel=3)
    return outside
