"""Training from a Zarr store: streaming statistics equal in-memory ones, each epoch visits every
row once in a new order while holding a bounded number of rows, and streamed training reaches the
validation loss of in-memory training on the same bank."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import aalr_jax
from aalr_jax.data import simulate
from aalr_jax.nn import standardization_from
from aalr_jax.store import ZarrBank
from aalr_jax import streaming
from aalr_jax.streaming import ChunkStream, split_chunks, streaming_standardization

pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("streaming") / "two_moons.zarr"
    return simulate(jax.random.PRNGKey(0), aalr_jax.tasks.get("two_moons"), 6000, store=path, chunk_size=200,
                    progress=False)


def test_streaming_standardization_equals_the_in_memory_one(store):
    stats, count = streaming_standardization(store, store.completed_chunks)
    memory = store.to_memory()
    reference = standardization_from(memory.theta, memory.x)
    assert count == 6000  # every field, the training range x_min / x_max included
    chex.assert_trees_all_close(stats._asdict(), reference._asdict(), rtol=1e-5, atol=1e-6)


def test_an_epoch_visits_every_row_once_with_bounded_memory(store):
    stream = ChunkStream(store, store.completed_chunks, batch_size=64, steps_per_block=2, window=2, prefetch=2)
    epochs = []
    for seed in (1, 2):
        blocks = list(stream.blocks(seed))
        assert {len(b[0]) for b in blocks} <= {128, 64}
        epochs.append(np.concatenate([b[0] for b in blocks]))
    rows = {tuple(r) for r in np.asarray(store.to_memory().theta)}
    for seen in epochs:
        assert len(seen) == (6000 // 64) * 64  # the n mod batch_size left over are the only ones left out
        assert len({tuple(r) for r in seen}) == len(seen) and {tuple(r) for r in seen} <= rows
    assert not np.array_equal(epochs[0][:500], epochs[1][:500])  # a new order each epoch
    # the stream's own accounting: a window of 2 chunks plus a few blocks, far below the 30 chunks
    assert stream.row_bound == 2 * 200 + 4 * 128
    assert 0 < stream.max_held_rows <= stream.row_bound
    assert stream.max_held_chunks <= 4.6 < 30 and stream.held_rows == 0


def test_validation_chunks_are_held_out_whole_and_bounded():
    train, val = split_chunks(jax.random.PRNGKey(0), range(40), 0.1, chunk_size=1000)
    assert len(val) == 4 and sorted(train + val) == list(range(40)) and not set(train) & set(val)
    train, val = split_chunks(jax.random.PRNGKey(0), range(40), 0.5, chunk_size=1000,
                              max_validation_simulations=3000)
    assert len(val) == 3
    with pytest.raises(ValueError, match="1 completed chunk"):
        split_chunks(jax.random.PRNGKey(0), [0], 0.1, chunk_size=10)


def test_streamed_training_matches_in_memory_training(store):
    validation = simulate(jax.random.PRNGKey(9), aalr_jax.tasks.get("two_moons"), 1000, progress=False)
    options = dict(max_epochs=12, patience=100, batch_size=64, hidden_features=(32, 32), progress=False,
                   validation_bank=validation)
    memory = aalr_jax.fit(jax.random.PRNGKey(2), store.to_memory(), **options)
    streamed = aalr_jax.fit(jax.random.PRNGKey(2), ZarrBank.open(store.path), **options)  # dispatched
    stream = streaming.last_stream
    a, b = memory.history.validation_loss.min(), streamed.history.validation_loss.min()
    assert b < 0.9 * np.log(4) and a < 0.9 * np.log(4)  # both learned (chance is 2 log 2)
    assert abs(a - b) < 0.05 * a, (a, b)  # the same loss within the noise of a different minibatch order
    assert len(streamed.history.train_loss) == 12 and np.isfinite(streamed.history.train_loss).all()
    assert stream.max_held_rows <= stream.row_bound < 6000  # the bank was never in the stream's memory
    # and the estimator is a usable ratio: higher on the simulated pairs than on shuffled ones
    memory_bank = store.to_memory()
    joint = streamed.estimator.head(memory_bank.theta[:500], streamed.estimator.embed(memory_bank.x[:500]))
    marginal = streamed.estimator.head(memory_bank.theta[500:1000], streamed.estimator.embed(memory_bank.x[:500]))
    assert float(joint.mean()) > float(marginal.mean()) + 0.5


def test_ensemble_from_a_store(store):
    key = jax.random.PRNGKey(3)
    result = aalr_jax.fit_ensemble(key, store, 2, max_epochs=2, batch_size=64, learning_rate=3e-3,
                                   hidden_features=(16,), progress=False)
    assert len(result.histories) == 2
    for history in result.histories:  # each member learns
        assert history.validation_loss[-1] < history.validation_loss[0]
    members = result.estimator.members.params
    assert any(not np.allclose(leaf[0], leaf[1]) for leaf in map(np.asarray, jax.tree.leaves(members)))
    # the members share one split of whole chunks; the reported loss is the ensemble's on it
    _, val_chunks = split_chunks(jax.random.split(key)[0], store.completed_chunks, 0.1, store.chunk_size)
    held_out = store.read_chunks(val_chunks)
    assert held_out.num_simulations == 3 * 200
    np.testing.assert_allclose(result.validation_loss, aalr_jax.train.evaluate(result.estimator, held_out), rtol=1e-6)
