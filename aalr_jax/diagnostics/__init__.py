"""Judging a ratio estimator and its samples.

* :mod:`~aalr_jax.diagnostics.mcmc`: R-hat, bulk/tail ESS, acceptance, divergences, stuck chains,
  with a mode-aware view; :func:`check` warns, :func:`to_inference_data` exports to ArviZ.
* :mod:`~aalr_jax.diagnostics.roc`: the paper's ROC diagnostic and the normalisation check.
* :mod:`~aalr_jax.diagnostics.coverage`: expected coverage of HPD regions (samples or grid).
* :mod:`~aalr_jax.diagnostics.sbc`: simulation-based calibration ranks and uniformity tests.
* :mod:`~aalr_jax.diagnostics.c2st`: sbibm's classifier two-sample test (needs scikit-learn).
* :mod:`~aalr_jax.diagnostics.verdicts`: each check's verdict with its evidence and its power.
"""

from aalr_jax.diagnostics.c2st import c2st
from aalr_jax.diagnostics.coverage import (
    DEFAULT_LEVELS,
    CoverageResult,
    coverage_from_credibility,
    expected_coverage,
    grid_credibility,
    hpd_credibility,
    sample_credibility,
    write_sample_shards,
)
from aalr_jax.diagnostics.mcmc import MCMCReport, MCMCWarning, check, mcmc_report, to_inference_data
from aalr_jax.diagnostics.roc import NormalizationResult, ROCResult, normalization_check, roc_diagnostic, weighted_auc
from aalr_jax.diagnostics.sbc import SBCResult, sbc, sbc_ranks
from aalr_jax.diagnostics.verdicts import Verdict

__all__ = [
    "DEFAULT_LEVELS",
    "CoverageResult",
    "MCMCReport",
    "MCMCWarning",
    "NormalizationResult",
    "ROCResult",
    "SBCResult",
    "Verdict",
    "c2st",
    "check",
    "coverage_from_credibility",
    "expected_coverage",
    "grid_credibility",
    "hpd_credibility",
    "mcmc_report",
    "normalization_check",
    "roc_diagnostic",
    "sample_credibility",
    "sbc",
    "sbc_ranks",
    "to_inference_data",
    "weighted_auc",
    "write_sample_shards",
]
