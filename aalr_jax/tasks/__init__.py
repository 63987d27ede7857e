"""Registry of built-in tasks: ``tasks.get("two_moons")``, ``tasks.names()``.

Each task lives in its own module, which defines ``make() -> Task``; modules are imported
lazily so that importing :mod:`aalr_jax` stays fast. The module docstring of each task gives its
definition, its source and what is exact about it.

=========================  =====  ==========  ===============================================
task                       θ dim  x_shape     exact
=========================  =====  ==========  ===============================================
two_moons                  2      (2,)        likelihood; posterior by rejection (exact draws)
gaussian_linear            10     (10,)       likelihood; posterior in closed form
gaussian_linear_uniform    10     (10,)       likelihood; posterior drawn exactly (truncated normals)
gaussian_mixture           2      (2,)        likelihood; posterior drawn exactly (truncated mixture)
slcp                       5      (8,)        likelihood; posterior by MCMC on it, mode weights exact
slcp_distractors           5      (100,)      likelihood up to a θ-free term; posterior as slcp
bernoulli_glm              10     (10,)       likelihood; posterior by NUTS on it
bernoulli_glm_raw          10     (100,)      likelihood; posterior by NUTS on it
sir                        2      (10,)       likelihood (ODE + binomial); posterior by NUTS on it
lotka_volterra             4      (20,)       likelihood (ODE + log-normal); posterior by NUTS on it
weinberg                   1      (1,)        likelihood; posterior by grid inversion of its CDF
mg1                        3      (5,)        nothing (intractable likelihood)
lotka_volterra_mjp         4      (9,)        nothing (intractable likelihood)
lensing                    1      (32, 32)    nothing (intractable likelihood)
detector                   1      (32, 32)    nothing (intractable likelihood)
=========================  =====  ==========  ===============================================

The first ten are sbibm's tasks (Lueckmann et al. 2021), with sbibm's observation 1 as default
observation (except slcp: the paper's θ*, see its module); AALR's accuracy on them is in
``benchmarks/README.md``, section "Accuracy against sbibm". weinberg's default observation is a
set of 100 events, shape ``(100, 1)``.
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
