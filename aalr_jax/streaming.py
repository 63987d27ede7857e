"""Training from a bank on disk: shuffled minibatches streamed from a Zarr store, memory bounded.

:func:`aalr_jax.train.fit` trains on a :class:`~aalr_jax.store.ZarrBank` through :func:`store_data`:

* Validation: a random set of whole chunks (``validation_fraction`` of them, at most
  ``max_validation_simulations`` rows, at least one chunk) is held out and loaded into memory.
* Standardisation: mean and standard deviation of θ and x over the training chunks in one pass,
  accumulated in float64 chunk by chunk (Chan et al.'s pairwise update of mean and M2).
* Each epoch, a background thread (:class:`ChunkStream`) visits the training chunks in a new random
  order, ``window`` chunks at a time; it shuffles the rows of a window (with the rows left over
  from the previous one) and cuts them into blocks of ``steps_per_block`` minibatches, handed over
  through a queue of ``prefetch`` blocks. Each block is one call of the same compiled epoch
  function as in-memory training (the ``epoch`` of :func:`aalr_jax.train.build_trainer`, a
  ``lax.scan`` over its minibatches); the rows that do not fill a block end the epoch as single minibatches, and the
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

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.nn import Standardization
from aalr_jax.types import SimulationBank

__all__ = ["ChunkStream", "split_chunks", "split_store", "store_data", "streaming_standardization"]

MAX_VALIDATION_SIMULATIONS = 100_000


def streaming_standardization(bank, chunks, *, min_scale: float = 1e-6) -> tuple[Standardization, int]:
    """Standardisation of θ and x over the valid rows of ``chunks``, read one chunk at a time.

    Means and M2 are merged chunk by chunk in float64; the scale is the population standard deviation
    (as :func:`aalr_jax.nn.standardization_from`), 1 where it is below ``min_scale``; ``x_min`` and
    ``x_max`` are the range of x (for :mod:`aalr_jax.ood`).

    Returns:
        ``(Standardization(theta_loc (d,), theta_scale (d,), x_loc, x_scale, x_min, x_max), n)``, the
        x statistics of shape ``x_shape``.
    """
    count, stats, x_min, x_max = 0, None, None, None
    for c in chunks:
        parts = bank.read_chunk(c)
        k = len(parts[0])
        if k == 0:
            continue
        low, high = parts[1].min(0), parts[1].max(0)
        x_min = low if x_min is None else np.minimum(x_min, low)
        x_max = high if x_max is None else np.maximum(x_max, high)
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
    return Standardization(*out, jnp.asarray(x_min, jnp.float32), jnp.asarray(x_max, jnp.float32)), count


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


class _ChunkSubset:
    """A store restricted to some of its completed chunks (the training chunks of a split)."""

    is_store = True

    def __init__(self, bank, chunks):
        self._bank, self.completed_chunks = bank, sorted(int(c) for c in chunks)

    def __getattr__(self, name):
        return getattr(self._bank, name)


def split_store(rng_key, bank, validation_fraction: float):
    """``(train, validation)``: the store restricted to its training chunks, and the held-out chunks
    (:func:`split_chunks`) read into memory as a :class:`~aalr_jax.types.SimulationBank`."""
    train_chunks, val_chunks = split_chunks(rng_key, bank.completed_chunks, validation_fraction, bank.chunk_size)
    return _ChunkSubset(bank, train_chunks), bank.read_chunks(val_chunks)


last_stream: ChunkStream | None = None  # the reader of the latest streamed training, for its accounting


def store_data(rng_key, bank, validation_fraction: float, validation_bank=None, *, window: int = 4,
               steps_per_block: int = 16, prefetch: int = 2):
    """:class:`aalr_jax.train.TrainingData` of a store: held-out chunks, streamed statistics, streamed epochs.

    Args:
        rng_key: key of the chunk split (unused when ``validation_bank`` is given).
        bank: a :class:`~aalr_jax.store.ZarrBank` (its completed chunks train, less those held out).
        validation_fraction: share of the chunks held out when ``validation_bank`` is None.
        validation_bank: an in-memory held-out bank (then every completed chunk trains).
        window, steps_per_block, prefetch: the :class:`ChunkStream`'s settings.
    """
    from aalr_jax.train import TrainingData, TrainInfo

    if bank.x is None:
        raise ValueError(f"bank {bank.path} holds no valid simulation yet")
    if validation_bank is None:
        bank, validation_bank = split_store(rng_key, bank, validation_fraction)
    standardization, num_train = streaming_standardization(bank, bank.completed_chunks)

    def epoch_fn(trainer, batch_size: int):
        global last_stream
        stream = last_stream = ChunkStream(bank, bank.completed_chunks, batch_size=batch_size,
                                           steps_per_block=steps_per_block, window=window, prefetch=prefetch)

        def run_epoch(key, state):
            seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
            total, rows = np.zeros(2), 0
            for b, (theta, x) in enumerate(stream.blocks(seed)):
                state, info = trainer.epoch(jax.random.fold_in(key, b), state,
                                            SimulationBank(jnp.asarray(theta), jnp.asarray(x)))
                total, rows = total + np.asarray([info.loss, info.objective]) * len(theta), rows + len(theta)
            return state, TrainInfo(*(total / rows))

        return run_epoch

    return TrainingData(standardization, num_train, validation_bank, epoch_fn)
