"""Training a ratio estimator with optax: one jitted ``lax.scan`` per epoch, early stopping.

Each epoch shuffles the training bank, cuts it into ``n_train // batch_size`` minibatches (the
``n_train mod batch_size`` left over change every epoch, so none is left out for good) and scans
the optimizer over them inside one compiled call. After each epoch the validation loss is computed
on the held-out bank with a fixed pairing; the parameters with the lowest validation loss are kept,
and training stops after ``patience`` epochs without improvement (or at ``max_epochs``).

With ``ema_decay`` β > 0 (by default 0.999, less for short schedules) the parameters validated
and kept are not the iterates p_t but their exponential moving average (Polyak averaging),
a_t = β·a_{t−1} + (1 − β)·p_t from a_0 = 0, debiased as a_t / (1 − β^t): a weighted mean of the
last ~1/(1 − β) iterates. Early stopping often ends training while the learning rate is still
near its peak (gaussian_linear at 10^5 simulations stops near epoch 65 of a 300-epoch cosine),
where single iterates carry the minibatch noise; the average does not.

:func:`fit_ensemble` trains M such estimators on one training/validation split, each from its own
initialisation and minibatch order, and averages their logits (:class:`aalr_jax.nn.RatioEnsemble`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from aalr_jax.data import split_bank
from aalr_jax.types import SimulationBank
from aalr_jax.losses import estimator_loss
from aalr_jax.nn import NetworkConfig, RatioEnsemble, RatioEstimator, init_estimator, standardization_from

__all__ = ["DEFAULT_RATIO_WEIGHTING", "EnsembleFitResult", "FitResult", "TrainHistory", "TrainState", "averaged",
           "build_epoch", "default_ema_decay", "evaluate", "fit", "fit_ensemble", "start_average"]

DEFAULT_RATIO_WEIGHTING = 0.5  # fit's α (since session 13; the evidence is in fit's docstring)


class TrainState(NamedTuple):
    """``estimator`` being trained, the optimizer's state and, with ``ema_decay``, the parameters'
    running average (zero-initialised, not yet debiased) and the number of steps taken."""

    estimator: RatioEstimator
    opt_state: optax.OptState
    average: object = None
    num_steps: jax.Array | None = None


class TrainHistory(NamedTuple):
    """Per-epoch losses (``(num_epochs,)`` arrays), the outcome of early stopping and the β of the
    parameters' moving average used (0: the iterates)."""

    train_loss: np.ndarray
    validation_loss: np.ndarray
    best_epoch: int
    stopped_early: bool
    seconds: float
    ema_decay: float = 0.0


class FitResult(NamedTuple):
    estimator: RatioEstimator
    history: TrainHistory


class EnsembleFitResult(NamedTuple):
    """The ensemble, each member's history, and the ensemble's loss on the shared validation bank."""

    estimator: RatioEnsemble
    histories: tuple
    validation_loss: float


def build_epoch(optimizer: optax.GradientTransformation, batch_size: int, balance: float = 0.0, num_negatives: int = 1,
                ratio_weighting: float = 0.0, ema_decay: float = 0.0):
    """A jitted ``epoch(state, theta, x, rng_key) -> (state, mean_train_loss)``.

    ``theta: (n, d)`` and ``x: (n, *x_shape)`` are traced arguments (never closed over). With
    ``ema_decay`` β > 0 every step also updates ``state.average ← β·average + (1 − β)·params``
    (start it with :func:`start_average`; read it with :func:`averaged`).
    """

    def loss_fn(params, estimator, theta, x):
        return estimator_loss(dataclasses.replace(estimator, params=params), theta, x, balance, num_negatives,
                              ratio_weighting)

    def step(state: TrainState, batch):
        theta, x = batch
        loss, grads = jax.value_and_grad(loss_fn)(state.estimator.params, state.estimator, theta, x)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.estimator.params)
        params = optax.apply_updates(state.estimator.params, updates)
        average, num_steps = state.average, state.num_steps
        if ema_decay:
            average = jax.tree.map(lambda a, p: ema_decay * a + (1.0 - ema_decay) * p, average, params)
            num_steps = num_steps + 1
        return TrainState(dataclasses.replace(state.estimator, params=params), opt_state, average, num_steps), loss

    @jax.jit
    def epoch(state: TrainState, theta, x, rng_key):
        n = theta.shape[0]
        num_batches = n // batch_size
        idx = jax.random.permutation(rng_key, n)[: num_batches * batch_size]
        idx = idx.reshape(num_batches, batch_size)
        state, losses = jax.lax.scan(step, state, (theta[idx], x[idx]))
        return state, losses.mean()

    return epoch


def start_average(state: TrainState) -> TrainState:
    """``state`` with a zero running average of its parameters and a step count of 0."""
    zeros = jax.tree.map(jnp.zeros_like, state.estimator.params)
    return state._replace(average=zeros, num_steps=jnp.zeros((), jnp.int32))


@jax.jit
def _debiased(average, num_steps, ema_decay):
    return jax.tree.map(lambda a: a / (1.0 - ema_decay ** num_steps), average)


def averaged(state: TrainState, ema_decay: float) -> RatioEstimator:
    """The estimator with the debiased running average ``average / (1 − β^steps)`` as parameters."""
    return dataclasses.replace(state.estimator, params=_debiased(state.average, state.num_steps, ema_decay))


@jax.jit
def _batch_losses(estimator, theta, x):
    return jax.lax.map(lambda b: estimator_loss(estimator, *b), (theta, x))


def evaluate(estimator: RatioEstimator, bank: SimulationBank, batch_size: int = 1024) -> float:
    """Mean AALR loss on a bank in fixed batches of ``batch_size`` (θ rolled within each batch).

    The last partial batch is evaluated too, on its own.
    """
    n = bank.num_simulations
    full = (n // batch_size) * batch_size
    totals, weights = [], []
    if full:
        shape = (n // batch_size, batch_size)
        losses = _batch_losses(
            estimator,
            bank.theta[:full].reshape(shape + bank.theta.shape[1:]),
            bank.x[:full].reshape(shape + bank.x.shape[1:]),
        )
        totals.append(float(losses.sum()) * batch_size)
        weights.append(full)
    if full < n:
        rest = n - full
        if rest >= 2:
            loss = _batch_losses(estimator, bank.theta[None, full:], bank.x[None, full:])
            totals.append(float(loss[0]) * rest)
            weights.append(rest)
    return sum(totals) / sum(weights)


def _checked_bank(bank) -> SimulationBank:
    """``bank`` as float32 arrays, or a ``ValueError`` saying what is wrong with it."""
    if not isinstance(bank, SimulationBank):
        bank = SimulationBank(*bank)
    theta, x = jnp.asarray(bank.theta, jnp.float32), jnp.asarray(bank.x, jnp.float32)
    if theta.ndim != 2 or x.ndim < 2 or theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"bank must hold theta (n, d) and x (n, ...) with the same n, got {theta.shape} and {x.shape}"
        )
    if not (bool(jnp.isfinite(theta).all()) and bool(jnp.isfinite(x).all())):
        raise ValueError("bank contains non-finite values; simulate(..., on_invalid='drop') removes them")
    return SimulationBank(theta, x)


def default_batch_size(num_train: int) -> int:
    """:func:`fit`'s default batch for ``num_train`` training simulations: ``clip(num_train // 16, 64, 512)``."""
    return int(np.clip(num_train // 16, 64, 512))


def default_learning_rate(batch_size: int) -> float:
    """:func:`fit`'s default peak learning rate: 2e-3 for batches of 512 or more, else 1e-3."""
    return 2e-3 if batch_size >= 512 else 1e-3


def default_ema_decay(num_steps: int) -> float:
    """:func:`fit`'s default β for a schedule of ``num_steps`` optimizer steps: ``1 − 1/w`` with the
    averaging window ``w = min(1000, num_steps // 10)`` steps (0, the iterates, below 20 steps), so the
    average never reaches back into the first 90 % of a short schedule."""
    window = min(1000, int(num_steps) // 10)
    return 1.0 - 1.0 / window if window > 1 else 0.0


def fit(
    rng_key: jax.Array,
    bank: SimulationBank,
    *,
    hidden_features: tuple = (128, 128, 128),
    activation: str = "selu",
    embedding: str = "flatten",
    embedding_features: int = 64,
    theta_bound: float | None = 10.0,
    quadratic: bool = False,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    max_epochs: int = 300,
    patience: int = 50,
    validation_fraction: float = 0.1,
    validation_bank: SimulationBank | None = None,
    balance: float = 0.0,
    num_negatives: int = 1,
    ratio_weighting: float = DEFAULT_RATIO_WEIGHTING,
    ema_decay: float | None = None,
    progress: bool = True,
) -> FitResult:
    """Train a ratio estimator ``f(θ, x) ≈ log r(x|θ)`` on a simulation bank.

    Args:
        rng_key: PRNG key (initialisation, split, shuffling).
        bank: ``SimulationBank(theta (n, d), x (n, *x_shape))``.
        hidden_features, activation, embedding, embedding_features, theta_bound, quadratic: the
            network (see :class:`aalr_jax.nn.NetworkConfig`; e.g. ``embedding="cnn"`` for images).
            ``quadratic=True`` adds the quadratic terms in θ (off by default). On fresh simulations
            (``benchmarks/tune_defaults.py``, one network) they lowered the loss on gaussian_linear,
            bernoulli_glm (also with raw x) and slcp at 10^3, and removed most of the shrinkage of
            gaussian_linear's posterior means at 10^5, but raised it on slcp at 10^4 and on
            slcp_distractors (92 noise dimensions in x): turn them on for likelihoods that are
            near-Gaussian in θ and keep them where the validation loss falls.
        optimizer: any ``optax.GradientTransformation``; default AdamW without weight decay
            (weight decay over-broadens posteriors, Hermans et al. 2020) whose learning rate
            decays along a cosine from ``learning_rate`` to 1 % of it over ``max_epochs``.
        learning_rate: peak rate of the default optimizer; default 2e-3 for batches of 512, else 1e-3.
        batch_size: pairs per minibatch (each yields ``batch_size`` dependent and independent pairs);
            default ``clip(n_train // 16, 64, 512)``, so small banks still get 16 steps per epoch.
            These defaults were chosen by ``benchmarks/tune_defaults.py`` on fresh two_moons
            observations (C2ST against the exact posterior), never on benchmark observations.
        max_epochs: upper bound on epochs.
        patience: stop after this many epochs without a lower validation loss.
        validation_fraction: share of ``bank`` held out when ``validation_bank`` is not given.
        validation_bank: an explicit held-out bank (then all of ``bank`` trains).
        balance: λ of the balanced-NRE penalty (0: plain AALR; 100 is the BNRE paper's value).
        num_negatives: independent partners per simulation in each training batch (θ of K other
            simulations of the batch, :func:`aalr_jax.losses.estimator_loss`); the validation
            loss always uses one, so runs with different K are compared on the same loss.
        ratio_weighting: α in [0, 1]: each training pair's cross-entropy is weighted by
            ``(1 + r̂)^α`` (:mod:`aalr_jax.losses`), which shifts the network's capacity to where the
            posteriors have their mass without moving the optimum; 0 is the plain AALR loss. The
            validation loss (early stopping, ``history``) stays the plain cross-entropy, so every α
            is judged on one loss. Default ½: on fresh observations (``benchmarks/tune_defaults.py``,
            C2ST against exact references, 5 observations × 2 seeds) it scored lower than α = 0 in
            10 of 13 task-budget cells (two_moons, gaussian_linear, gaussian_mixture, bernoulli_glm,
            slcp at 10^3 and 10^4; by up to 0.043, on gaussian_mixture at 10^4), level on two_moons
            at 10^5 and higher on sir (0.757 → 0.780 at 10^3, 0.777 → 0.793 at 10^4); pass 0 for
            the paper's plain loss.
        ema_decay: β in [0, 1): when positive, the parameters validated, kept and returned are
            the exponential moving average of the iterates over the optimizer's steps,
            ``a ← β·a + (1 − β)·params`` (debiased), which averages out the minibatch noise of
            the last ~1/(1 − β) steps (Polyak averaging); 0 keeps the iterates themselves.
            Default (None): :func:`default_ema_decay` of the schedule's ``max_epochs`` × steps per
            epoch, 0.999 for all but short schedules. It lowered the loss on fresh pairs in 15 of 16
            task-budget cells (two_moons, gaussian_linear, gaussian_mixture, bernoulli_glm, slcp,
            lotka_volterra at 10^3-10^5 simulations, by up to 22 %; sir level) and two_moons' C2ST
            on fresh observations at 10^4 from 0.565 to 0.557 and at 10^5 from 0.556 to 0.522
            (``benchmarks/tune_defaults.py``); the β used is in ``history.ema_decay``.
        progress: show a progress bar with train and validation loss.

    Returns:
        ``FitResult(estimator, history)``; the estimator holds the best-validation parameters.

    A bank in a Zarr store (:class:`aalr_jax.store.ZarrBank`) trains from streamed minibatches:
    :func:`aalr_jax.streaming.fit_store`.
    """
    if getattr(bank, "is_store", False):  # a bank on disk streams its minibatches
        from aalr_jax.streaming import fit_store
        return fit_store(**{k: v for k, v in locals().items() if k != "fit_store"})
    theta, x = _checked_bank(bank)
    for name, value in (("max_epochs", max_epochs), ("patience", patience), ("num_negatives", num_negatives)) + (
        (("batch_size", batch_size),) if batch_size is not None else ()
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if balance < 0:
        raise ValueError(f"balance must be >= 0, got {balance}")
    if not 0.0 <= ratio_weighting <= 1.0:
        raise ValueError(f"ratio_weighting must be in [0, 1], got {ratio_weighting}")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")

    key_split, key_init, key_epochs = jax.random.split(rng_key, 3)
    bank = SimulationBank(theta, x)
    if validation_bank is None:
        train, val = split_bank(key_split, bank, validation_fraction)
    else:
        train, val = bank, SimulationBank(*validation_bank)
        if val.theta.shape[1:] != theta.shape[1:] or val.x.shape[1:] != x.shape[1:]:
            raise ValueError("validation_bank must have the same theta and x shapes as bank")
    if batch_size is None:
        batch_size = default_batch_size(train.num_simulations)
    if learning_rate is None:
        learning_rate = default_learning_rate(batch_size)
    if train.num_simulations < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {train.num_simulations} training simulations; "
            "simulate more or lower batch_size"
        )
    if num_negatives >= batch_size:
        raise ValueError(f"num_negatives must be smaller than batch_size ({batch_size}), got {num_negatives}")
    if val.num_simulations < 2:
        raise ValueError("the validation bank needs at least 2 simulations")

    config = NetworkConfig(
        theta_dim=int(theta.shape[1]),
        x_shape=tuple(int(s) for s in x.shape[1:]),
        hidden_features=tuple(int(h) for h in hidden_features),
        activation=activation,
        embedding=embedding,
        embedding_features=int(embedding_features),
        theta_bound=theta_bound,
        quadratic=quadratic,
    )
    estimator = init_estimator(key_init, config, standardization_from(train.theta, train.x))
    steps = max_epochs * (train.num_simulations // batch_size)
    if ema_decay is None:
        ema_decay = default_ema_decay(steps)
    if optimizer is None:
        schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01)
        optimizer = optax.adamw(schedule, weight_decay=0.0)
    state = TrainState(estimator, optimizer.init(estimator.params))
    if ema_decay:
        state = start_average(state)
    epoch = build_epoch(optimizer, batch_size, balance, int(num_negatives), float(ratio_weighting), float(ema_decay))

    start = time.perf_counter()
    best_loss, best_epoch, best = np.inf, 0, estimator
    train_losses, val_losses = [], []
    bar = tqdm(range(max_epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for i in bar:
        state, train_loss = epoch(state, train.theta, train.x, jax.random.fold_in(key_epochs, i))
        current = averaged(state, ema_decay) if ema_decay else state.estimator
        val_loss = evaluate(current, val)
        train_losses.append(float(train_loss))
        val_losses.append(val_loss)
        if not np.isfinite(val_loss):
            raise FloatingPointError(f"validation loss became {val_loss} at epoch {i}; lower the learning rate")
        if val_loss < best_loss:
            best_loss, best_epoch, best = val_loss, i, current
        bar.set_postfix(train=f"{train_losses[-1]:.4f}", val=f"{val_loss:.4f}", best=best_epoch)
        if i - best_epoch >= patience:
            break
    bar.close()
    history = TrainHistory(
        train_loss=np.asarray(train_losses),
        validation_loss=np.asarray(val_losses),
        best_epoch=best_epoch,
        stopped_early=len(train_losses) < max_epochs,
        seconds=time.perf_counter() - start,
        ema_decay=float(ema_decay),
    )
    return FitResult(best, history)


def fit_ensemble(
    rng_key: jax.Array,
    bank: SimulationBank,
    num_members: int = 4,
    *,
    validation_fraction: float = 0.1,
    validation_bank: SimulationBank | None = None,
    progress: bool = True,
    **fit_kwargs,
) -> EnsembleFitResult:
    """Train ``num_members`` estimators with :func:`fit` and average their logits.

    All members train on the same split of ``bank`` (held out once, with ``validation_fraction``,
    unless ``validation_bank`` is given) and differ in initialisation and minibatch order: member
    ``m`` gets the key ``fold_in(rng_key, m)``. Averaging lowers the variance of the learned
    log-ratio; on fresh gaussian_linear data (10^5 simulations, ``benchmarks/tune_defaults.py``)
    four members cut the excess test loss over the Bayes loss from 0.022 to 0.010 and the C2ST of
    four fresh posteriors from 0.534 to 0.523, for four times the training.

    Args:
        rng_key: PRNG key.
        bank: ``SimulationBank(theta (n, d), x (n, *x_shape))``.
        num_members: M, a positive integer.
        validation_fraction, validation_bank: the held-out data, as in :func:`fit`.
        progress: show progress bars (members, and each member's epochs).
        **fit_kwargs: any other argument of :func:`fit` (network, optimizer, epochs...).

    Returns:
        ``EnsembleFitResult(estimator, histories, validation_loss)``: a
        :class:`aalr_jax.nn.RatioEnsemble`, M :class:`TrainHistory`, and the ensemble's mean AALR
        loss on the validation bank.
    """
    if getattr(bank, "is_store", False):  # a bank on disk streams its minibatches
        from aalr_jax.streaming import fit_ensemble_store
        return fit_ensemble_store(**{k: v for k, v in locals().items() if k not in ("fit_kwargs", "fit_ensemble_store")},
                                  **fit_kwargs)
    if isinstance(num_members, bool) or int(num_members) != num_members or num_members < 1:
        raise ValueError(f"num_members must be a positive integer, got {num_members!r}")
    bank = _checked_bank(bank)
    key_split, key_members = jax.random.split(rng_key)
    if validation_bank is None:
        bank, validation_bank = split_bank(key_split, bank, validation_fraction)
    validation_bank = _checked_bank(validation_bank)
    members, histories = [], []
    for m in tqdm(range(int(num_members)), desc="ensemble", unit="member", disable=not progress):
        result = fit(jax.random.fold_in(key_members, m), bank, validation_bank=validation_bank,
                     progress=progress, **fit_kwargs)
        members.append(result.estimator)
        histories.append(result.history)
    ensemble = RatioEnsemble.stack(members)
    return EnsembleFitResult(ensemble, tuple(histories), evaluate(ensemble, validation_bank))
