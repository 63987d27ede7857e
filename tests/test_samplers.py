"""Sampler values (aalr_jax.samplers): resolution of names and options, and each kernel on its own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import blackjax
from aalr_jax.samplers import HMC, NUTS, RWMH, resolve_sampler


def test_auto_and_defaults_are_resolved_to_numbers():
    assert resolve_sampler("auto", 2) == RWMH(independence_prob=0.9, target_acceptance=0.35)
    assert resolve_sampler("auto", 5) == HMC(target_acceptance=0.8)
    assert resolve_sampler("rwmh", 5).independence_prob == 0.0
    assert resolve_sampler("rwmh", 1).target_acceptance == 0.44
    assert resolve_sampler("rwmh", 7).target_acceptance == 0.234
    assert resolve_sampler("nuts", 2, max_num_doublings=4) == NUTS(max_num_doublings=4, target_acceptance=0.8)
    assert resolve_sampler(HMC(num_integration_steps=5), 3, dense_metric=False) == HMC(5, False, 0.8)
    assert [s.default_thin for s in (resolve_sampler("rwmh", 2), RWMH(independence_prob=0.0), HMC(), NUTS())] == [5, 10, 3, 1]
    # hashable and leafless: a static jit argument, carried through tree maps unchanged
    assert hash(resolve_sampler("auto", 2)) == hash(resolve_sampler("auto", 2))
    assert jax.tree.leaves(RWMH()) == []


@pytest.mark.parametrize(
    "args, options, error, match",
    [
        (("slice", 2), {}, ValueError, r"method must be one of"),
        (("rwmh", 2), dict(num_integration_steps=5), ValueError, r"num_integration_steps needs method='hmc', got method='rwmh'"),
        (("hmc", 2), dict(independence_prob=0.5), ValueError, r"independence_prob > 0 needs method='rwmh'"),
        (("hmc", 2), dict(max_num_doublings=3), ValueError, r"max_num_doublings needs method='nuts'"),
        (("hmc", 2), dict(leapfrog=3), TypeError, r"unknown sampler option 'leapfrog'"),
        (("hmc", 2), dict(num_integration_steps=0), ValueError, r"num_integration_steps must be a positive integer"),
        (("nuts", 2), dict(target_acceptance=1.0), ValueError, r"target_acceptance must lie in \(0, 1\)"),
        (("rwmh", 2), dict(independence_defensive=1.0), ValueError, r"independence_defensive must lie in \[0, 1\)"),
        (("rwmh", 2), dict(dense_metric="yes"), TypeError, r"dense_metric must be True or False"),
        (("rwmh", 0), {}, ValueError, r"dim must be a positive integer"),
    ],
)
def test_bad_options_fail_before_anything_runs(args, options, error, match):
    with pytest.raises(error, match=match):
        resolve_sampler(*args, **options)


def test_options_of_another_method_at_their_defaults_change_nothing():
    assert resolve_sampler("rwmh", 2, num_integration_steps=10, max_num_doublings=10) == resolve_sampler("rwmh", 2)
    assert resolve_sampler("hmc", 2, independence_prob=0.0) == resolve_sampler("hmc", 2)


@pytest.mark.parametrize("sampler, step_size", [(RWMH(independence_prob=0.0), 1.5), (HMC(num_integration_steps=4), 0.5),
                                                (NUTS(max_num_doublings=4), 0.5)])
def test_each_kernel_alone_samples_a_correlated_gaussian(sampler, step_size):
    """``init`` and ``build_kernel`` without warm-up, BlackJAX-style, on N(m, C) with a fixed step
    size and the exact metric (RWMH: its Cholesky factor; HMC/NUTS: C as inverse mass matrix). The
    chain moves (acceptance strictly inside (0, 1)) and its moments match within ESS errors."""
    sampler = sampler.resolve(2)
    mean, cov = jnp.array([1.0, -2.0]), jnp.array([[1.0, 0.6], [0.6, 0.5]])
    precision = jnp.linalg.inv(cov)
    logdensity = lambda u: -0.5 * (u - mean) @ precision @ (u - mean)
    kernel = sampler.build_kernel()
    metric = sampler.prepare(cov)

    def step(state, key):
        state, info = kernel(key, state, logdensity, step_size, metric)
        return state, (state.position, info.acceptance_rate)

    state = sampler.init(jnp.zeros(2), logdensity)
    _, (draws, accept) = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(jax.random.PRNGKey(0), 4000)))(state)
    draws, accept = np.asarray(draws[500:]), np.asarray(accept[500:])
    assert 0.1 < accept.mean() < 0.999
    ess = np.asarray(blackjax.ess(draws[None], chain_axis=0, sample_axis=1))
    assert np.all(ess > 200)
    std = np.sqrt(np.diag(np.asarray(cov)))
    np.testing.assert_array_less(np.abs(draws.mean(0) - np.asarray(mean)), 4 * std / np.sqrt(ess))
    np.testing.assert_allclose(draws.std(0), std, rtol=0.12)
    np.testing.assert_allclose(np.corrcoef(draws.T)[0, 1], 0.6 / np.sqrt(0.5), atol=0.08)
