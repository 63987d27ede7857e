"""The simulation engine behind ``simulate(..., backend="local" | "dask", store=...)``.

The run is cut into chunks of ``chunk_size`` consecutive simulations. For each chunk the client
draws θ in JAX (:func:`aalr_jax.hostsim.draw_theta`) and runs the chunk in process
(``backend="local"``, also ``backend="jax"`` with a store) or submits it as one task to a
``dask.distributed`` cluster (``backend="dask"``), keeping a bounded number of chunks in flight.
Results are written as they arrive, to a Zarr store (:mod:`aalr_jax.store`, resumable) or to
memory. Every simulation depends only on ``(rng_key, index)``, so the bank is the same for any
number of workers, any completion order, any chunk size, and across restarts.

Which contract the simulator follows: a built-in :class:`~aalr_jax.tasks.Task` (and any simulator
with ``backend="jax"``) is JAX, ``simulator(rng_key, theta)``, vmapped over a chunk; a
``(prior, simulator)`` pair with ``backend="local"`` or ``"dask"`` is a host simulator,
``simulator(rng: numpy.random.Generator, theta: np.ndarray (d,)) -> x`` (:mod:`aalr_jax.hostsim`).

Dask. ``client`` is a ``dask.distributed.Client``, or a scheduler address such as
``"tcp://host:8786"``; ``None`` starts a ``LocalCluster`` of ``workers`` single-threaded worker
processes (default: the machine's cores) and closes it afterwards. On SLURM or PBS, start the
workers with dask-jobqueue and pass its client::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=1, memory="4GB", walltime="02:00:00")
    cluster.scale(jobs=100)
    bank = simulate(key, (prior, simulator), 10**6, backend="dask", client=Client(cluster),
                    store="bank.zarr")

A worker that dies on a chunk (a segfaulting simulator) fails that chunk's simulations, recorded
like any other failure. Ctrl-C cancels the chunks in flight; the store keeps every completed chunk
and the same call resumes.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from aalr_jax import hostsim
from aalr_jax.store import ZarrBank
from aalr_jax.types import SimulationBank

__all__ = ["BACKENDS", "default_chunk_size", "simulate_chunks"]

BACKENDS = ("jax", "local", "dask")
HOST_CHUNK_CAP = 1000  # enough simulations per task to hide the scheduler's ~1 ms per task
JAX_CHUNK_CAP = 10_000
TASKS_PER_WORKER = 16  # chunks per worker when n is small: load balance against slow simulations


def default_chunk_size(num_simulations: int, num_workers: int, contract: str) -> int:
    """Simulations per chunk: ``clip(ceil(n / (16·workers)), 1, cap)``, at least 16 chunks per worker
    (load balance, progress, resumption, validation chunks) and at most ``cap`` simulations per task,
    1000 for host simulators and 10_000 for JAX ones (vmapped, so a chunk costs little more than one)."""
    cap = JAX_CHUNK_CAP if contract == "jax" else HOST_CHUNK_CAP
    return int(np.clip(math.ceil(num_simulations / (TASKS_PER_WORKER * max(1, num_workers))), 1, cap))


def _name(obj) -> str:
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _describe_prior(prior) -> str:
    """A stable description of a numpyro prior: class, shapes and (small) parameters."""
    parts = [type(prior).__name__, f"batch{tuple(prior.batch_shape)}", f"event{tuple(prior.event_shape)}"]
    for name in sorted(getattr(prior, "arg_constraints", {})):
        value = np.asarray(getattr(prior, name, np.nan))
        if value.size <= 64:
            parts.append(f"{name}={np.round(value.astype(np.float64), 6).tolist()}")
    base = getattr(prior, "base_dist", None)
    return " ".join(parts) + (f" of {_describe_prior(base)}" if base is not None else "")


class _MemorySink:
    """The in-memory counterpart of :class:`ZarrBank`'s writing interface."""

    def __init__(self, num_simulations: int, theta_dim: int, chunk_size: int):
        self.num_planned, self.chunk_size = num_simulations, chunk_size
        self.num_chunks = -(-num_simulations // chunk_size)
        self.theta = np.full((num_simulations, theta_dim), np.nan, np.float32)
        self.x, self.valid, self.failures, self.completed_chunks = None, np.zeros(num_simulations, bool), [], []

    def chunk_bounds(self, chunk):
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.num_planned)

    def write_chunk(self, chunk, theta, x, valid, failures):
        start, stop = self.chunk_bounds(chunk)
        if x is not None and self.x is None:
            self.x = np.full((self.num_planned,) + x.shape[1:], np.nan, np.float32)
        if x is not None and x.shape[1:] != self.x.shape[1:]:
            error = f"returned shape {x.shape[1:]}, expected {self.x.shape[1:]}"
            failures = failures + [{"index": start + j, "theta": theta[j].tolist(), "error": error}
                                   for j in np.flatnonzero(valid)]
            x, valid = None, np.zeros_like(valid)
        self.theta[start:stop] = theta
        if x is not None:
            self.x[start:stop] = x
        self.valid[start:stop] = valid
        self.failures.extend(failures)
        self.completed_chunks.append(chunk)

    def valid_mask(self):
        return self.valid


@contextlib.contextmanager
def _dask_client(client, workers):
    """A ``distributed.Client``: ``client`` itself, one connected to an address, or a new LocalCluster's."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:  # the optional dependency
        raise ImportError("backend='dask' needs dask[distributed]: pip install 'aalr-jax[dask]'") from err
    if client is not None and not isinstance(client, (str, Client)):
        raise TypeError(f"client must be a dask.distributed.Client or a scheduler address, got {type(client).__name__}")
    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, str):
        with Client(client) as own:
            yield own
        return
    n = int(workers) if workers is not None else (os.cpu_count() or 1)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as own:
        yield own


def _failure_summary(failures: list, num_simulations: int) -> str:
    shown = "; ".join(f"#{f['index']} theta={np.round(f['theta'], 4).tolist()}: {f['error']}" for f in failures[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return f"{len(failures)} of {num_simulations} simulations failed: {shown}{more}"


def _check_run_options(backend, on_invalid, num_simulations, chunk_size, timeout, client, workers) -> int:
    """The options of :func:`simulate_chunks`, checked; returns ``num_simulations`` as an int."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    if isinstance(num_simulations, bool) or int(num_simulations) != num_simulations or num_simulations < 1:
        raise ValueError(f"num_simulations must be a positive integer, got {num_simulations!r}")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if client is not None and workers is not None:
        raise ValueError(f"workers sizes the LocalCluster started when client is None, got workers={workers} "
                         "and a client")
    if backend != "dask" and (client is not None or workers is not None):
        raise ValueError(f"client and workers apply to backend='dask', got backend={backend!r}")
    return int(num_simulations)


def _run_config(rng_key, problem, prior, simulator, n: int, contract: str) -> dict:
    """The record that names a run in its store: simulator, prior, contract, seed, n and θ's dimension."""
    is_task = hasattr(problem, "prior") and hasattr(problem, "simulator")
    return {
        "simulator": f"task:{problem.name}" if is_task else _name(simulator),
        "prior": _describe_prior(prior),
        "contract": contract,
        "seed": list(hostsim.key_words(rng_key)),
        "num_simulations": n,
        "theta_dim": int(prior.event_shape[0]),
    }


def _open_sink(store, config: dict, chunk_size, num_workers: int):
    """Where the chunks go: a Zarr store (created, or resumed with its chunk size) or memory."""
    from aalr_jax import __version__

    n, contract = config["num_simulations"], config["contract"]
    if store is None:
        return _MemorySink(n, config["theta_dim"], int(chunk_size or default_chunk_size(n, num_workers, contract)))
    if os.path.exists(os.fspath(store)) and chunk_size is None:  # resumed: the store's own chunks
        chunk_size = ZarrBank.open(store).chunk_size
    config["chunk_size"] = int(chunk_size or default_chunk_size(n, num_workers, contract))
    return ZarrBank.create_or_resume(store, config, __version__)


def _run_pending(sink, dask_client, run_chunk, simulator, prior, keys: tuple, options: dict, progress: bool,
                 num_workers: int, n: int) -> None:
    """Simulate the chunks ``sink`` has not completed, in process or on Dask, writing each into it.

    ``keys``: ``(k_θ, words of k_sim)``; chunk ``c`` draws θ for its rows from ``k_θ`` and
    simulates row i with the seed ``(k_sim, i)``.
    """
    key_theta, words = keys
    done = set(sink.completed_chunks)
    pending = [c for c in range(sink.num_chunks) if c not in done]
    done_sims = sum(stop - start for start, stop in map(sink.chunk_bounds, done))
    bar = tqdm(total=n, initial=done_sims, desc="simulate", unit="sim", disable=not progress,
               leave=False)

    def thetas(chunk):
        return hostsim.draw_theta(prior, key_theta, *sink.chunk_bounds(chunk))

    def record(chunk, theta, result):
        sink.write_chunk(chunk, theta, result.x, result.valid, result.failures)
        bar.update(len(theta))

    try:
        if dask_client is None:
            for c in pending:
                theta = thetas(c)
                record(c, theta, run_chunk(simulator, theta, sink.chunk_bounds(c)[0], words, **options))
        else:
            _run_on_dask(dask_client, run_chunk, simulator, words, options, pending, thetas, record,
                         sink.chunk_bounds, max_in_flight=max(4, 2 * num_workers))
    finally:
        bar.close()


def simulate_chunks(rng_key, problem, num_simulations: int, *, backend: str = "local", store=None,
                    chunk_size: int | None = None, on_invalid: str = "raise", progress: bool = True,
                    client=None, workers: int | None = None, timeout: float | None = None):
    """Run a bank in chunks in process or on Dask, into memory or a Zarr store (module docstring).

    Args:
        rng_key: PRNG key; θ_i uses ``fold_in(k_θ, i)`` and simulation i the seed ``(k_sim, i)``,
            with ``k_θ, k_sim = split(rng_key)``.
        problem: a :class:`~aalr_jax.tasks.Task` or a ``(prior, simulator)`` pair.
        num_simulations: n.
        backend: ``"local"`` (serial, in process), ``"dask"``, or ``"jax"`` (in process, JAX contract).
        store: path of a Zarr store (created, or resumed when it holds the same run), or ``None``.
        chunk_size: simulations per chunk (one Dask task, one Zarr chunk); default
            :func:`default_chunk_size`, or the store's when resuming.
        on_invalid: ``"raise"``: after the run, ``ValueError`` summarising the failed simulations
            (a store keeps them, with ``valid`` False); ``"drop"``: warn and keep the valid ones.
        progress: progress bar over completed simulations.
        client: Dask client or scheduler address (``backend="dask"``); ``None``: a LocalCluster.
        workers: worker processes of that LocalCluster (default: the machine's cores).
        timeout: seconds one host simulation may take before it counts as failed.

    Returns:
        a :class:`~aalr_jax.store.ZarrBank` when ``store`` is given (failed rows masked), else a
        ``SimulationBank(theta (n', d), x (n', *x_shape))`` of the n' valid simulations, float32.
    """
    from aalr_jax.data import resolve_problem

    n = _check_run_options(backend, on_invalid, num_simulations, chunk_size, timeout, client, workers)
    prior, simulator = resolve_problem(problem)
    is_task = hasattr(problem, "prior") and hasattr(problem, "simulator")
    contract = "jax" if backend == "jax" or is_task else "host"
    if contract == "jax" and timeout is not None:
        raise ValueError(f"timeout applies to host simulators, got timeout={timeout} for a JAX simulator (a task or "
                         "backend='jax')")
    run_chunk = hostsim.run_jax_chunk if contract == "jax" else hostsim.run_host_chunk
    key_theta, key_sim = jax.random.split(jnp.asarray(rng_key) if not _typed(rng_key) else jax.random.key_data(rng_key))
    config = _run_config(rng_key, problem, prior, simulator, n, contract)

    with (_dask_client(client, workers) if backend == "dask" else contextlib.nullcontext()) as dask_client:
        num_workers = sum(dask_client.nthreads().values()) if dask_client is not None else 1
        sink = _open_sink(store, config, chunk_size, num_workers)
        x_shape = tuple(problem.x_shape) if is_task else getattr(sink, "x_shape", None)
        _run_pending(sink, dask_client, run_chunk, simulator, prior, (key_theta, hostsim.key_words(key_sim)),
                     dict(timeout=timeout, x_shape=x_shape), progress, num_workers, n)

    failures = sink.failures
    if failures:
        message = _failure_summary(failures, n)
        if on_invalid == "raise":
            where = f"; store {store!r} keeps the valid ones (load_bank), " if store is not None else "; "
            raise ValueError(message + where + "pass on_invalid='drop' to keep the valid ones")
        warnings.warn(message + "; dropped", stacklevel=3)
    if store is not None:
        return sink
    keep = sink.valid_mask()
    if not keep.any():
        raise ValueError(f"all {n} simulations failed; nothing to return")
    return SimulationBank(jnp.asarray(sink.theta[keep]), jnp.asarray(sink.x[keep]))


def _typed(rng_key) -> bool:
    return jnp.issubdtype(jnp.asarray(rng_key).dtype, jax.dtypes.prng_key)


def _run_on_dask(client, run_chunk, simulator, words, options, pending, thetas, record, bounds, *, max_in_flight):
    """Submit ``pending`` chunks with at most ``max_in_flight`` at once; ``record`` each as it completes.

    A chunk whose task errs (a worker died, an unpicklable result) has all its simulations recorded
    as failed with that error. KeyboardInterrupt cancels what is in flight and propagates.
    """
    from dask.distributed import as_completed

    import cloudpickle

    # Ship the chunk function by value: a worker then needs only NumPy and the user's simulator, not
    # an import of aalr_jax (and so of JAX), which costs seconds per worker. A local closure is what
    # makes distributed fall back from pickle to cloudpickle; it returns builtins for the same reason.
    cloudpickle.register_pickle_by_value(hostsim)

    def task(theta, start):  # the simulator travels in the closure, so cloudpickle serialises it too
        return tuple(run_chunk(simulator, theta, start, words, **options))

    todo = iter(pending)
    in_flight = {}

    def submit():
        chunk = next(todo, None)
        if chunk is None:
            return None
        theta = thetas(chunk)
        future = client.submit(task, theta, bounds(chunk)[0], pure=False)
        in_flight[future] = (chunk, theta)
        return future

    futures = [f for f in (submit() for _ in range(max_in_flight)) if f is not None]
    queue = as_completed(futures)
    try:
        for future in queue:
            chunk, theta = in_flight.pop(future)
            try:
                result = hostsim.ChunkResult(*future.result())
            except Exception as err:  # the task itself failed: every simulation of the chunk did
                message = f"{type(err).__name__}: {err}"
                failures = [{"index": bounds(chunk)[0] + j, "theta": t.tolist(), "error": message}
                            for j, t in enumerate(theta)]
                result = hostsim.ChunkResult(bounds(chunk)[0], None, np.zeros(len(theta), bool), failures, 0.0)
            record(chunk, theta, result)
            future.release()
            nxt = submit()
            if nxt is not None:
                queue.add(nxt)
    except BaseException:
        client.cancel(list(in_flight))
        raise
