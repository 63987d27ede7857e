"""Simulation banks: draw ``θ_i ~ p(θ)``, ``x_i ~ p(x|θ_i)`` in fixed-size chunks, split, save, load.

``simulate`` vmaps the single-example simulator over chunks of ``chunk_size`` simulations; every
chunk has the same shape (the last one is padded and trimmed), so the simulator compiles once and
memory stays bounded for 10^6 simulations. Non-finite simulations are an error unless the caller
opts in to drop them (``on_invalid="drop"``), and then how many were dropped is reported.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from aalr_jax.priors import validate_prior
from aalr_jax.types import SimulationBank

__all__ = [
    "SimulationBank",
    "load_bank",
    "resolve_problem",
    "save_bank",
    "simulate",
    "split_bank",
]


def resolve_problem(task_or_prior_and_simulator):
    """``(prior, simulator)`` from a :class:`~aalr_jax.tasks.Task` or a ``(prior, simulator)`` pair."""
    problem = task_or_prior_and_simulator
    if hasattr(problem, "prior") and hasattr(problem, "simulator"):
        prior, simulator = problem.prior, problem.simulator
    elif isinstance(problem, (tuple, list)) and len(problem) == 2:
        prior, simulator = problem
    else:
        raise TypeError(
            "task_or_prior_and_simulator must be a Task or a (prior, simulator) pair, "
            f"got {type(problem).__name__}"
        )
    validate_prior(prior)
    if not callable(simulator):
        raise TypeError(f"simulator must be callable as simulator(rng_key, theta), got {type(simulator).__name__}")
    return prior, simulator


def _output_shape(prior, simulator: Callable, expected_shape) -> tuple:
    """Shape of one simulation, checked against ``expected_shape`` when given."""
    d = prior.event_shape[0]
    try:
        out = jax.eval_shape(simulator, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((d,), jnp.float32))
    except Exception as err:  # surfaced with the calling convention spelled out
        raise TypeError(
            f"simulator(rng_key, theta) failed for theta of shape ({d},): {err}"
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"simulator must return one array, got {jax.tree.structure(out)}")
    if out.ndim == 0:
        raise ValueError("simulator must return an array of shape (m,) or larger; wrap a scalar as x[None]")
    if not jnp.issubdtype(out.dtype, jnp.floating) and not jnp.issubdtype(out.dtype, jnp.integer):
        raise TypeError(f"simulator must return a numeric array, got dtype {out.dtype}")
    if expected_shape is not None and tuple(out.shape) != tuple(expected_shape):
        raise ValueError(
            f"simulator returned shape {tuple(out.shape)} for one theta, expected {tuple(expected_shape)}"
        )
    return tuple(out.shape)


@functools.lru_cache(maxsize=64)
def _batched(simulator: Callable) -> Callable:
    """``jit(vmap(simulator))``, built once per simulator so repeated calls do not recompile."""
    return jax.jit(jax.vmap(simulator))


def simulate(
    rng_key: jax.Array,
    task_or_prior_and_simulator,
    num_simulations: int,
    *,
    chunk_size: int | None = None,
    on_invalid: str = "raise",
    progress: bool = True,
    backend: str = "jax",
    store=None,
    **engine_options,
) -> SimulationBank:
    """Draw a simulation bank from the prior and the simulator.

    ``backend="jax"`` without ``store`` vmaps a JAX simulator in process (below). ``backend="local"``
    (serial, in process) and ``backend="dask"`` (a ``dask.distributed`` cluster) run a host simulator
    ``simulator(rng: numpy.random.Generator, theta: np.ndarray (d,)) -> x`` (NumPy, C++, a
    subprocess...) with the seed of simulation i derived from ``(rng_key, i)`` (a task keeps its JAX
    simulator, vmapped over each chunk, with the key ``fold_in(key, i)``); ``store="bank.zarr"``
    writes the bank chunk by chunk to a resumable Zarr store and returns a lazy
    :class:`~aalr_jax.store.ZarrBank`. Those runs, their options (``client``, ``workers``,
    ``timeout``) and the per-simulation failures are described in :mod:`aalr_jax.distributed`.

    Args:
        rng_key: PRNG key.
        task_or_prior_and_simulator: a task, or ``(prior, simulator)`` with a numpyro prior of event
            shape ``(d,)`` and ``simulator(rng_key, theta: (d,)) -> x`` for one example.
        num_simulations: n, the number of pairs.
        chunk_size: simulations per compiled call (bounds memory); default 100_000 (for the other
            backends and stores, :func:`aalr_jax.distributed.default_chunk_size`).
        on_invalid: ``"raise"`` (default) on any non-finite simulation, or ``"drop"`` to discard
            them with a warning (the bank then has fewer than n rows).
        progress: show a progress bar over chunks.
        backend: ``"jax"``, ``"local"`` or ``"dask"``.
        store: path of a Zarr store to write (or resume), or ``None``.
        **engine_options: ``client``, ``workers``, ``timeout`` (:func:`aalr_jax.distributed.simulate_chunks`).

    Returns:
        ``SimulationBank(theta (n, d), x (n, *x_shape))`` in float32, or a ``ZarrBank`` with ``store``.
    """
    if backend != "jax" or store is not None or engine_options:  # host simulators, Dask, Zarr stores
        from aalr_jax.distributed import simulate_chunks

        return simulate_chunks(rng_key, task_or_prior_and_simulator, num_simulations, backend=backend, store=store,
                               chunk_size=chunk_size, on_invalid=on_invalid, progress=progress, **engine_options)
    chunk_size = 100_000 if chunk_size is None else chunk_size
    prior, simulator = resolve_problem(task_or_prior_and_simulator)
    if int(num_simulations) != num_simulations or num_simulations < 1:
        raise ValueError(f"num_simulations must be a positive integer, got {num_simulations}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    num_simulations = int(num_simulations)
    expected = getattr(task_or_prior_and_simulator, "x_shape", None)
    x_shape = _output_shape(prior, simulator, expected)

    key_theta, key_sim = jax.random.split(rng_key)
    theta = np.asarray(prior.sample(key_theta, (num_simulations,)), np.float32)
    keys = jax.random.split(key_sim, num_simulations)
    chunk = min(chunk_size, num_simulations)
    run_chunk = _batched(simulator)
    x = np.empty((num_simulations,) + x_shape, np.float32)
    bar = tqdm(total=num_simulations, desc="simulate", unit="sim", disable=not progress, leave=False)
    for start in range(0, num_simulations, chunk):
        stop = min(start + chunk, num_simulations)
        idx = np.arange(start, start + chunk).clip(max=num_simulations - 1)  # pad the last chunk
        x[start:stop] = np.asarray(run_chunk(keys[idx], jnp.asarray(theta[idx])))[: stop - start]
        bar.update(stop - start)
    bar.close()

    bad = ~np.isfinite(x.reshape(num_simulations, -1)).all(1)
    if bad.any():
        where = np.flatnonzero(bad)
        message = (
            f"{where.size} of {num_simulations} simulations returned non-finite values "
            f"(first at indices {where[:10].tolist()}, e.g. theta={theta[where[0]].tolist()})"
        )
        if on_invalid == "raise":
            raise ValueError(message + "; pass on_invalid='drop' to discard them")
        warnings.warn(message + "; dropped", stacklevel=2)
        theta, x = theta[~bad], x[~bad]
    return SimulationBank(jnp.asarray(theta), jnp.asarray(x))


def split_bank(rng_key: jax.Array, bank: SimulationBank, validation_fraction: float):
    """Shuffle and split into ``(train, validation)`` banks; validation gets ``ceil(f·n)`` rows."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    n = bank.num_simulations
    num_val = int(np.ceil(validation_fraction * n))
    if num_val >= n:
        raise ValueError(f"a bank of {n} simulations is too small to hold out {validation_fraction:.0%}")
    perm = jax.random.permutation(rng_key, n)
    take = lambda idx: SimulationBank(bank.theta[idx], bank.x[idx])
    return take(perm[num_val:]), take(perm[:num_val])


def save_bank(path: str, bank: SimulationBank) -> None:
    """Write a bank as ``.npz`` (arrays only), atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, theta=np.asarray(bank.theta), x=np.asarray(bank.x))
    os.replace(tmp, path)


def load_bank(path: str) -> SimulationBank:
    """Read a bank written by :func:`save_bank` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            theta, x = data["theta"], data["x"]
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a simulation bank (.npz with 'theta' and 'x'): {err}") from err
    if theta.ndim != 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(f"{path}: theta must be (n, d) and x (n, ...), got {theta.shape} and {x.shape}")
    return SimulationBank(jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32))
