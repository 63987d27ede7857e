"""Simulation banks: draw ``θ_i ~ p(θ)``, ``x_i ~ p(x|θ_i)`` in fixed-size chunks, split, save, load.

``simulate`` vmaps the single-example simulator over chunks of ``chunk_size`` simulations; every
chunk has the same shape (the last one is padded and trimmed), so the simulator compiles once and
memory stays bounded for 10^6 simulations. Non-finite simulations are an error unless the caller
opts in to drop them (``on_invalid="drop"``), and then how many were dropped is reported; a bank
with no valid simulation left is an error. Every argument is checked before any simulation runs
(:mod:`aalr_jax.validation`), and a simulator whose output is not real numbers is refused.

A saved bank is an ``.npz`` of ``theta``, ``x`` and ``__aalr_jax_bank__``: a UTF-8 JSON header
stored as a 1-D ``uint8`` array (as :mod:`aalr_jax.io` stores an estimator's), holding the format
name and version and the caller's ``metadata``, e.g. ``{"task": "two_moons", "prior": {...}}``, so
that later steps know what the bank was drawn from (:func:`load_bank_metadata`). Banks are written
atomically (:func:`aalr_jax.files.atomic_write`).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from aalr_jax.files import atomic_write
from aalr_jax.priors import validate_prior
from aalr_jax.types import SimulationBank
from aalr_jax.validation import check_key, positive_int

__all__ = [
    "BANK_FORMAT",
    "SimulationBank",
    "describe_prior",
    "load_bank",
    "load_bank_metadata",
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
        raise TypeError(f"simulator must return real numbers (an integer or floating-point array), got dtype "
                        f"{out.dtype}")
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

    Raises:
        TypeError: ``rng_key`` is not a PRNG key, a count is not an integer, or the simulator does
            not return one array of real numbers.
        ValueError: a count below 1, an unknown ``on_invalid``, non-finite simulations under
            ``"raise"``, or none valid under ``"drop"``.
    """
    rng_key = check_key("rng_key", rng_key)
    if backend != "jax" or store is not None or engine_options:  # host simulators, Dask, Zarr stores
        from aalr_jax.distributed import simulate_chunks

        return simulate_chunks(rng_key, task_or_prior_and_simulator, num_simulations, backend=backend, store=store,
                               chunk_size=chunk_size, on_invalid=on_invalid, progress=progress, **engine_options)
    chunk_size = 100_000 if chunk_size is None else chunk_size
    prior, simulator = resolve_problem(task_or_prior_and_simulator)
    num_simulations = positive_int("num_simulations", num_simulations)
    chunk_size = positive_int("chunk_size", chunk_size)
    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
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
        if bad.all():
            raise ValueError(message + ": no valid simulation is left to drop to; check the simulator on "
                                       "prior draws")
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


BANK_FORMAT = "aalr_jax.bank"
BANK_HEADER_KEY = "__aalr_jax_bank__"
BANK_FORMAT_VERSION = 1


def describe_prior(prior) -> dict:
    """A JSON description of a numpyro prior: its class (and base distributions), event shape and
    the parameters it was built with (arrays as lists), for the record kept with banks and estimators."""
    def describe(dist, depth=0):
        record = {"type": type(dist).__name__}
        base = getattr(dist, "base_dist", None)
        if base is not None and depth < 4:
            record["base"] = describe(base, depth + 1)
        params = {}
        for name in sorted(getattr(dist, "arg_constraints", {}) or {}):
            value = getattr(dist, name, None)
            if value is None:
                continue
            try:
                array = np.asarray(value, np.float64)
            except (TypeError, ValueError):
                continue
            if array.size <= 64 and np.isfinite(array).all():
                params[name] = array.tolist()
        if params:
            record["params"] = params
        return record

    record = describe(prior)
    record["event_shape"] = [int(s) for s in getattr(prior, "event_shape", ())]
    return record


def save_bank(path: str, bank: SimulationBank, *, metadata: dict | None = None) -> None:
    """Write a bank as ``.npz`` (arrays and a JSON header, no pickle), atomically.

    Args:
        path: the file to write; its folder is created if needed. ``path`` is used as given.
        bank: ``SimulationBank(theta (n, d), x (n, *x_shape))``.
        metadata: a JSON-serialisable dict kept with the bank, e.g. ``{"task": name, "prior": ...}``.

    Raises:
        ValueError: the bank's arrays are not ``(n, d)`` and ``(n, ...)`` with ``n >= 1``.
        TypeError: ``metadata`` is not a JSON-serialisable dict.
        IsADirectoryError, NotADirectoryError: ``path`` is a folder, or lies under a file.
    """
    theta, x = np.asarray(bank.theta, np.float32), np.asarray(bank.x, np.float32)
    if theta.ndim != 2 or x.ndim < 2 or x.shape[0] != theta.shape[0] or theta.shape[0] < 1:
        raise ValueError(f"bank must hold theta (n, d) and x (n, ...) with n >= 1, got {theta.shape} and {x.shape}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    header = {"format": BANK_FORMAT, "format_version": BANK_FORMAT_VERSION, "metadata": metadata}
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, theta=theta, x=x, **{BANK_HEADER_KEY: raw}))


def _read_bank(path: str) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"bank file not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("it holds one array, not an .npz archive")
            with data:
                return {k: data[k] for k in data.files}
    except Exception as err:  # BadZipFile, EOFError, pickled arrays ... on foreign or corrupt bytes
        raise ValueError(f"{path} is not a simulation bank (.npz with 'theta' and 'x'): "
                         f"{type(err).__name__}: {err}") from None


def _bank_header(arrays: dict, path: str) -> dict:
    raw = arrays.get(BANK_HEADER_KEY)
    if raw is None:  # a bank from an earlier version, or written by hand: arrays only
        return {}
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"it is {raw.dtype} of shape {raw.shape}, not 1-D uint8")
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable bank header {BANK_HEADER_KEY!r}: {err}") from None
    if not isinstance(header, dict) or header.get("format") != BANK_FORMAT:
        raise ValueError(f"{path}: the bank header is not an {BANK_FORMAT!r} header")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > BANK_FORMAT_VERSION:
        raise ValueError(f"{path}: bank format_version {version!r} is not supported (at most "
                         f"{BANK_FORMAT_VERSION}); upgrade aalr_jax")
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: bank metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata


def load_bank_metadata(path: str) -> dict:
    """The ``metadata`` saved with a bank by :func:`save_bank` (``{}`` for a bank without a header)."""
    return _bank_header(_read_bank(path), os.fspath(path))


def load_bank(path: str) -> SimulationBank:
    """Read a bank written by :func:`save_bank` (no pickle).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a bank (names what is wrong).
    """
    path = os.fspath(path)
    arrays = _read_bank(path)
    _bank_header(arrays, path)
    if "theta" not in arrays or "x" not in arrays:
        raise ValueError(f"{path} is not a simulation bank (.npz with 'theta' and 'x'): it holds "
                         f"{sorted(arrays)}")
    theta, x = arrays["theta"], arrays["x"]
    for name, a in (("theta", theta), ("x", x)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{path}: {name} must hold real numbers, got dtype {a.dtype}")
    if theta.ndim != 2 or x.ndim < 2 or x.shape[0] != theta.shape[0] or theta.shape[0] < 1:
        raise ValueError(f"{path}: theta must be (n, d) and x (n, ...) with n >= 1, got {theta.shape} and {x.shape}")
    if not (np.isfinite(theta).all() and np.isfinite(x).all()):
        raise ValueError(f"{path}: the bank holds non-finite values")
    return SimulationBank(jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32))
