"""Argument checks shared by the public entry points: each names the argument, what it expects and
what it got, and raises before any work starts.

``TypeError`` for a value of the wrong kind (a string where a count goes, an ``int`` where a PRNG
key goes), ``ValueError`` for a value of the right kind outside its range (a negative count, a NaN
rate, an empty array).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_key", "check_number", "check_real_array", "nonnegative_int", "positive_int"]


def _integer(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def positive_int(name: str, value) -> int:
    """``value`` as an ``int`` ≥ 1 (an integral float such as ``1e4`` is accepted)."""
    value = _integer(name, value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def nonnegative_int(name: str, value) -> int:
    """``value`` as an ``int`` ≥ 0."""
    value = _integer(name, value)
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return value


def check_number(name: str, value, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval ``[low, high]`` (ends open where asked)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or math.isinf(high) else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def check_key(name: str, key) -> jax.Array:
    """``key`` as a JAX PRNG key: a typed key (``jax.random.key``) or a raw ``uint32 (2,)`` key
    (``jax.random.PRNGKey``). An integer seed is refused with the call that makes a key from it."""
    if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, bool):
        raise TypeError(f"{name} must be a JAX PRNG key, got the integer {key!r}; pass jax.random.PRNGKey({key!r})")
    try:
        array = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    except TypeError as err:
        raise TypeError(f"{name} must be a JAX PRNG key, got {type(key).__name__}") from err
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        if array.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got a batch of shape {array.shape}")
        return array
    if array.dtype != jnp.uint32 or array.shape != (2,):
        raise TypeError(
            f"{name} must be a JAX PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
            f"got an array of dtype {array.dtype} and shape {array.shape}"
        )
    return array


def check_real_array(name: str, value, *, min_ndim: int = 0, allow_empty: bool = False) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (ints, floats or bools), at least ``min_ndim``-D.

    Complex values are refused (their imaginary part would be lost), as are strings, objects and,
    unless ``allow_empty``, arrays with no elements.
    """
    try:
        array = np.asarray(value)
    except Exception as err:  # ragged nested lists and the like
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}: {err}") from err
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must be real, got complex values (dtype {array.dtype})")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {array.dtype} ({type(value).__name__})")
    if array.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array
