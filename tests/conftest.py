"""Shared test settings: float32 JAX on CPU, deterministic seeds, hypothesis profiles.

Hypothesis runs the ``fast`` profile unless ``HYPOTHESIS_PROFILE=slow``; the fuzz suite's large
runs are also marked ``slow`` (``pytest -m slow tests/test_fuzz.py``).
"""

import os

import jax
import pytest

try:  # the test extra installs hypothesis; CI's smoke subsets (.ci/floors, .ci/oldstack) run without it
    from hypothesis import HealthCheck, settings
except ImportError:
    settings = None
if settings is not None:
    settings.register_profile("fast", deadline=None, derandomize=True, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("slow", deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
