"""Shared test settings: float32 JAX on CPU, deterministic seeds."""

import jax
import pytest


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
