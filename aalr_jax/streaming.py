"""Training from a bank on disk: shuffled minibatches streamed from a Zarr store, memory bounded.

:func:`aalr_jax.train.fit` hands a :class:`~aalr_jax.store.ZarrBank` to :func:`fit_store`:

* Validation: a random set of whole chunks (``validation_fraction`` of them, at most
  ``max_validation_simulations`` rows, at least one chunk) is held out and loaded into memory.
* Standardisation: mean and standard deviation of θ and x over the training chunks in one pass,
  accumulated in float64 chunk by chunk (Chan et al.'s pairwise update of mean and M2).
* Each epoch, a background thread (:class:`ChunkStream`) visits the training chunks in a new random
  order, ``window`` chunks at a time; it shuffles the rows of a window (with the rows left over
  from the previous one) and cuts them into blocks of ``steps_per_block`` minibatches, handed over
  through a queue of ``prefetch`` blocks. Each block is one call of the same compiled epoch
  function as in-memory training (:func:`aalr_jax.train.build_epoch`, a ``lax.scan`` over its
  minibatches); the rows that do not fill a block end the epoch as single minibatches, and the
  last ``n_train mod batch_size`` rows are left out (different ones every epoch). So an epoch
  still takes ``n_train // batch_size`` optimizer steps, and at most two shapes are compiled.
* Memory: the stream holds at most ``window`` chunks plus ``prefetch + 2`` blocks of rows; it
  counts what it holds (``held_rows``, ``max_held_rows``, :attr:`ChunkStream.row_bound`).

The shuffle is local (within a window of chunks), as for any bank larger than memory; simulations
are i.i.d. across chunks, so the chunk order carries no signal.
"""

from __future__ import annotations

import math
import queue
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from aalr_jax.nn import NetworkConfig, RatioEnsemble, Standardization, init_estimator
from aalr_jax.types import SimulationBank

__all__ = ["ChunkStream", "fit_ensemble_store", "fit_store", "split_chunks", "streaming_standardization"]

MAX_VALIDATION_SIMULATIONS = 100_000


def streaming_standardization(bank, chunks, *, min_scale: float = 1e-6) -> tuple[Standardization, int]:
    """Standardisation of θ and x over the valid rows of ``chunks``, read one chunk at a time.

    Means and M2 are merged chunk by chunk in float64; the scale is the population standard deviation
    (as :func:`aalr_jax.nn.standardization_from`), 1 where it is below ``min_scale``.

    Returns:
        ``(Standardization(theta_loc (d,), theta_scale (d,), x_loc x_shape, x_scale x_shape), n)``.
    """
    count, stats = 0, None
    for c in chunks:
        parts = bank.read_chunk(c)
        k = len(parts[0])
        if k == 0:
            continue
        new = [(a.astype(np.float64).mean(0), ((a.astype(np.float64) - a.astype(np.float64).mean(0)) ** 2).sum(0))
               for a in parts]
        if stats is None:
            stats = new
        else:
            total = count + k
            merged = []
            for (mean, m2), (mean_b, m2_b) in zip(stats, new):
                delta = mean_b - mean
                merged.append((mean + delta * k / total, m2 + m2_b + delta**2 * count * k / total))
            stats = merged
        count += k
    if stats is None:
        raise ValueError("bank has no valid simulations in its training chunks")
    out = []
    for mean, m2 in stats:
        scale = np.sqrt(m2 / count)
        out += [jnp.asarray(mean, jnp.float32), jnp.asarray(np.where(scale > min_scale, scale, 1.0), jnp.float32)]
    return Standardization(*out), count


class ChunkStream:
    """Shuffled blocks of rows from chunks of a store, read ahead by a background thread.

    Args:
        bank: a :class:`~aalr_jax.store.ZarrBank`.
        chunks: indices of the chunks to stream.
        batch_size: rows per minibatch.
        steps_per_block: minibatches per block (a block is ``(steps_per_block · batch_size)`` rows).
        window: chunks shuffled together (at least enough to fill one block).
        prefetch: blocks the queue holds ahead of the consumer.

    ``held_rows`` counts the rows the stream holds (read and not yet emitted, queued, and the block
    the consumer has); ``max_held_rows`` its maximum; :attr:`row_bound` the bound it never exceeds.
    """

    def __init__(self, bank, chunks, *, batch_size: int, steps_per_block: int = 16, window: int = 4,
                 prefetch: int = 2):
        self.bank, self.chunks = bank, list(chunks)
        self.batch_size, self.steps_per_block = int(batch_size), int(steps_per_block)
        self.block_rows = self.batch_size * self.steps_per_block
        self.window = max(int(window), math.ceil(self.block_rows / bank.chunk_size))
        self.prefetch = int(prefetch)
        self.held_rows = self.max_held_rows = 0
        self._lock = threading.Lock()

    @property
    def row_bound(self) -> int:
        """Rows held at most: a window of chunks, the carry of less than a block, the queue, one block."""
        return self.window * self.bank.chunk_size + (self.prefetch + 2) * self.block_rows

    @property
    def max_held_chunks(self) -> float:
        """``max_held_rows`` in units of chunks."""
        return self.max_held_rows / self.bank.chunk_size

    def _hold(self, rows: int) -> None:
        with self._lock:
            self.held_rows += rows
            self.max_held_rows = max(self.max_held_rows, self.held_rows)

    def _produce(self, seed: int, out: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            rng = np.random.default_rng(seed)
            order = rng.permutation(self.chunks)
            carry = None
            for w in range(0, len(order), self.window):
                parts = [self.bank.read_chunk(c) for c in order[w : w + self.window]]
                self._hold(sum(len(p[0]) for p in parts))
                if carry is not None:
                    parts.insert(0, carry)
                theta = np.concatenate([p[0] for p in parts])
                x = np.concatenate([p[1] for p in parts])
                perm = rng.permutation(len(theta))
                theta, x = theta[perm], x[perm]
                full = (len(theta) // self.block_rows) * self.block_rows
                for s in range(0, full, self.block_rows):  # each block moves from the buffer to the queue
                    if not put((theta[s : s + self.block_rows], x[s : s + self.block_rows])):
                        return
                carry = (theta[full:], x[full:])
            if carry is not None:
                rest = (len(carry[0]) // self.batch_size) * self.batch_size
                for s in range(0, rest, self.batch_size):
                    if not put((carry[0][s : s + self.batch_size], carry[1][s : s + self.batch_size])):
                        return
                self._hold(-(len(carry[0]) - rest))  # the last n_train mod batch_size rows, left out
            put(None)
        except BaseException as err:  # surfaced in the consumer's thread
            put(err)

    def blocks(self, seed: int):
        """Yield ``(theta (r, d), x (r, *x_shape))`` NumPy blocks of one epoch, ``r`` is
        ``steps_per_block · batch_size`` or, at the end, ``batch_size``."""
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(seed, out, stop), daemon=True, name="aalr-stream")
        thread.start()
        current = 0
        try:
            while True:
                item = out.get()
                self._hold(-current)
                current = 0
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                current = len(item[0])
                yield item
        finally:
            stop.set()
            thread.join()
            with self._lock:
                self.held_rows = 0


def _in_memory(bank) -> SimulationBank:
    """``bank`` (a SimulationBank or ``(theta, x)``) as float32 arrays; ``ValueError`` if not finite."""
    theta, x = (jnp.asarray(a, jnp.float32) for a in bank)
    if theta.ndim != 2 or theta.shape[0] != x.shape[0] or theta.shape[0] < 2:
        raise ValueError(f"validation_bank must hold theta (n, d) and x (n, ...) with n >= 2, got {theta.shape} "
                         f"and {x.shape}")
    if not (bool(jnp.isfinite(theta).all()) and bool(jnp.isfinite(x).all())):
        raise ValueError("validation_bank contains non-finite values")
    return SimulationBank(theta, x)


def split_chunks(rng_key, chunks, validation_fraction: float, chunk_size: int,
                 max_validation_simulations: int = MAX_VALIDATION_SIMULATIONS) -> tuple[list, list]:
    """``(train_chunks, validation_chunks)``: ``ceil(f · num_chunks)`` random chunks held out, at most
    ``max_validation_simulations // chunk_size`` of them, at least one; at least one trains."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    chunks = np.asarray(sorted(chunks))
    if len(chunks) < 2:
        raise ValueError(f"a store with {len(chunks)} completed chunk(s) cannot hold out validation chunks; "
                         "simulate with a smaller chunk_size or pass validation_bank")
    num_val = math.ceil(validation_fraction * len(chunks))
    num_val = int(min(num_val, max(1, max_validation_simulations // chunk_size), len(chunks) - 1))
    perm = np.asarray(jax.random.permutation(rng_key, len(chunks)))
    return sorted(chunks[perm[num_val:]].tolist()), sorted(chunks[perm[:num_val]].tolist())


def fit_store(rng_key, bank, *, hidden_features=(128, 128, 128), activation="selu", embedding="flatten",
              embedding_features=64, theta_bound=10.0, quadratic=False, optimizer=None, learning_rate=None,
              batch_size=None, max_epochs=300, patience=50, validation_fraction=0.1, validation_bank=None,
              balance=0.0, num_negatives=1, ratio_weighting=None, ema_decay=None, progress=True,
              window: int = 4, steps_per_block: int = 16, prefetch: int = 2, train_chunks=None):
    """:func:`aalr_jax.train.fit` for a bank in a Zarr store, streaming its minibatches (module docstring).

    Args:
        rng_key, hidden_features, ..., progress: as in :func:`aalr_jax.train.fit`; the held-out data
            are whole chunks (:func:`split_chunks`) unless ``validation_bank`` is given.
        bank: a :class:`~aalr_jax.store.ZarrBank` (its completed chunks train).
        window: chunks shuffled together.
        steps_per_block: minibatches per compiled call.
        prefetch: blocks read ahead.
        train_chunks: the chunks to train on (default: every completed chunk not held out).

    Returns:
        ``FitResult(estimator, history)``; ``history`` as in :func:`aalr_jax.train.fit`. After the
        call, ``fit_store.last_stream`` is the :class:`ChunkStream` it read through (its accounting).
    """
    from aalr_jax import train as _train

    if ratio_weighting is None:
        ratio_weighting = _train.DEFAULT_RATIO_WEIGHTING
    for name, value in (("max_epochs", max_epochs), ("patience", patience), ("num_negatives", num_negatives),
                        ("window", window), ("steps_per_block", steps_per_block), ("prefetch", prefetch)) + (
        (("batch_size", batch_size),) if batch_size is not None else ()
    ):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
    if bank.x is None:
        raise ValueError(f"bank {bank.path} holds no valid simulation yet")
    key_split, key_init, key_epochs = jax.random.split(rng_key, 3)
    if train_chunks is None:
        train_chunks = bank.completed_chunks
        if validation_bank is None:
            train_chunks, val_chunks = split_chunks(key_split, train_chunks, validation_fraction, bank.chunk_size)
            validation_bank = bank.read_chunks(val_chunks)
    val = _in_memory(validation_bank)
    if val.theta.shape[1:] != (bank.theta_dim,) or val.x.shape[1:] != bank.x_shape:
        raise ValueError(f"validation_bank must have theta (n, {bank.theta_dim}) and x (n, *{bank.x_shape}), "
                         f"got {val.theta.shape} and {val.x.shape}")
    standardization, num_train = streaming_standardization(bank, train_chunks)
    if batch_size is None:
        batch_size = _train.default_batch_size(num_train)
    if learning_rate is None:
        learning_rate = _train.default_learning_rate(batch_size)
    if num_train < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_train} training simulations")
    if num_negatives >= batch_size:
        raise ValueError(f"num_negatives must be smaller than batch_size ({batch_size}), got {num_negatives}")

    config = NetworkConfig(theta_dim=bank.theta_dim, x_shape=bank.x_shape,
                           hidden_features=tuple(int(h) for h in hidden_features), activation=activation,
                           embedding=embedding, embedding_features=int(embedding_features),
                           theta_bound=theta_bound, quadratic=quadratic)
    estimator = init_estimator(key_init, config, standardization)
    steps = max_epochs * (num_train // batch_size)
    ema_decay = _train.default_ema_decay(steps) if ema_decay is None else ema_decay
    if optimizer is None:
        optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01), weight_decay=0.0)
    state = _train.TrainState(estimator, optimizer.init(estimator.params))
    if ema_decay:
        state = _train.start_average(state)
    step_block = _train.build_epoch(optimizer, batch_size, balance, int(num_negatives), float(ratio_weighting),
                                    float(ema_decay))
    stream = ChunkStream(bank, train_chunks, batch_size=batch_size, steps_per_block=steps_per_block,
                         window=window, prefetch=prefetch)

    start = time.perf_counter()
    best_loss, best_epoch, best = np.inf, 0, estimator
    train_losses, val_losses = [], []
    bar = tqdm(range(max_epochs), desc="train (streamed)", unit="epoch", disable=not progress, leave=False)
    for i in bar:
        key_epoch = jax.random.fold_in(key_epochs, i)
        seed = int(jax.random.randint(key_epoch, (), 0, np.iinfo(np.int32).max))
        total, rows = 0.0, 0
        for b, (theta, x) in enumerate(stream.blocks(seed)):
            state, loss = step_block(state, jnp.asarray(theta), jnp.asarray(x), jax.random.fold_in(key_epoch, b))
            total, rows = total + float(loss) * len(theta), rows + len(theta)
        current = _train.averaged(state, ema_decay) if ema_decay else state.estimator
        val_loss = _train.evaluate(current, val)
        train_losses.append(total / rows)
        val_losses.append(val_loss)
        if not np.isfinite(val_loss):
            raise FloatingPointError(f"validation loss became {val_loss} at epoch {i}; lower the learning rate")
        if val_loss < best_loss:
            best_loss, best_epoch, best = val_loss, i, current
        bar.set_postfix(train=f"{train_losses[-1]:.4f}", val=f"{val_loss:.4f}", best=best_epoch)
        if i - best_epoch >= patience:
            break
    bar.close()
    history = _train.TrainHistory(np.asarray(train_losses), np.asarray(val_losses), best_epoch,
                                  len(train_losses) < max_epochs, time.perf_counter() - start, float(ema_decay))
    result = _train.FitResult(best, history)
    fit_store.last_stream = stream  # the reader's accounting, for tests and benchmarks
    return result


def fit_ensemble_store(rng_key, bank, num_members: int = 4, *, validation_fraction: float = 0.1,
                       validation_bank=None, progress: bool = True, **fit_kwargs):
    """:func:`aalr_jax.train.fit_ensemble` for a store: one chunk split, ``num_members`` streamed fits
    (member m with key ``fold_in(k, m)``), logits averaged."""
    from aalr_jax import train as _train

    if isinstance(num_members, bool) or int(num_members) != num_members or num_members < 1:
        raise ValueError(f"num_members must be a positive integer, got {num_members!r}")
    key_split, key_members = jax.random.split(rng_key)
    train_chunks = bank.completed_chunks
    if validation_bank is None:
        train_chunks, val_chunks = split_chunks(key_split, train_chunks, validation_fraction, bank.chunk_size)
        validation_bank = bank.read_chunks(val_chunks)
    validation_bank = _in_memory(validation_bank)
    results = [fit_store(jax.random.fold_in(key_members, m), bank, validation_bank=validation_bank,
                         train_chunks=train_chunks, progress=progress, **fit_kwargs)
               for m in tqdm(range(int(num_members)), desc="ensemble", unit="member", disable=not progress)]
    ensemble = RatioEnsemble.stack([r.estimator for r in results])
    return _train.EnsembleFitResult(ensemble, tuple(r.history for r in results),
                                    _train.evaluate(ensemble, validation_bank))
