"""aalr_jax: likelihood-free inference with amortized approximate likelihood ratios (AALR) in JAX.

Pipeline: ``simulate`` a bank from a prior and a simulator, ``fit`` a ratio estimator whose logit is
``log r(x|θ)``, then ``posterior(estimator, prior, x_obs)`` (a pytree with ``log_prob``,
``unconstrained_logdensity`` and ``sample``) or ``sample_posterior`` for any observation (or
thousands at once) with BlackJAX.

The names below load on first use (PEP 562), so that ``import aalr_jax`` does not import JAX:
the command line answers ``--help`` without it.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aalr-jax")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

_LAZY = {
    "EnsembleFitResult": "aalr_jax.train",
    "ExactLikelihood": "aalr_jax.types",
    "FitResult": "aalr_jax.train",
    "HMC": "aalr_jax.samplers",
    "LossConfig": "aalr_jax.losses",
    "NUTS": "aalr_jax.samplers",
    "NetworkConfig": "aalr_jax.nn",
    "Posterior": "aalr_jax.ratio_posterior",
    "PosteriorSamples": "aalr_jax.chains",
    "RWMH": "aalr_jax.samplers",
    "RatioEnsemble": "aalr_jax.nn",
    "RatioEstimator": "aalr_jax.nn",
    "SimulationBank": "aalr_jax.types",
    "TrainHistory": "aalr_jax.train",
    "ZarrBank": "aalr_jax.store",
    "fit": "aalr_jax.train",
    "fit_ensemble": "aalr_jax.train",
    "load_bank": "aalr_jax.store",
    "load_estimator": "aalr_jax.io",
    "posterior": "aalr_jax.ratio_posterior",
    "resolve_sampler": "aalr_jax.samplers",
    "sample_posterior": "aalr_jax.sampling",
    "save_estimator": "aalr_jax.io",
    "simulate": "aalr_jax.data",
    "split_bank": "aalr_jax.data",
}
_SUBMODULES = ("priors", "tasks")

__all__ = sorted([*_LAZY, *_SUBMODULES])


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"aalr_jax.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aalr_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
