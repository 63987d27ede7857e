r"""Simulators that are not JAX: the host contract, per-simulation seeds, and one chunk of simulations.

The host contract is a plain Python callable for ONE simulation::

    simulator(rng: numpy.random.Generator, theta: numpy.ndarray (d,) float32) -> array-like x_shape

It may call NumPy, Cython, C++ bindings or a command-line program; it draws all of its randomness
from ``rng`` (or from seeds taken from it), so that a simulation is a function of its seed and θ.

Seeds. Simulation ``i`` of a run keyed by ``rng_key`` gets
``numpy.random.default_rng(SeedSequence(entropy=key_words, spawn_key=(i,)))`` where ``key_words``
are the 32-bit words of the simulation half of ``rng_key``: the bank is the same whatever the
number of workers, the order in which they finish, the chunking, or restarts. θ_i is drawn in JAX
from ``fold_in(key_theta, i)`` (:func:`draw_theta`). A built-in :class:`~aalr_jax.tasks.Task` keeps
its JAX simulator: :func:`run_jax_chunk` vmaps it over a chunk with the keys ``fold_in(key_sim, i)``.

A chunk never raises for a bad simulation: exceptions, non-finite outputs, outputs of the wrong
shape and, with ``timeout``, simulations that do not return in time are recorded as failures
(index, θ, error) and their row of ``x`` is NaN.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ChunkResult", "SimulationTimeout", "draw_theta", "key_words", "run_host_chunk", "run_jax_chunk",
           "simulation_rng"]


class SimulationTimeout(TimeoutError):
    """A simulation did not return within the per-simulation ``timeout``."""


class ChunkResult(NamedTuple):
    """Outcome of one chunk of ``k`` simulations starting at global index ``start``.

    ``x: (k, *x_shape)`` float32 with NaN rows where a simulation failed (``None`` when every
    simulation failed and the shape is unknown); ``valid: (k,)`` bool; ``failures``: one dict
    ``{"index", "theta", "error"}`` per failed simulation; ``seconds``: wall time of the chunk.
    """

    start: int
    x: np.ndarray | None
    valid: np.ndarray
    failures: list
    seconds: float


def key_words(rng_key) -> tuple:
    """The 32-bit words of a PRNG key (raw ``uint32`` or typed), as Python ints (JSON- and pickle-able)."""
    if jnp.issubdtype(jnp.asarray(rng_key).dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    return tuple(int(w) for w in np.asarray(rng_key, np.uint32).ravel())


def simulation_rng(words: tuple, index: int) -> np.random.Generator:
    """The generator of simulation ``index``: ``default_rng(SeedSequence(words, spawn_key=(index,)))``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=list(words), spawn_key=(int(index),)))


@functools.lru_cache(maxsize=32)
def _theta_sampler(prior) -> Callable:
    return jax.jit(jax.vmap(lambda key, i: prior.sample(jax.random.fold_in(key, i)), in_axes=(None, 0)))


def draw_theta(prior, key_theta: jax.Array, start: int, stop: int) -> np.ndarray:
    """θ_i for ``i in [start, stop)``, each from ``fold_in(key_theta, i)``: ``(stop - start, d)`` float32."""
    idx = jnp.arange(start, stop, dtype=jnp.uint32)
    return np.asarray(_theta_sampler(prior)(key_theta, idx), np.float32)


def _call(simulator: Callable, rng: np.random.Generator, theta: np.ndarray, timeout: float | None):
    """``simulator(rng, theta)``, abandoned (left running in a daemon thread) after ``timeout`` seconds."""
    if timeout is None:
        return simulator(rng, theta)
    box = {}

    def target():
        try:
            box["value"] = simulator(rng, theta)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="aalr-simulation")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise SimulationTimeout(f"no result within timeout={timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _failure(index: int, theta: np.ndarray, error: str) -> dict:
    return {"index": int(index), "theta": [float(t) for t in theta], "error": error}


def run_host_chunk(simulator: Callable, theta: np.ndarray, start: int, words: tuple, *,
                   timeout: float | None = None, x_shape: tuple | None = None) -> ChunkResult:
    """Run ``simulator(rng_i, theta[j])`` for ``i = start + j``, recording failures instead of raising.

    Args:
        simulator: host simulator ``(numpy.random.Generator, theta (d,)) -> x`` (module docstring).
        theta: ``(k, d)`` float32.
        start: global index of ``theta[0]``.
        words: seed words of the run (:func:`key_words`).
        timeout: seconds one simulation may take (``None``: no limit). A late call is abandoned,
            not killed: a simulator that may hang should bound its own subprocess.
        x_shape: expected shape of one output; ``None`` takes the first valid output's.

    Returns:
        :class:`ChunkResult`; ``KeyboardInterrupt`` and ``SystemExit`` propagate.
    """
    t0 = time.perf_counter()
    theta = np.asarray(theta, np.float32)
    outputs, failures = [None] * len(theta), []
    for j, t in enumerate(theta):
        i = start + j
        try:
            out = np.asarray(_call(simulator, simulation_rng(words, i), t.copy(), timeout), dtype=np.float32)
        except Exception as err:  # any simulator error is data about θ, not a crash of the run
            failures.append(_failure(i, t, f"{type(err).__name__}: {err}"))
            continue
        if out.ndim == 0:
            failures.append(_failure(i, t, "returned a scalar; return an array of shape (m,) or larger"))
        elif x_shape is not None and out.shape != tuple(x_shape):
            failures.append(_failure(i, t, f"returned shape {out.shape}, expected {tuple(x_shape)}"))
        elif not np.isfinite(out).all():
            failures.append(_failure(i, t, "returned non-finite values"))
        else:
            x_shape = out.shape
            outputs[j] = out
    valid = np.array([o is not None for o in outputs])
    x = None
    if x_shape is not None:
        x = np.full((len(theta),) + tuple(x_shape), np.nan, np.float32)
        for j in np.flatnonzero(valid):
            x[j] = outputs[j]
    return ChunkResult(int(start), x, valid, failures, time.perf_counter() - t0)


@functools.lru_cache(maxsize=32)
def _jax_chunk(simulator: Callable) -> Callable:
    run = lambda key, i, t: simulator(jax.random.fold_in(key, i), t)
    return jax.jit(jax.vmap(run, in_axes=(None, 0, 0)))


def run_jax_chunk(simulator: Callable, theta: np.ndarray, start: int, words: tuple, **_) -> ChunkResult:
    """Run a JAX ``simulator(rng_key, theta)`` vmapped over a chunk, key ``fold_in(key_sim, i)`` for sim ``i``.

    ``words`` are the words of ``key_sim`` (a raw ``uint32`` key). An exception fails the whole
    chunk (each simulation is recorded with it); non-finite rows are recorded one by one.
    """
    t0 = time.perf_counter()
    theta = np.asarray(theta, np.float32)
    idx = np.arange(start, start + len(theta), dtype=np.uint32)
    try:
        x = np.array(_jax_chunk(simulator)(jnp.asarray(words, jnp.uint32), idx, theta), np.float32)
    except Exception as err:  # recorded per simulation like a host failure
        message = f"{type(err).__name__}: {err}"
        failures = [_failure(start + j, t, message) for j, t in enumerate(theta)]
        return ChunkResult(int(start), None, np.zeros(len(theta), bool), failures, time.perf_counter() - t0)
    valid = np.isfinite(x.reshape(len(theta), -1)).all(1)
    failures = [_failure(start + j, theta[j], "returned non-finite values") for j in np.flatnonzero(~valid)]
    x[~valid] = np.nan
    return ChunkResult(int(start), x, valid, failures, time.perf_counter() - t0)
