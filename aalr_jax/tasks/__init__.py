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
