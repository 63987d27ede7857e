r"""Training a ratio estimator with optax: one jitted ``lax.scan`` per epoch, early stopping.

The pieces, each a pure function or a builder of pure functions:

* :func:`param_average`: an optax-like ``init``/``update`` pair for the exponential moving average
  of the parameters (Polyak averaging), ``a_t = β a_{t-1} + (1 - β) p_t`` from ``a_0 = 0``, read
  out debiased as ``a_t / (1 - β^t)``: a weighted mean of the last ~1/(1 - β) iterates, which
  averages out the minibatch noise that early stopping would otherwise keep (it often stops while
  the learning rate is still high). β = 0 reads out the iterates themselves.
* :func:`build_trainer`: ``init(estimator) -> TrainState`` and the compiled
  ``epoch(rng_key, state, bank) -> (state, TrainInfo)``. An epoch shuffles the bank, cuts it into
  ``n // batch_size`` minibatches (the ``n mod batch_size`` left over change every epoch) and scans
  the optimizer over them; the bank's arrays are traced arguments, so one compilation serves
  every epoch. Each step minimises :func:`aalr_jax.losses.objective` and also reports the plain
  loss (unweighted, one negative) of the same batch, so train and validation losses are comparable.
* :func:`evaluate`: the plain loss on a bank in fixed batches.
* :func:`fit`: checks every argument, splits off a validation bank, trains until the validation
  loss has not improved for ``patience`` epochs and returns the best estimator with its history.
  What the user leaves to it, it chooses on the held-out split and records in
  ``history.choices``: the network with or without quadratic terms in θ
  (:func:`quadratic_candidates`), and how many networks to average (:func:`member_candidates`:
  on a CPU, as many as the first network's epochs leave room for).
  Of M networks, the ensemble of the first m, f̄_m = (1/m) Σ_{i≤m} f_i, is kept for the m with
  the lowest held-out loss; the loss is convex in the logit, so L(f̄_m) ≤ (1/m) Σ_{i≤m} L(f_i):
  averaging cuts the variance of the learned log-ratio and never does worse than the average member.
  On one accelerator the networks after the first share an architecture and train together: the
  epoch is ``vmap``-ed over their stacked states, every network with its own initialisation,
  minibatch order and early stop (it is frozen at its stop while the others go on).

:func:`fit_ensemble` trains M such estimators on one training/validation split, each from its own
initialisation and minibatch order, and averages their logits (:class:`aalr_jax.nn.RatioEnsemble`).

Devices (``mesh``, :mod:`aalr_jax.sharding`). Training is data-parallel over a one-axis mesh of D
devices: every minibatch ``(batch_size, ...)`` is split into D blocks of ``batch_size / D`` rows,
while the bank, the parameters, the optimizer's state and the average are whole on every device;
the batch means of the loss, and so the gradients, are summed across devices by XLA (an
all-reduce). The minibatches and their order come from the key alone, so D devices take the
steps one device takes, up to the order of floating-point sums. With ``jax.distributed`` the mesh
spans processes: each passes its own rows of the bank, :func:`fit` gathers them in process order,
and every process trains in lockstep on the whole bank (docs/devices.md).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from aalr_jax.data import split_bank
from aalr_jax.losses import DEFAULT_RATIO_WEIGHTING, LossConfig, aalr_loss, objective, pair_logits, plain_loss
from aalr_jax.nn import (NetworkConfig, RatioEnsemble, RatioEstimator, Standardization, init_estimator,
                         standardization_from)
from aalr_jax.sharding import AXIS, check_divisible, replicated_sharding, resolve_mesh
from aalr_jax.types import SimulationBank
from aalr_jax.validation import check_key, check_number, check_real_array, positive_int

__all__ = ["DEFAULT_RATIO_WEIGHTING", "AverageState", "EnsembleFitResult", "FitResult", "LossConfig", "ParamAverage",
           "TrainHistory", "TrainInfo", "TrainState", "Trainer", "build_trainer", "default_batch_size",
           "default_ema_decay", "default_learning_rate", "evaluate", "fit", "fit_ensemble", "param_average",
           "quadratic_candidates", "member_candidates", "MemberPlan", "AUTO_MAX_TRAIN_CPU",
           "AUTO_MEMBERS_MAX", "AUTO_MEMBERS_WORK_CPU"]


# ---------------------------------------------------------------- parameter averaging


class AverageState(NamedTuple):
    """``count: ()`` steps averaged so far; ``mean``: the running average ``a_t`` (not debiased),
    with the parameters' structure."""

    count: jax.Array
    mean: Any


class ParamAverage(NamedTuple):
    """``init(params) -> AverageState``, ``update(state, params) -> AverageState`` and
    ``read(state) -> params`` (the debiased average)."""

    init: Callable
    update: Callable
    read: Callable


def param_average(decay: float) -> ParamAverage:
    """Exponential moving average of parameters with decay β = ``decay`` in [0, 1) (static).

    ``update``: ``a ← β a + (1 - β) params``, ``count ← count + 1``; ``read``: ``a / (1 - β^count)``,
    the weights ``(1 - β) β^(t-s) / (1 - β^t)`` on the iterates ``p_1..p_t`` summing to one.
    """

    def init(params) -> AverageState:
        return AverageState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(state: AverageState, params) -> AverageState:
        mean = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, state.mean, params)
        return AverageState(state.count + 1, mean)

    def read(state: AverageState):
        return jax.tree.map(lambda a: a / (1.0 - decay**state.count), state.mean)

    return ParamAverage(init, update, read)


# ---------------------------------------------------------------- one epoch


class TrainState(NamedTuple):
    """The estimator being trained (its iterates), the optimizer's state and the parameters' average."""

    estimator: RatioEstimator
    opt_state: optax.OptState
    average: AverageState


class TrainInfo(NamedTuple):
    """Means over an epoch's minibatches: ``loss``, the plain loss (unweighted, one negative), and
    ``objective``, the minimised :func:`aalr_jax.losses.objective`; both ``()``."""

    loss: jax.Array
    objective: jax.Array


class Trainer(NamedTuple):
    """``init(estimator) -> TrainState``; ``epoch(rng_key, state, bank) -> (TrainState, TrainInfo)``
    (compiled once); ``estimator(state) -> RatioEstimator`` with the averaged parameters."""

    init: Callable
    epoch: Callable
    estimator: Callable


def build_trainer(optimizer: optax.GradientTransformation, batch_size: int, *, loss: LossConfig = LossConfig(),
                  ema_decay: float = 0.0, mesh=None) -> Trainer:
    """The training functions for one optimizer, batch size, objective and averaging β (all static).

    ``epoch`` takes ``bank = SimulationBank(theta (n, d), x (n, *x_shape))`` with ``n ≥ batch_size``
    as a traced argument and runs ``n // batch_size`` optimizer steps in one ``lax.scan``.

    With a ``mesh`` (:func:`aalr_jax.sharding.resolve_mesh`: None is every device when there are
    several, False one device) every minibatch is split over the devices along its batch axis
    (``batch_size`` a multiple of their number), while the bank, the parameters, the optimizer's
    state and the average are replicated: each device computes the loss terms of its rows and the
    compiler reduces the batch means, and so the gradients, across devices. The minibatch order
    depends only on ``rng_key``, so every device count takes the same steps.
    """
    mesh = resolve_mesh(mesh)
    check_divisible("batch_size", batch_size, mesh)
    averaging = param_average(ema_decay)

    def loss_fn(params, estimator, theta, x):
        logits_joint, logits_marginal = pair_logits(dataclasses.replace(estimator, params=params), theta, x,
                                                    loss.num_negatives)
        plain = aalr_loss(logits_joint, logits_marginal[: theta.shape[0]])  # the roll by one, unweighted
        return objective(logits_joint, logits_marginal, loss), plain

    def step(state: TrainState, batch):
        theta, x = batch
        params = state.estimator.params
        (value, plain), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state.estimator, theta, x)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        state = TrainState(dataclasses.replace(state.estimator, params=params), opt_state,
                           averaging.update(state.average, params))
        return state, TrainInfo(plain, value)

    def epoch(rng_key, state: TrainState, bank: SimulationBank):
        state, infos = jax.lax.scan(step, state, _minibatches(rng_key, bank, batch_size, mesh))
        return state, jax.tree.map(jnp.mean, infos)

    def init(estimator: RatioEstimator) -> TrainState:
        return TrainState(estimator, optimizer.init(estimator.params), averaging.init(estimator.params))

    def averaged(state: TrainState) -> RatioEstimator:
        return dataclasses.replace(state.estimator, params=averaging.read(state.average))

    if mesh is None:
        return Trainer(init, jax.jit(epoch), jax.jit(averaged))
    whole = replicated_sharding(mesh)  # inputs and outputs replicated; the batches inside are split
    return Trainer(*(jax.jit(f, in_shardings=whole, out_shardings=whole) for f in (init, epoch, averaged)))


def _minibatches(rng_key, bank: SimulationBank, batch_size: int, mesh: Mesh | None):
    """An epoch's minibatches ``(theta (b, batch_size, d), x (b, batch_size, *x_shape))``, ``b = n //
    batch_size``, in the order of a permutation of the bank's rows; with a mesh, the batch axis (1)
    is split over its devices."""
    n = bank.theta.shape[0]
    num_batches = n // batch_size
    idx = jax.random.permutation(rng_key, n)[: num_batches * batch_size].reshape(num_batches, batch_size)
    batches = (bank.theta[idx], bank.x[idx])
    if mesh is None:
        return batches
    return jax.lax.with_sharding_constraint(batches, NamedSharding(mesh, PartitionSpec(None, AXIS)))


def _batch_losses(estimator, theta, x):
    return jax.lax.map(lambda batch: plain_loss(estimator, *batch), (theta, x))


@functools.lru_cache(maxsize=64)
def _batch_losses_on(mesh: Mesh | None, split: bool):
    """:func:`_batch_losses` compiled for ``mesh``: batches split over its devices (``split``) or whole."""
    if mesh is None:
        return jax.jit(_batch_losses)
    whole = replicated_sharding(mesh)
    rows = NamedSharding(mesh, PartitionSpec(None, AXIS)) if split else whole
    return jax.jit(_batch_losses, in_shardings=(whole, rows, rows), out_shardings=whole)


def evaluate(estimator, bank: SimulationBank, batch_size: int = 1024, *, mesh=None) -> float:
    """Mean plain AALR loss (:func:`aalr_jax.losses.plain_loss`) on a bank, in fixed batches of
    ``batch_size`` with θ rolled by one within each; a last partial batch of two or more counts too,
    every simulation weighted equally.

    With a ``mesh`` (:func:`aalr_jax.sharding.resolve_mesh`) the full batches are split over its
    devices when ``batch_size`` is a multiple of their number and the rest runs whole on each; the
    value does not depend on the mesh beyond floating-point order.
    """
    mesh = resolve_mesh(mesh)
    split = mesh is not None and batch_size % mesh.size == 0
    return float(_batched_mean(lambda theta, x, whole: _batch_losses_on(mesh, split and whole)(estimator, theta, x),
                               bank, batch_size))


@jax.jit
def _member_batch_losses(members: RatioEstimator, theta, x):
    return jax.vmap(_batch_losses, in_axes=(0, None, None))(members, theta, x)


def _member_losses(members: RatioEstimator, bank: SimulationBank, batch_size: int = 1024) -> np.ndarray:
    """:func:`evaluate` of each of M stacked networks (``members``: params with a leading ``(M,)``
    axis) on one device, in one program: ``(M,)``."""
    return _batched_mean(lambda theta, x, whole: _member_batch_losses(members, theta, x), bank, batch_size)


def _batched_mean(batch_losses: Callable, bank: SimulationBank, batch_size: int):
    """The mean over a bank's simulations of per-batch mean losses: ``batch_losses(theta (b,
    batch_size, d), x (b, batch_size, ...), whole) -> (..., b)`` on the full batches (``whole``
    True), then on the last partial batch of two or more; ``(...)``."""
    n = bank.theta.shape[0]
    full = (n // batch_size) * batch_size
    total, count = 0.0, 0
    if full:
        shape = (n // batch_size, batch_size)
        losses = np.asarray(batch_losses(bank.theta[:full].reshape(shape + bank.theta.shape[1:]),
                                         bank.x[:full].reshape(shape + bank.x.shape[1:]), True), np.float64)
        total, count = losses.sum(-1) * batch_size, full
    if n - full >= 2:
        loss = np.asarray(batch_losses(bank.theta[None, full:], bank.x[None, full:], False), np.float64)[..., 0]
        total, count = total + loss * (n - full), n
    return total / count


# ---------------------------------------------------------------- defaults


def default_batch_size(num_train: int) -> int:
    """:func:`fit`'s default batch for ``num_train`` training simulations, ``clip(num_train // 16, 64, 512)``:
    small banks still get 16 steps per epoch (see benchmarks/README.md "Choosing the defaults")."""
    return int(np.clip(num_train // 16, 64, 512))


def default_learning_rate(batch_size: int) -> float:
    """:func:`fit`'s default peak learning rate: 2e-3 for batches of 512 or more, else 1e-3 (see
    benchmarks/README.md "Choosing the defaults")."""
    return 2e-3 if batch_size >= 512 else 1e-3


def default_ema_decay(num_steps: int) -> float:
    """:func:`fit`'s default β for a schedule of ``num_steps`` optimizer steps: ``1 − 1/w`` with the
    averaging window ``w = min(1000, num_steps // 10)`` steps (0, the iterates, below 20 steps), so the
    average never reaches back into the first 90 % of a short schedule (see benchmarks/README.md
    "Choosing the defaults")."""
    window = min(1000, int(num_steps) // 10)
    return 1.0 - 1.0 / window if window > 1 else 0.0


# ---------------------------------------------------------------- checks at the entry points


def _checked_array(name: str, value) -> jax.Array:
    """``value`` as a float32 JAX array of real numbers, at least 2-D and not empty."""
    if isinstance(value, jax.Array):  # checked where it lives: no copy to the host
        if jnp.iscomplexobj(value) or not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == bool):
            raise TypeError(f"{name} must be an array of real numbers, got dtype {value.dtype}")
        if value.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimension(s), got shape {value.shape}")
        if value.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {value.shape}")
    else:
        value = check_real_array(name, value, min_ndim=2)
    return jnp.asarray(value, jnp.float32)


def _checked_bank(bank, name: str = "bank") -> SimulationBank:
    """``bank`` as float32 arrays, or an error naming ``name`` and what is wrong with it."""
    if not isinstance(bank, (tuple, list)) or len(bank) != 2:
        hint = f"; for a dict, pass SimulationBank(**{name})" if isinstance(bank, dict) else ""
        raise TypeError(f"{name} must be a SimulationBank(theta, x), got {type(bank).__name__}{hint}")
    theta, x = _checked_array(f"{name}.theta", bank[0]), _checked_array(f"{name}.x", bank[1])
    if theta.ndim != 2 or theta.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must hold theta (n, d) and x (n, ...) with the same n, "
                         f"got theta {theta.shape} and x {x.shape}")
    if not (bool(jnp.isfinite(theta).all()) and bool(jnp.isfinite(x).all())):
        raise ValueError(f"{name} contains non-finite values (NaN, inf, or beyond float32's range); "
                         "simulate(..., on_invalid='drop') removes invalid simulations")
    return SimulationBank(theta, x)


_NETWORK_OPTIONS = ("hidden_features", "activation", "embedding", "embedding_features", "theta_bound", "quadratic")


def _configs(network: NetworkConfig, loss: LossConfig, options: dict, bank: SimulationBank):
    """``network`` and ``loss`` with the flat ``options`` applied and the bank's dimensions, checked."""
    unknown = sorted(set(options) - set(_NETWORK_OPTIONS) - set(LossConfig._fields))
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
    if not isinstance(network, NetworkConfig) or not isinstance(loss, LossConfig):
        raise TypeError(f"network must be a NetworkConfig and loss a LossConfig, "
                        f"got {type(network).__name__} and {type(loss).__name__}")
    network = network._replace(**{k: v for k, v in options.items() if k in _NETWORK_OPTIONS})
    if isinstance(network.hidden_features, list):
        network = network._replace(hidden_features=tuple(network.hidden_features))
    theta_dim, x_shape = bank.theta.shape[1], tuple(bank.x.shape[1:])
    for field, value in (("theta_dim", theta_dim), ("x_shape", x_shape)):
        given = getattr(network, field)
        if given is not None and (tuple(given) if field == "x_shape" else given) != value:
            raise ValueError(f"network.{field} is {given!r} but the bank has {value!r}; leave it None")
    network = network._replace(theta_dim=int(theta_dim), x_shape=tuple(int(s) for s in x_shape)).validate()
    return network, loss._replace(**{k: v for k, v in options.items() if k in LossConfig._fields}).validate()


class _Schedule(NamedTuple):
    optimizer: optax.GradientTransformation | None
    learning_rate: float | None
    batch_size: int | None
    max_epochs: int
    patience: int
    ema_decay: float | None
    time_budget: float | None = None


def _checked_schedule(optimizer, learning_rate, batch_size, max_epochs, patience, ema_decay,
                      mesh: Mesh | None, time_budget=None) -> _Schedule:
    """The training schedule's arguments, checked (a given ``batch_size`` against the mesh too)."""
    if optimizer is not None and learning_rate is not None:
        raise ValueError("give either optimizer or learning_rate, not both: learning_rate sets the peak rate "
                         "of fit's default optimizer and a given optimizer carries its own")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if batch_size is not None:
        check_divisible("batch_size", positive_int("batch_size", batch_size), mesh)
    return _Schedule(
        optimizer=optimizer,
        learning_rate=None if learning_rate is None else check_number("learning_rate", learning_rate, low=0.0,
                                                                      low_open=True),
        batch_size=None if batch_size is None else positive_int("batch_size", batch_size),
        max_epochs=positive_int("max_epochs", max_epochs),
        patience=positive_int("patience", patience),
        ema_decay=None if ema_decay is None else check_number("ema_decay", ema_decay, low=0.0, high=1.0,
                                                              high_open=True),
        time_budget=None if time_budget is None else check_number("time_budget", time_budget, low=0.0,
                                                                  low_open=True),
    )


def _resolved(schedule: _Schedule, loss: LossConfig, num_train: int, num_val: int, mesh: Mesh | None) -> _Schedule:
    """``schedule`` with its defaults filled in for ``num_train`` training simulations, checked against
    them; the default batch size is rounded down to a multiple of the mesh's devices."""
    batch_size = schedule.batch_size
    if batch_size is None:
        devices = 1 if mesh is None else mesh.size
        batch_size = max(devices, default_batch_size(num_train) // devices * devices)
    if num_train < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_train} training simulations; "
                         "simulate more or lower batch_size")
    if loss.num_negatives >= batch_size:
        raise ValueError(f"num_negatives must be smaller than batch_size ({batch_size}), got {loss.num_negatives}")
    if num_val < 2:
        raise ValueError(f"the validation bank needs at least 2 simulations, got {num_val}")
    steps = schedule.max_epochs * (num_train // batch_size)
    ema_decay = default_ema_decay(steps) if schedule.ema_decay is None else schedule.ema_decay
    if schedule.optimizer is not None:
        return schedule._replace(batch_size=batch_size, ema_decay=ema_decay)
    learning_rate = default_learning_rate(batch_size) if schedule.learning_rate is None else schedule.learning_rate
    optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01), weight_decay=0.0)
    return schedule._replace(optimizer=optimizer, learning_rate=learning_rate, batch_size=batch_size,
                             ema_decay=ema_decay)


# ---------------------------------------------------------------- automatic choices

AUTO_MAX_TRAIN_CPU = 50_000
"""Above this many training simulations on a CPU, :func:`fit` does not try the quadratic terms."""


def quadratic_candidates(quadratic: bool | None, num_train: int) -> tuple[tuple, str | None]:
    """The settings of ``quadratic`` that :func:`fit` trains, and why.

    A given True or False is trained alone. For None (the default) ``fit`` trains the network
    without and with the quadratic terms and keeps the one with the lower held-out loss, which
    doubles training; on a CPU it does so only up to :data:`AUTO_MAX_TRAIN_CPU` training
    simulations and above that trains without them, so that a bank of 10^5 trains in the time of
    one network (on an accelerator both candidates are cheap at any size).

    Returns:
        ``(candidates, reason)``: a tuple of booleans, and for None a sentence for the history.
    """
    if quadratic is not None:
        return (quadratic,), None
    if jax.default_backend() == "cpu" and num_train > AUTO_MAX_TRAIN_CPU:
        return (False,), (f"{num_train} training simulations on a CPU, above {AUTO_MAX_TRAIN_CPU}: "
                          "trained without the quadratic terms only")
    return (False, True), "trained without and with the quadratic terms; kept the lower held-out loss"


AUTO_MEMBERS_MAX = 4
"""The most networks :func:`fit` averages when it chooses their number."""

AUTO_MEMBERS_WORK_CPU = 100_000
"""On a CPU, :func:`fit`'s networks together train about as much as one network does in all its
``max_epochs`` on this many training simulations (:func:`member_candidates`)."""


class MemberPlan(NamedTuple):
    """How many networks :func:`fit` trains (:func:`member_candidates`).

    Attributes:
        most: the number of networks to train, or at most to train when ``work`` is set.
        reason: why, a sentence for the history (None when the number was given).
        work: None, or the most epochs × training simulations that the networks trained so far
            plus one more like the first may take before another is trained.
    """

    most: int
    reason: str | None
    work: int | None = None

    def another(self, epochs: list[int], num_train: int) -> bool:
        """Whether to train one more network after networks that trained ``epochs`` (the first
        network's first): (Σ epochs + epochs[0]) × ``num_train`` ≤ ``work``, and fewer than ``most``."""
        within = self.work is None or (sum(epochs) + epochs[0]) * num_train <= self.work
        return len(epochs) < self.most and within

    def expected(self, num_train: int, max_epochs: int) -> int:
        """The networks trained if each trains all ``max_epochs``: the count that ``time_budget``'s
        shares are made for (a network beyond it has what is left)."""
        return self.most if self.work is None else min(self.most, max(1, self.work // (max_epochs * num_train)))


def member_candidates(num_members: int | None, num_train: int, embedding: str = "flatten",
                      max_epochs: int = 300) -> MemberPlan:
    """How many networks :func:`fit` trains, and why.

    A given number is trained as asked. For None (the default) ``fit`` trains up to
    :data:`AUTO_MEMBERS_MAX` networks and keeps the ensemble of the first m with the lowest
    held-out loss. On an accelerator, where each network after the first costs a fraction of it,
    it trains all of them. On a CPU, with the default ``embedding="flatten"``, it trains them one
    after the other while their epochs × training simulations, plus one more network like the
    first, stay within :data:`AUTO_MEMBERS_WORK_CPU` × ``max_epochs``: about the work of one
    network's full schedule on 100,000 simulations. The count follows what training took, not the
    bank's size alone: 4 networks on 10^4 simulations, one network on 10^5 that trains all its
    epochs, 4 on 10^5 (90,000 training) when each stops within 83 of 300 epochs. With a learned
    embedding (a CNN, ResNet or 1-D convolution, many times the MLP's cost per simulation) a CPU
    trains one.

    Returns:
        a :class:`MemberPlan`.
    """
    if num_members is not None:
        return MemberPlan(num_members, None)
    if jax.default_backend() != "cpu":
        return MemberPlan(AUTO_MEMBERS_MAX, "on an accelerator")
    if embedding != "flatten":
        return MemberPlan(1, f"a learned embedding ({embedding}) on a CPU")
    return MemberPlan(AUTO_MEMBERS_MAX, f"on a CPU, networks trained while their epochs × {num_train} training "
                      f"simulations, with one more like the first, stayed within {AUTO_MEMBERS_WORK_CPU:,} × "
                      f"{max_epochs} epochs", AUTO_MEMBERS_WORK_CPU * max_epochs)


def _together(backend: str) -> bool:
    """Whether :func:`fit` trains its networks after the first at once (:func:`_train_together`)
    rather than one after the other, when the training bank is in memory on one device: on an
    accelerator, where one small network's steps leave most of the device idle; not on a CPU, where
    the batched epoch gains too little to pay for compiling it (benchmarks/member_training.py)."""
    return backend != "cpu"


def _members_chosen(results: list, validation: SimulationBank, reason: str) -> "FitResult":
    """The ensemble of the first m of ``results``' networks with the lowest loss on ``validation``
    (the first network alone when m = 1). Its history is the first network's with
    ``choices["members"]``: the chosen m, the reason, each prefix's held-out loss and each
    network's epochs, seconds and best epoch; ``history.seconds`` is the time of every network
    trained."""
    first = results[0]
    prefix = lambda m: first.estimator if m == 1 else RatioEnsemble.stack([r.estimator for r in results[:m]])
    if len(results) == 1:
        losses = [float(np.min(first.history.validation_loss))]
    else:
        losses = [evaluate(prefix(m), validation, mesh=False) for m in range(1, len(results) + 1)]
    best = int(np.argmin(losses)) + 1
    trained = f"trained {len(results)} networks and kept the first m with the lowest held-out loss"
    record = {"chosen": best, "reason": f"{reason}: {trained if len(results) > 1 else 'one network'}",
              "validation_loss": {str(m + 1): loss for m, loss in enumerate(losses)},
              "epochs": [len(r.history.validation_loss) for r in results],
              "seconds": [r.history.seconds for r in results],
              "best_epochs": [int(r.history.best_epoch) for r in results]}
    history = first.history._replace(seconds=float(sum(record["seconds"])),
                                     choices=dict(first.history.choices or {}) | {"members": record})
    return FitResult(prefix(best), history)


def _chosen(results: list, candidates: tuple, reason: str) -> "FitResult":
    """The candidate with the lowest best validation loss, its history recording the choice.

    ``history.choices["quadratic"]`` holds the chosen value, the reason, and each candidate's best
    held-out loss and seconds; ``history.seconds`` is the time of all candidates together.
    """
    losses = [float(np.min(r.history.validation_loss)) for r in results]
    best = int(np.argmin(losses))
    seconds = [r.history.seconds for r in results]
    record = {"chosen": bool(candidates[best]), "reason": reason,
              "validation_loss": {str(c): loss for c, loss in zip(candidates, losses)},
              "seconds": {str(c): t for c, t in zip(candidates, seconds)}}
    history = results[best].history
    choices = dict(history.choices or {}) | {"quadratic": record}
    return results[best]._replace(history=history._replace(seconds=float(sum(seconds)), choices=choices))


# ---------------------------------------------------------------- fit


class TrainHistory(NamedTuple):
    """What training did.

    Attributes:
        train_loss: ``(num_epochs,)`` mean plain loss (unweighted, one negative) of each epoch's
            minibatches, on the footing of ``validation_loss``.
        validation_loss: ``(num_epochs,)`` plain loss on the validation bank (:func:`evaluate`).
        best_epoch: the epoch whose parameters are returned.
        stopped_early: whether training ended before ``max_epochs`` (see ``stop_reason``).
        seconds: wall time of the epochs.
        ema_decay: β of the parameters' average used (0: the iterates).
        train_objective: ``(num_epochs,)`` mean of the minimised objective (ratio weights, K
            negatives, balanced penalty).
        batch_size: the batch size used.
        learning_rate: the peak learning rate of the default optimizer (None when one was given).
        stop_reason: ``"patience"`` (no lower validation loss for ``patience`` epochs),
            ``"max_epochs"`` or ``"time_budget"`` (the next epoch would have overrun it).
        choices: what :func:`fit` chose by itself, by name, or None when every setting was given:
            ``"quadratic"``: ``{"chosen": bool, "reason": str, "validation_loss": {"False": float,
            "True": float}, "seconds": {...}}`` (:func:`quadratic_candidates`); ``"members"``:
            ``{"chosen": m, "reason": str, "validation_loss": {"1": float, ...}`` (the held-out loss
            of the first 1, 2, ... networks' averaged logit), ``"seconds": [...]`` and
            ``"best_epochs": [...]`` of each network (the first's seconds include its quadratic
            candidates)``}`` (:func:`member_candidates`).
    """

    train_loss: np.ndarray
    validation_loss: np.ndarray
    best_epoch: int
    stopped_early: bool
    seconds: float
    ema_decay: float = 0.0
    train_objective: np.ndarray | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    stop_reason: str | None = None
    choices: dict | None = None

    def describe(self) -> str:
        """One line for people: the first network's epochs and best held-out loss, and what
        :func:`fit` chose, e.g. ``"4 networks in 160 s, kept the average of the first 2 (validation
        loss 0.0801); the first: 100 epochs, best validation loss 0.0814 at epoch 99; quadratic
        terms kept"``."""
        first = (f"{len(self.validation_loss)} epochs, best validation loss "
                 f"{float(self.validation_loss[self.best_epoch]):.4f} at epoch {self.best_epoch}")
        choices = self.choices or {}
        members = choices.get("members")
        if members and len(members["seconds"]) > 1:
            chosen = members["chosen"]
            kept = "kept the first alone" if chosen == 1 else f"kept the average of the first {chosen}"
            line = (f"{len(members['seconds'])} networks in {self.seconds:.0f} s, {kept} (validation loss "
                    f"{members['validation_loss'][str(chosen)]:.4f}); the first: {first}")
        else:
            line = first.replace(" epochs,", f" epochs in {self.seconds:.1f} s,", 1)
        if "quadratic" in choices and len(choices["quadratic"]["validation_loss"]) > 1:
            line += "; quadratic terms " + ("kept" if choices["quadratic"]["chosen"] else "dropped")
        return line


class FitResult(NamedTuple):
    """What :func:`fit` returns: the estimator (one network or an ensemble) and the first network's history."""

    estimator: RatioEstimator | RatioEnsemble
    history: TrainHistory


class EnsembleFitResult(NamedTuple):
    """The ensemble, each member's history, and the ensemble's loss on the shared validation bank."""

    estimator: RatioEnsemble
    histories: tuple
    validation_loss: float


class TrainingData(NamedTuple):
    """Where training reads its minibatches: what :func:`fit` needs of a bank in memory or on disk.

    Attributes:
        standardization: z-scoring statistics of the training simulations.
        num_train: number of training simulations.
        validation: the held-out :class:`SimulationBank`, in memory.
        epoch_fn: ``epoch_fn(trainer, batch_size) -> run_epoch``, where ``run_epoch(rng_key, state)
            -> (state, TrainInfo)`` takes ``num_train // batch_size`` optimizer steps.
        train: the training :class:`SimulationBank` when it is in memory on one device (several
            networks can then train together, :func:`_train_together`), else None.
    """

    standardization: Standardization
    num_train: int
    validation: SimulationBank
    epoch_fn: Callable
    train: SimulationBank | None = None


def _in_memory_data(rng_key, bank: SimulationBank, held_out: "_HeldOut", mesh: Mesh | None) -> TrainingData:
    """``bank`` split (unless ``held_out`` is a bank) for training in one compiled epoch; with a mesh the
    training bank is replicated on its devices once (each epoch draws its minibatches from it)."""
    if held_out.bank is None:
        train, val = split_bank(rng_key, bank, held_out.fraction)
    else:
        train, val = bank, held_out.bank
    standardization = standardization_from(train.theta, train.x)
    placed = train if mesh is None else _replicated(train, mesh)
    return TrainingData(standardization, train.num_simulations, val,
                        lambda trainer, batch_size: lambda key, state: trainer.epoch(key, state, placed),
                        train if mesh is None else None)


def _train(rng_key, trainer: Trainer, estimator, run_epoch: Callable, val: SimulationBank, schedule: _Schedule,
           progress: bool, mesh: Mesh | None = None) -> FitResult:
    """Epochs until ``patience`` epochs pass without a lower validation loss; the best estimator."""
    start = time.perf_counter()
    state, best, best_epoch, best_loss, rows = trainer.init(estimator), estimator, 0, np.inf, []
    bar = tqdm(range(schedule.max_epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for i in bar:
        state, info = run_epoch(jax.random.fold_in(rng_key, i), state)
        current = trainer.estimator(state)
        val_loss = evaluate(current, val, mesh=False if mesh is None else mesh)
        rows.append((float(info.loss), val_loss, float(info.objective)))
        if not np.isfinite(val_loss):
            raise FloatingPointError(f"validation loss became {val_loss} at epoch {i}: training diverged; "
                                     "lower the learning rate")
        if val_loss < best_loss:
            best_loss, best_epoch, best = val_loss, i, current
        bar.set_postfix(train=f"{rows[-1][0]:.4f}", val=f"{val_loss:.4f}", best=best_epoch)
        reason = _stop_reason(i, best_epoch, schedule, time.perf_counter() - start, mesh)
        if reason is not None:
            break
    bar.close()
    train_loss, validation_loss, train_objective = (np.asarray(c) for c in zip(*rows))
    history = TrainHistory(train_loss, validation_loss, best_epoch, len(rows) < schedule.max_epochs,
                           time.perf_counter() - start, float(schedule.ema_decay), train_objective,
                           schedule.batch_size, schedule.learning_rate, reason)
    return FitResult(best, history)


def _train_together(rng_keys: list, trainer: Trainer, estimators: list, bank: SimulationBank, val: SimulationBank,
                    schedule: _Schedule, progress: bool) -> list[FitResult]:
    """:func:`_train` of M networks of one config at once, on one device: ``jax.vmap`` over their
    stacked states runs every network's epoch in one compiled program, each with its own
    initialisation (``estimators``) and minibatch order (epoch i of network m draws from
    ``fold_in(rng_keys[m], i)``), so each takes the steps it would take alone. Each network stops by
    its own patience: from then on its best estimator and history are frozen while the others go
    on; the time budget, for all of them, stops every one still training. Each history's
    ``seconds`` is an equal share of the wall time."""
    start, num = time.perf_counter(), len(estimators)
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
    state = stack([trainer.init(e) for e in estimators])
    keys = jnp.stack(rng_keys)
    epoch = jax.jit(jax.vmap(trainer.epoch, in_axes=(0, 0, None)))
    averaged = jax.jit(jax.vmap(trainer.estimator))
    best, best_loss = stack(estimators), np.full(num, np.inf)
    best_epoch, reasons, rows = np.zeros(num, int), [None] * num, [[] for _ in range(num)]
    bar = tqdm(range(schedule.max_epochs), desc=f"train {num} networks", unit="epoch", disable=not progress,
               leave=False)
    for i in bar:
        state, info = epoch(jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i), state, bank)
        current = averaged(state)
        val_loss = _member_losses(current, val)
        active = np.array([r is None for r in reasons])
        if not np.all(np.isfinite(val_loss[active])):
            raise FloatingPointError(f"validation loss became {val_loss[active]} at epoch {i}: training diverged; "
                                     "lower the learning rate")
        improved = active & (val_loss < best_loss)
        if improved.any():
            chosen = jnp.asarray(improved)
            best = jax.tree.map(lambda b, c: jnp.where(chosen.reshape((-1,) + (1,) * (c.ndim - 1)), c, b),
                                best, current)
            best_loss, best_epoch = np.where(improved, val_loss, best_loss), np.where(improved, i, best_epoch)
        elapsed, loss, objective_ = time.perf_counter() - start, np.asarray(info.loss), np.asarray(info.objective)
        for m in np.flatnonzero(active):
            rows[m].append((float(loss[m]), float(val_loss[m]), float(objective_[m])))
            reasons[m] = _stop_reason(i, int(best_epoch[m]), schedule, elapsed, None)
        bar.set_postfix(training=sum(r is None for r in reasons), best=float(best_loss.min()))
        if all(r is not None for r in reasons):
            break
    bar.close()
    seconds = (time.perf_counter() - start) / num
    results = []
    for m in range(num):
        train_loss, validation_loss, train_objective = (np.asarray(c) for c in zip(*rows[m]))
        history = TrainHistory(train_loss, validation_loss, int(best_epoch[m]), len(rows[m]) < schedule.max_epochs,
                               seconds, float(schedule.ema_decay), train_objective, schedule.batch_size,
                               schedule.learning_rate, reasons[m])
        results.append(FitResult(jax.tree.map(lambda a: a[m], best), history))
    return results


def _stop_reason(epoch: int, best_epoch: int, schedule: _Schedule, elapsed: float, mesh: Mesh | None):
    """Why training stops after ``epoch`` (0-based), or None to go on.

    The time budget stops training when one more epoch, at the mean epoch time so far, would end
    past it. Processes that train in lockstep take process 0's clock, so they stop together.
    """
    if epoch - best_epoch >= schedule.patience:
        return "patience"
    if epoch + 1 >= schedule.max_epochs:
        return "max_epochs"
    if schedule.time_budget is None:
        return None
    over = elapsed * (epoch + 2) / (epoch + 1) > schedule.time_budget
    if _spans_processes(mesh):
        from jax.experimental import multihost_utils

        over = bool(multihost_utils.broadcast_one_to_all(np.asarray(over)))
    return "time_budget" if over else None


# ---------------------------------------------------------------- devices and processes


def _spans_processes(mesh: Mesh | None) -> bool:
    """Whether ``mesh`` holds devices of several processes (a multi-host run); refuses a mesh
    without a device of this process."""
    if mesh is None:
        return False
    owners = {d.process_index for d in mesh.devices.flat}
    if jax.process_index() not in owners:
        raise ValueError(f"mesh: expected a mesh that includes this process's devices "
                         f"(process {jax.process_index()}), got devices of processes {sorted(owners)}")
    return len(owners) > 1


def _replicated(tree, mesh: Mesh):
    """``tree`` whole on every device of ``mesh``; on a mesh spanning processes every process passes
    the same values."""
    if not _spans_processes(mesh):
        return jax.device_put(tree, replicated_sharding(mesh))
    whole = replicated_sharding(mesh)
    return jax.jit(lambda t: t, in_shardings=whole, out_shardings=whole)(jax.tree.map(np.asarray, tree))


def _on_host(tree):
    """``tree``'s arrays as arrays of this process's default device (from replicated arrays of any mesh)."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)


def _whole_bank(bank: SimulationBank, name: str) -> SimulationBank:
    """The bank of all processes, in process order, from this process's rows of it (every process
    passes the same number); a global ``jax.Array`` (devices of several processes) is already whole."""
    from jax.experimental import multihost_utils

    if isinstance(bank.theta, jax.Array) and not bank.theta.is_fully_addressable:
        return SimulationBank(*(jnp.asarray(multihost_utils.process_allgather(a, tiled=True)) for a in bank))
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([bank.theta.shape[0]])))
    if len(set(counts.ravel().tolist())) > 1:
        raise ValueError(f"{name}: expected the same number of rows on every process (sharding.process_rows), "
                         f"got {counts.ravel().tolist()} rows on processes 0..{counts.size - 1}")
    return SimulationBank(*(jnp.asarray(multihost_utils.process_allgather(np.asarray(a), tiled=True)) for a in bank))


# ---------------------------------------------------------------- validation data


class _HeldOut(NamedTuple):
    """The held-out data: a ``fraction`` of the bank or an explicit ``bank`` (the other is None)."""

    fraction: float | None
    bank: SimulationBank | None


_VALIDATION_DEFAULT = 0.1


def _held_out(validation, options: dict, bank) -> _HeldOut:
    """``validation`` (or the flat ``validation_fraction`` / ``validation_bank``, popped from
    ``options``) checked: a fraction in (0, 1) or a bank with the shapes of ``bank``."""
    fraction, given = options.pop("validation_fraction", None), options.pop("validation_bank", None)
    name, value = "validation", validation
    if fraction is not None or given is not None:
        if not (isinstance(validation, float) and validation == _VALIDATION_DEFAULT):
            raise TypeError("validation: give either validation or the flat validation_fraction / "
                            "validation_bank, not both")
        if fraction is not None:
            check_number("validation_fraction", fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        name, value = ("validation_bank", given) if given is not None else ("validation_fraction", fraction)
    if isinstance(value, (tuple, list, dict)):
        held = _checked_bank(value, name)
        if held.theta.shape[1:] != bank.theta.shape[1:] or held.x.shape[1:] != bank.x.shape[1:]:
            raise ValueError(f"{name} must have the shapes of bank, theta (n, {bank.theta.shape[1]}) and "
                             f"x (n, *{tuple(bank.x.shape[1:])}), got theta {held.theta.shape} and "
                             f"x {held.x.shape}")
        return _HeldOut(None, held)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a fraction in (0, 1) or a SimulationBank(theta, x), "
                        f"got {type(value).__name__}")
    return _HeldOut(check_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True), None)


def _global_inputs(bank, held_out: _HeldOut, mesh: Mesh | None):
    """``(bank, held_out)`` of all processes when ``mesh`` spans several (:func:`_whole_bank`);
    unchanged otherwise."""
    if not _spans_processes(mesh):
        return bank, held_out
    if getattr(bank, "is_store", False):
        raise ValueError("mesh: a bank in a Zarr store trains on the devices of one process; pass "
                         "mesh=jax.local_devices() or read each process's rows into memory")
    held = None if held_out.bank is None else _whole_bank(held_out.bank, "validation")
    return _whole_bank(bank, "bank"), held_out._replace(bank=held)


# ---------------------------------------------------------------- fit


def fit(
    rng_key: jax.Array,
    bank: SimulationBank,
    *,
    network: NetworkConfig = NetworkConfig(),
    loss: LossConfig = LossConfig(),
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    max_epochs: int = 300,
    patience: int = 50,
    validation: float | SimulationBank = _VALIDATION_DEFAULT,
    ema_decay: float | None = None,
    num_members: int | None = None,
    mesh=None,
    **options,
) -> FitResult:
    r"""Train a ratio estimator ``f(θ, x) ≈ log r(x|θ)`` on a simulation bank.

    Every argument is checked before any work; errors name the argument, what it expects and
    what it got.

    Args:
        rng_key: PRNG key (split, initialisation, minibatch order).
        bank: ``SimulationBank(theta (n, d), x (n, *x_shape))`` of finite real numbers.
        network: the architecture (:class:`aalr_jax.nn.NetworkConfig`); ``theta_dim`` and
            ``x_shape`` come from the bank. Its ``quadratic=None`` (the default) lets ``fit``
            choose the quadratic terms in θ, which help likelihoods near-Gaussian in θ: it trains
            the network without and with them (the same key: the same split, initial MLP and
            minibatches) and keeps the lower held-out loss, recorded in ``history.choices``; on a
            CPU above :data:`AUTO_MAX_TRAIN_CPU` training simulations it trains only
            without them (:func:`quadratic_candidates`; benchmarks/README.md "Tuning the defaults:
            quadratic terms"). True or False trains that network alone.
        loss: the objective (:class:`aalr_jax.losses.LossConfig`): ratio weighting α (default
            :data:`DEFAULT_RATIO_WEIGHTING`, chosen on fresh observations, see benchmarks/README.md
            "Choosing the defaults"; 0 is the paper's plain loss), balance λ, negatives K.
        optimizer: any ``optax.GradientTransformation``; by default AdamW without weight decay
            (weight decay over-broadens posteriors, Hermans et al. 2020) whose rate decays along a
            cosine from ``learning_rate`` to 1 % of it over ``max_epochs``.
        learning_rate: peak rate of the default optimizer, > 0; :func:`default_learning_rate` when
            None. Giving it with ``optimizer`` is an error.
        batch_size: pairs per minibatch (a multiple of the mesh's devices); :func:`default_batch_size`
            of the training split when None, rounded down to a multiple of the devices.
        max_epochs: upper bound on epochs.
        patience: stop after this many epochs without a lower validation loss.
        validation: the held-out data: a fraction in (0, 1) of ``bank``, or a
            :class:`~aalr_jax.types.SimulationBank` (then all of ``bank`` trains).
        ema_decay: β in [0, 1) of the parameters' moving average (:func:`param_average`); the
            average is what is validated, kept and returned, 0 keeps the iterates.
            :func:`default_ema_decay` of the schedule's steps when None.
        num_members: how many networks to train and average (:class:`aalr_jax.nn.RatioEnsemble`),
            all on the same split, network m ≥ 1 from the keys folded with m. None (the default)
            lets ``fit`` choose (:func:`member_candidates`): it trains up to 4 networks (on a CPU, while
            their epochs × training simulations stay within those of one network's full schedule on
            :data:`AUTO_MEMBERS_WORK_CPU` simulations: 4 on 10^4, one on 10^5 unless the first
            stops early, one with a learned embedding) and keeps the first m with the lowest
            held-out loss of their averaged logit, recorded in ``history.choices["members"]``.
            1 trains one network; M > 1 returns the ensemble of M. On one accelerator with the bank
            in memory, networks 1..M-1 train at once, one program over their stacked states
            (``jax.vmap``), each taking the steps it would take alone; elsewhere one after the other.
        mesh: the devices each minibatch is split over (:func:`aalr_jax.sharding.resolve_mesh`):
            None (every device when there are several), False (one device), a number of devices,
            a list of devices or a one-axis ``jax.sharding.Mesh``. See "Devices and processes".
        **options: the fields of ``network`` (``hidden_features``, ``activation``, ``embedding``,
            ``embedding_features``, ``theta_bound``, ``quadratic``) and of ``loss``
            (``ratio_weighting``, ``balance``, ``num_negatives``) as flat keywords, applied on top
            of ``network`` and ``loss``; ``progress`` (default True: a progress bar with the train
            and validation losses); ``time_budget``, seconds > 0 of training: it stops before the
            epoch that would overrun them (``history.stop_reason == "time_budget"``), keeping the
            best estimator so far (when ``fit`` trains several networks, each has an equal share of
            what is left of it; every training runs at least its first epoch, whose time includes
            compiling it, so a budget below the compilation time is overrun); the learning rate
            still decays over ``max_epochs``, so fewer ``max_epochs`` that fit the budget train
            better than a budget that cuts the schedule;
            ``validation_fraction`` or ``validation_bank``, the two forms of ``validation`` by name.
            Any other name is a ``TypeError``.

    Returns:
        ``FitResult(estimator, history)``: the estimator with the lowest validation loss (a
        :class:`~aalr_jax.nn.RatioEstimator`, or a :class:`~aalr_jax.nn.RatioEnsemble` of several
        networks; both serve :func:`aalr_jax.sample_posterior`, :func:`aalr_jax.save_estimator` and
        the diagnostics alike) and the first network's :class:`TrainHistory` (which records the
        batch size, learning rate and β used, and what ``fit`` chose), its ``seconds`` those of
        every network trained. The estimator's arrays are on this process's default device,
        whatever the mesh.

    Devices and processes. With a mesh of D devices the bank is replicated on each, every
    minibatch is split into D parts and the compiler reduces the loss and its gradient across
    them; the minibatches, their order and the standardisation do not depend on D, so the same
    key gives the same estimator as one device up to floating-point order (with the same
    ``batch_size``: the default one is rounded to a multiple of D). In a multi-process run
    (:func:`aalr_jax.sharding.initialize_distributed`) with a mesh over the processes' devices
    (the default), every process calls ``fit`` with the same key and arguments and *its own rows*
    of the bank, ``bank[process_rows(n)]`` (the same number on each; an explicit validation bank
    likewise), or with global ``jax.Array`` s; the rows are gathered in process order, so every
    process trains in lockstep on the whole bank and returns the estimator one process would get
    from all of it. ``mesh=False`` in such a run trains each process alone on what it passes.

    A bank in a Zarr store (:class:`aalr_jax.store.ZarrBank`) trains from shuffled minibatches
    streamed from disk (:mod:`aalr_jax.streaming`); its held-out data are whole chunks.
    """
    rng_key = check_key("rng_key", rng_key)
    num_members = None if num_members is None else positive_int("num_members", num_members)
    progress = options.pop("progress", True)
    time_budget = options.pop("time_budget", None)
    mesh = resolve_mesh(mesh)
    on_disk = getattr(bank, "is_store", False)
    bank = bank if on_disk else _checked_bank(bank)
    held_out = _held_out(validation, options, bank)
    network, loss = _configs(network, loss, options, bank)
    schedule = _checked_schedule(optimizer, learning_rate, batch_size, max_epochs, patience, ema_decay, mesh,
                                 time_budget)
    bank, held_out = _global_inputs(bank, held_out, mesh)
    key_split, key_init, key_epochs = jax.random.split(rng_key, 3)
    if on_disk:
        from aalr_jax.streaming import store_data  # lazy: zarr is an optional dependency

        data = store_data(key_split, bank, held_out.fraction, held_out.bank)
    else:
        data = _in_memory_data(key_split, bank, held_out, mesh)
    schedule = _resolved(schedule, loss, data.num_train, data.validation.num_simulations, mesh)
    trainer = build_trainer(schedule.optimizer, schedule.batch_size, loss=loss, ema_decay=schedule.ema_decay,
                            mesh=False if mesh is None else mesh)
    run_epoch = data.epoch_fn(trainer, schedule.batch_size)
    candidates, reason = quadratic_candidates(network.quadratic, data.num_train)
    plan = member_candidates(num_members, data.num_train, network.embedding, schedule.max_epochs)
    trainings, results = len(candidates) + plan.expected(data.num_train, schedule.max_epochs) - 1, []

    def train_one(key_init, key_epochs, config):
        spent = sum(r.history.seconds for r in results)
        share = schedule if schedule.time_budget is None else schedule._replace(  # equal shares of what is left
            time_budget=(schedule.time_budget - spent) / max(1, trainings - len(results)))
        estimator = init_estimator(key_init, config, data.standardization)
        results.append(_train(key_epochs, trainer, estimator, run_epoch, data.validation, share, progress, mesh))
        return results[-1]

    # the same key for each candidate: the same split, initial MLP and minibatches
    first = [train_one(key_init, key_epochs, network._replace(quadratic=q)) for q in candidates]
    first = _chosen(first, candidates, reason) if network.quadratic is None else first[0]
    host = (lambda r: r) if mesh is None else (lambda r: r._replace(estimator=_on_host(r.estimator)))
    first = host(first)
    others = []
    if plan.most > 2 and plan.work is None and data.train is not None and _together(jax.default_backend()):
        share = schedule if schedule.time_budget is None else schedule._replace(  # at once (vmap)
            time_budget=(schedule.time_budget - first.history.seconds) * (plan.most - 1) / (trainings - len(results)))
        others = _train_together([jax.random.fold_in(key_epochs, m) for m in range(1, plan.most)], trainer,
                                 [init_estimator(jax.random.fold_in(key_init, m), first.estimator.config,
                                                 data.standardization) for m in range(1, plan.most)],
                                 data.train, data.validation, share, progress)
    else:  # one after the other, while the plan allows another (and, for a number fit chooses, time is left)
        left = lambda: (num_members is not None or schedule.time_budget is None
                        or sum(r.history.seconds for r in results) < schedule.time_budget)
        while plan.another([len(r.history.validation_loss) for r in (first, *others)], data.num_train) and left():
            m = len(others) + 1
            others.append(host(train_one(jax.random.fold_in(key_init, m), jax.random.fold_in(key_epochs, m),
                                         first.estimator.config)))
    if num_members is None:
        validation = _on_host(data.validation) if _spans_processes(mesh) else data.validation
        return _members_chosen([first, *others], validation, plan.reason)
    if not others:
        return first
    seconds = first.history.seconds + sum(r.history.seconds for r in others)
    return FitResult(RatioEnsemble.stack([first.estimator] + [r.estimator for r in others]),
                     first.history._replace(seconds=seconds))


def fit_ensemble(
    rng_key: jax.Array,
    bank: SimulationBank,
    num_members: int = 4,
    *,
    validation: float | SimulationBank = _VALIDATION_DEFAULT,
    mesh=None,
    progress: bool = True,
    **fit_kwargs,
) -> EnsembleFitResult:
    """Train ``num_members`` estimators with :func:`fit` and average their logits.

    All members train on the same split of ``bank`` (held out once, a fraction ``validation``, unless
    ``validation`` is a bank) and differ in initialisation and minibatch order: member ``m`` gets
    the key ``fold_in(rng_key, m)``. When ``quadratic`` is left to :func:`fit`, the first member
    chooses it and the others take its choice. Averaging lowers the variance of the learned log-ratio, for M
    times the training (see benchmarks/README.md "Choosing the defaults").

    Args:
        rng_key: PRNG key.
        bank: ``SimulationBank(theta (n, d), x (n, *x_shape))``; in a multi-process run, this
            process's rows of it, as in :func:`fit`.
        num_members: M, a positive integer.
        validation: the held-out data, as in :func:`fit` (also ``validation_fraction=`` or
            ``validation_bank=``).
        mesh: the devices of every member's data-parallel training, as in :func:`fit`; the
            members train one after the other.
        progress: show progress bars (members, and each member's epochs).
        **fit_kwargs: any other argument of :func:`fit` (network, loss, optimizer, epochs...).

    Returns:
        ``EnsembleFitResult(estimator, histories, validation_loss)``: a
        :class:`aalr_jax.nn.RatioEnsemble`, M :class:`TrainHistory`, and the ensemble's plain
        loss on the validation bank.
    """
    rng_key = check_key("rng_key", rng_key)
    num_members = positive_int("num_members", num_members)
    mesh_ = resolve_mesh(mesh)
    on_disk = getattr(bank, "is_store", False)
    bank = bank if on_disk else _checked_bank(bank)
    bank, held_out = _global_inputs(bank, _held_out(validation, fit_kwargs, bank), mesh_)
    key_split, key_members = jax.random.split(rng_key)
    validation_bank = held_out.bank
    if validation_bank is None:
        if on_disk:  # whole chunks held out once; every member streams the same training chunks
            from aalr_jax.streaming import split_store

            bank, validation_bank = split_store(key_split, bank, held_out.fraction)
        else:
            bank, validation_bank = split_bank(key_split, bank, held_out.fraction)
    if _spans_processes(mesh_):  # the whole split, as global arrays: fit gathers nothing more
        bank, validation_bank = _replicated(bank, mesh_), _replicated(validation_bank, mesh_)
    members, histories = [], []
    for m in tqdm(range(num_members), desc="ensemble", unit="member", disable=not progress):
        result = fit(jax.random.fold_in(key_members, m), bank, validation=validation_bank, num_members=1,
                     mesh=mesh, progress=progress, **fit_kwargs)
        members.append(result.estimator)
        histories.append(result.history)
        fit_kwargs = fit_kwargs | {"quadratic": result.estimator.config.quadratic}  # one architecture
    ensemble = RatioEnsemble.stack(members)
    if _spans_processes(mesh_):
        validation_bank = _on_host(validation_bank)
    return EnsembleFitResult(ensemble, tuple(histories), evaluate(ensemble, validation_bank, mesh=False))
