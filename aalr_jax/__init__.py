"""aalr_jax: likelihood-free inference with amortized approximate likelihood ratios (AALR) in JAX.

Pipeline: ``simulate`` a bank from a prior and a simulator, ``fit`` a ratio estimator whose logit is
``log r(x|θ)``, then ``posterior(estimator, prior, x_obs)`` (a pytree with ``log_prob``, ``unconstrained_logdensity`` and
``sample``) or ``sample_posterior`` for any observation (or thousands at once) with BlackJAX.
"""

from importlib.metadata import PackageNotFoundError, version

from aalr_jax import priors, tasks
from aalr_jax.data import simulate, split_bank
from aalr_jax.io import load_estimator, save_estimator
from aalr_jax.losses import LossConfig
from aalr_jax.nn import NetworkConfig, RatioEnsemble, RatioEstimator
from aalr_jax.chains import PosteriorSamples
from aalr_jax.ratio_posterior import Posterior, posterior
from aalr_jax.samplers import HMC, NUTS, RWMH, resolve_sampler
from aalr_jax.sampling import sample_posterior
from aalr_jax.store import ZarrBank, load_bank
from aalr_jax.types import ExactLikelihood, SimulationBank
from aalr_jax.train import EnsembleFitResult, FitResult, TrainHistory, fit, fit_ensemble

try:
    __version__ = version("aalr-jax")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "EnsembleFitResult",
    "ExactLikelihood",
    "FitResult",
    "HMC",
    "LossConfig",
    "NUTS",
    "NetworkConfig",
    "Posterior",
    "PosteriorSamples",
    "RWMH",
    "RatioEnsemble",
    "RatioEstimator",
    "SimulationBank",
    "TrainHistory",
    "ZarrBank",
    "fit",
    "fit_ensemble",
    "load_bank",
    "load_estimator",
    "posterior",
    "priors",
    "resolve_sampler",
    "sample_posterior",
    "save_estimator",
    "simulate",
    "split_bank",
    "tasks",
]
