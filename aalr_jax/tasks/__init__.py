"""Registry of built-in tasks: ``tasks.get("two_moons")``, ``tasks.names()``.

Each task lives in its own module, which defines ``make() -> Task``; modules are imported
lazily so that importing :mod:`aalr_jax` stays fast.
"""

from __future__ import annotations

import functools
import importlib

from aalr_jax.tasks.base import Task

__all__ = ["Task", "get", "names"]

_REGISTRY = {
    "two_moons": "aalr_jax.tasks.two_moons",
    "gaussian_linear": "aalr_jax.tasks.gaussian_linear",
    "slcp": "aalr_jax.tasks.slcp",
    "gaussian_linear_uniform": "aalr_jax.tasks.gaussian_linear_uniform",
    "gaussian_mixture": "aalr_jax.tasks.gaussian_mixture",
    "slcp_distractors": "aalr_jax.tasks.slcp_distractors",
    "bernoulli_glm": "aalr_jax.tasks.bernoulli_glm",
    "bernoulli_glm_raw": "aalr_jax.tasks.bernoulli_glm_raw",
    "sir": "aalr_jax.tasks.sir",
    "lotka_volterra": "aalr_jax.tasks.lotka_volterra",
    "lensing": "aalr_jax.tasks.lensing",
    "detector": "aalr_jax.tasks.detector",
    "mg1": "aalr_jax.tasks.mg1",
    "lotka_volterra_mjp": "aalr_jax.tasks.lotka_volterra_mjp",
    "weinberg": "aalr_jax.tasks.weinberg",
}


def names() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(_REGISTRY)


@functools.lru_cache(maxsize=None)
def get(name: str) -> Task:
    """The built-in task called ``name`` (the same object on every call)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; available tasks: {', '.join(names())}")
    return importlib.import_module(_REGISTRY[name]).make()
