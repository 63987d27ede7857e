r"""Samplers as values: :class:`RWMH`, :class:`HMC` and :class:`NUTS`, in the shape of BlackJAX.

A sampler is a small NamedTuple of static settings (hashable, so it keys the compiled program, and
a pytree without leaves, so it rides along in results). Every sampler has

* ``init(position, logdensity_fn) -> State`` and
* ``build_kernel() -> kernel(rng_key, state, logdensity_fn, step_size, metric) -> (State, StepInfo)``,

where ``position: (d,)`` lies in unconstrained space, ``step_size: ()`` and ``metric`` is
``prepare(Σ)`` of an adapted covariance ``Σ: (d, d)`` (dense) or ``(d,)`` (diagonal). Warm-up
(:mod:`aalr_jax.adaptation`) tunes ``step_size`` towards ``target_acceptance`` and ``Σ`` for each
chain; :func:`resolve_sampler` turns a name and flat options into a validated value with every
default filled in, without running anything.

* :class:`RWMH`: ``u' = u + ε L z`` with ``L Lᵀ = Σ``, ``z ~ N(0, I)``, accepted with probability
  ``min(1, π(u')/π(u))`` (``prepare`` is the Cholesky factor ``L``). After warm-up, with
  probability ``independence_prob`` a step instead proposes from a kernel density of all chains'
  late warm-up positions (:mod:`aalr_jax.independence`); such jumps land in any mode, so chains
  move between modes. State: BlackJAX's ``RWState(position, logdensity)``, or
  :class:`aalr_jax.independence.MixtureState` (plus ``log_proposal``) with independence moves.
  Acceptance target 0.44 in 1-D down to 0.234 from 5-D on (Roberts & Rosenthal 2001).
* :class:`HMC`: BlackJAX's HMC with ``Σ`` as the inverse mass matrix and a jittered trajectory of
  ``L'`` leapfrog steps, ``L'`` uniform on ``{1, ..., 2L - 1}`` (mean ``L``): a fixed length can
  resonate with the target's scale (a Gaussian's half-period) and freeze the chains. State:
  BlackJAX's ``HMCState``. Acceptance target 0.8.
* :class:`NUTS`: BlackJAX's NUTS (tree depth at most ``max_num_doublings``). Every chain of a
  vmapped NUTS waits for the deepest tree: keep the chains few. Acceptance target 0.8.

``method="auto"`` is RWMH up to :data:`AUTO_RWMH_MAX_DIM` parameters (with independence moves,
probability :data:`DEFAULT_INDEPENDENCE_PROB`) and HMC beyond; kept draws are thinned per method
(:data:`DEFAULT_THIN`, :data:`THIN_WITH_INDEPENDENCE`). These defaults were chosen on exact
likelihoods, see benchmarks/README.md, "Choosing the sampler".
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.mcmc import random_walk

from aalr_jax import independence
from aalr_jax.validation import positive_int

__all__ = [
    "AUTO_RWMH_MAX_DIM",
    "DEFAULT_INDEPENDENCE_PROB",
    "DEFAULT_THIN",
    "HMC",
    "METHODS",
    "NUTS",
    "RWMH",
    "StepInfo",
    "THIN_WITH_INDEPENDENCE",
    "resolve_sampler",
]

METHODS = ("auto", "rwmh", "hmc", "nuts")
AUTO_RWMH_MAX_DIM = 4
DEFAULT_THIN = {"rwmh": 10, "hmc": 3, "nuts": 1}
THIN_WITH_INDEPENDENCE = 5
DEFAULT_INDEPENDENCE_PROB = 0.9
MAX_RECENT = 10  # late warm-up positions kept per chain for the independence proposal
INDEPENDENCE_INFLATION = 2.0  # scale of the defensive component relative to the positions' spread
RWMH_TARGET_ACCEPTANCE = {1: 0.44, 2: 0.35, 3: 0.31, 4: 0.27}  # 0.234 beyond


class StepInfo(NamedTuple):
    """What one transition reports.

    Attributes:
        acceptance_rate: ``()`` Metropolis–Hastings acceptance probability of the proposal.
        is_divergent: ``()`` bool, an HMC/NUTS trajectory whose energy error blew up (RWMH: False).
    """

    acceptance_rate: jax.Array
    is_divergent: jax.Array


def _check_probability(name: str, value, *, upper_open: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0)
    if bad:
        raise ValueError(f"{name} must lie in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return float(value)


class _Sampler:
    """Behaviour shared by the sampler NamedTuples (fields ``dense_metric``, ``target_acceptance``)."""

    __slots__ = ()
    name: ClassVar[str]
    pools_metric: ClassVar[bool] = False  # RWMH: shrink each chain's window estimate to the chains' mean

    def default_target(self, dim: int) -> float:
        return 0.8

    def initial_step_size(self, dim: int) -> float:
        return 1.0

    @property
    def default_thin(self) -> int:
        """Keep every ``default_thin``-th step when ``thin`` is not given."""
        return DEFAULT_THIN[self.name]

    def prepare(self, metric: jax.Array) -> jax.Array:
        """The kernel's ``metric`` argument from an adapted covariance (once per window, not per step)."""
        return metric

    def num_recent(self, num_chains: int) -> int:
        """Late warm-up positions each chain records (used by RWMH's independence proposal)."""
        return 0

    def after_warmup(self, rng_key, adapted) -> tuple[Callable, Callable]:
        """``(kernel, init_draws)`` for the kept draws: the kernel and a map of a warmed-up state."""
        return self.build_kernel(), lambda state: state

    def resolve(self, dim: int):
        """This sampler with every option validated (errors name it) and ``None`` defaults filled in."""
        if not isinstance(self.dense_metric, bool):
            raise TypeError(f"dense_metric must be True or False, got {self.dense_metric!r}")
        target = self.target_acceptance
        if target is None:
            target = self.default_target(dim)
        elif isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < target < 1.0:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {target!r}")
        return self._replace(target_acceptance=float(target))


class _RWMHFields(NamedTuple):
    independence_prob: float | None = None
    independence_components: int = 128
    independence_bandwidth: float | None = None
    independence_defensive: float = 0.2
    dense_metric: bool = True
    target_acceptance: float | None = None


class RWMH(_RWMHFields, _Sampler):
    """Random-walk Metropolis–Hastings with a per-chain metric, plus independence moves.

    Attributes:
        independence_prob: probability that a step after warm-up proposes from the kernel density
            of the chains' late warm-up positions (:mod:`aalr_jax.independence`); ``None``:
            :data:`DEFAULT_INDEPENDENCE_PROB` up to :data:`AUTO_RWMH_MAX_DIM` parameters, else 0.
        independence_components: at most this many kernels in that density.
        independence_bandwidth: kernel ``k``'s covariance is ``bandwidth²`` times its chain's
            metric; ``None``: Silverman's rule for the number of kernels and parameters.
        independence_defensive: weight of the broad Gaussian mixed into it, in ``[0, 1)``.
        dense_metric: adapt a dense (True) or diagonal metric.
        target_acceptance: of the step-size adaptation; ``None``: 0.44 in 1-D, 0.35, 0.31, 0.27,
            then 0.234 from 5-D on.
    """

    __slots__ = ()
    name: ClassVar[str] = "rwmh"
    pools_metric: ClassVar[bool] = True

    def default_target(self, dim: int) -> float:
        return RWMH_TARGET_ACCEPTANCE.get(dim, 0.234)

    def initial_step_size(self, dim: int) -> float:
        return 2.38 / math.sqrt(dim)

    @property
    def default_thin(self) -> int:
        return THIN_WITH_INDEPENDENCE if self.independence_prob else DEFAULT_THIN["rwmh"]

    def prepare(self, metric: jax.Array) -> jax.Array:
        return jnp.linalg.cholesky(metric) if metric.ndim == 2 else jnp.sqrt(metric)

    def num_recent(self, num_chains: int) -> int:
        return min(MAX_RECENT, -(-self.independence_components // num_chains)) if self.independence_prob else 0

    def init(self, position: jax.Array, logdensity_fn: Callable):
        return random_walk.init(position, logdensity_fn)

    def build_kernel(self, proposal: independence.Mixture | None = None) -> Callable:
        """The random walk; with ``proposal``, its mixture with independence moves from it."""
        if proposal is not None:
            step = independence.build_kernel(proposal, self.independence_prob)
        else:
            additive = random_walk.build_additive_step()

            def step(rng_key, state, logdensity_fn, step_size, chol):
                def move(key, position):
                    z = jax.random.normal(key, position.shape, position.dtype)
                    return step_size * (chol @ z if chol.ndim == 2 else chol * z)

                return additive(rng_key, state, logdensity_fn, move)

        def kernel(rng_key, state, logdensity_fn, step_size, chol):
            state, info = step(rng_key, state, logdensity_fn, step_size, chol)
            return state, StepInfo(info.acceptance_rate, jnp.zeros((), bool))

        return kernel

    def after_warmup(self, rng_key, adapted) -> tuple[Callable, Callable]:
        """Fit the independence proposal to all chains' ``adapted.recent: (C, R, d)`` positions."""
        if not self.independence_prob:
            return self.build_kernel(), lambda state: state
        num, num_recent, dim = adapted.recent.shape
        points = adapted.recent.reshape(num * num_recent, dim)
        chols = jnp.repeat(adapted.metric, num_recent, axis=0)
        proposal = independence.fit(rng_key, points, chols, self.independence_components, self.independence_bandwidth,
                                    self.independence_defensive, INDEPENDENCE_INFLATION)
        return self.build_kernel(proposal), lambda state: independence.init(state, proposal)

    def resolve(self, dim: int) -> "RWMH":
        prob = self.independence_prob
        if prob is None:
            prob = DEFAULT_INDEPENDENCE_PROB if dim <= AUTO_RWMH_MAX_DIM else 0.0
        bandwidth = self.independence_bandwidth
        if bandwidth is not None and (isinstance(bandwidth, bool) or not 0.0 < bandwidth < math.inf):
            raise ValueError(f"independence_bandwidth must be positive and finite, got {bandwidth!r}")
        return _Sampler.resolve(self._replace(
            independence_prob=_check_probability("independence_prob", prob),
            independence_components=positive_int("independence_components", self.independence_components),
            independence_bandwidth=None if bandwidth is None else float(bandwidth),
            independence_defensive=_check_probability("independence_defensive", self.independence_defensive,
                                                      upper_open=True)), dim)


class _HMCFields(NamedTuple):
    num_integration_steps: int = 10
    dense_metric: bool = True
    target_acceptance: float | None = None


class HMC(_HMCFields, _Sampler):
    """Hamiltonian Monte Carlo with a jittered trajectory length.

    Attributes:
        num_integration_steps: mean leapfrog steps ``L`` per transition (uniform on ``{1..2L-1}``).
        dense_metric: adapt a dense (True) or diagonal inverse mass matrix.
        target_acceptance: of the step-size adaptation; ``None``: 0.8.
    """

    __slots__ = ()
    name: ClassVar[str] = "hmc"

    def init(self, position: jax.Array, logdensity_fn: Callable):
        return blackjax.hmc.init(position, logdensity_fn)

    def build_kernel(self) -> Callable:
        hmc = blackjax.hmc.build_kernel()
        steps = self.num_integration_steps

        def kernel(rng_key, state, logdensity_fn, step_size, metric):
            key_length, key_move = jax.random.split(rng_key)
            length = jax.random.randint(key_length, (), 1, 2 * steps)
            state, info = hmc(key_move, state, logdensity_fn, step_size, metric, length)
            return state, StepInfo(info.acceptance_rate, info.is_divergent)

        return kernel

    def resolve(self, dim: int) -> "HMC":
        steps = positive_int("num_integration_steps", self.num_integration_steps)
        return _Sampler.resolve(self._replace(num_integration_steps=steps), dim)


class _NUTSFields(NamedTuple):
    max_num_doublings: int = 10
    dense_metric: bool = True
    target_acceptance: float | None = None


class NUTS(_NUTSFields, _Sampler):
    """The No-U-Turn sampler (for a handful of chains).

    Attributes:
        max_num_doublings: tree depth limit (at most ``2^max_num_doublings`` leapfrog steps).
        dense_metric: adapt a dense (True) or diagonal inverse mass matrix.
        target_acceptance: of the step-size adaptation; ``None``: 0.8.
    """

    __slots__ = ()
    name: ClassVar[str] = "nuts"

    def init(self, position: jax.Array, logdensity_fn: Callable):
        return blackjax.nuts.init(position, logdensity_fn)

    def build_kernel(self) -> Callable:
        nuts = blackjax.nuts.build_kernel()
        depth = self.max_num_doublings

        def kernel(rng_key, state, logdensity_fn, step_size, metric):
            state, info = nuts(rng_key, state, logdensity_fn, step_size, metric, depth)
            return state, StepInfo(info.acceptance_rate, info.is_divergent)

        return kernel

    def resolve(self, dim: int) -> "NUTS":
        depth = positive_int("max_num_doublings", self.max_num_doublings)
        return _Sampler.resolve(self._replace(max_num_doublings=depth), dim)


SAMPLERS = {cls.name: cls for cls in (RWMH, HMC, NUTS)}
for _cls in SAMPLERS.values():
    jax.tree_util.register_static(_cls)


def _inert(name: str, value) -> bool:
    """Whether a flat option of another method changes nothing: its default (or no independence moves)."""
    default = next(cls._field_defaults[name] for cls in SAMPLERS.values() if name in cls._fields)
    return value is None or value == default or (name == "independence_prob" and value == 0)


def resolve_sampler(method_or_sampler, dim: int, **options):
    """The sampler value that ``method_or_sampler`` names for ``dim`` parameters, fully validated.

    Args:
        method_or_sampler: ``"auto"`` (RWMH up to :data:`AUTO_RWMH_MAX_DIM` parameters, else HMC),
            ``"rwmh"``, ``"hmc"``, ``"nuts"``, or a sampler value (:class:`RWMH`, :class:`HMC`,
            :class:`NUTS`) whose ``None`` fields are filled in.
        dim: number of parameters ``d``.
        **options: fields of the sampler (e.g. ``num_integration_steps=5``). A field of another
            method is accepted only at its default value (and ``independence_prob=0`` anywhere);
            any other value is a ``ValueError`` naming it.

    Returns:
        A sampler value with every default resolved (``independence_prob`` and
        ``target_acceptance`` are numbers); it runs nothing.
    """
    dim = positive_int("dim", dim)
    if isinstance(method_or_sampler, _Sampler):
        sampler = method_or_sampler
    elif isinstance(method_or_sampler, str) and method_or_sampler in METHODS:
        name = method_or_sampler
        if name == "auto":
            name = "rwmh" if dim <= AUTO_RWMH_MAX_DIM else "hmc"
        sampler = SAMPLERS[name]()
    else:
        raise ValueError(f"method must be one of {METHODS} or a sampler value (RWMH, HMC, NUTS), got {method_or_sampler!r}")
    known = {field for cls in SAMPLERS.values() for field in cls._fields}
    for key, value in options.items():
        if key not in known:
            raise TypeError(f"unknown sampler option {key!r}; the options of {sampler.name} are {', '.join(sampler._fields)}")
        if key not in sampler._fields and not _inert(key, value):
            owner = next(cls.name for cls in SAMPLERS.values() if key in cls._fields)
            label = f"{key} > 0" if key == "independence_prob" else key
            raise ValueError(f"{label} needs method={owner!r}, got method={sampler.name!r} with {key}={value!r}")
    sampler = sampler._replace(**{k: v for k, v in options.items() if k in sampler._fields})
    return sampler.resolve(dim)
