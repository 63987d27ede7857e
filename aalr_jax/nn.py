r"""The ratio estimator: a Flax NNX network whose output is the logit ``f(θ, x) = log r̂(x|θ)``.

The network is split in two so that a fixed observation is embedded once, not at every MCMC step:

* ``embed(x) -> features``: an embedding of the standardised observation, chosen by name from
  :data:`EMBEDDINGS`: ``"flatten"`` (identity on the flattened ``x``, the default), ``"cnn"`` and
  ``"resnet"`` for images ``(H, W)`` or ``(H, W, C)`` (channels last), ``"conv1d"`` and
  ``"resnet1d"`` for series ``(T,)`` or ``(T, C)``. The convolutional embeddings end in a linear
  map to ``embedding_features`` outputs; they are deterministic (no dropout, no batch statistics:
  the ResNet uses GroupNorm, which normalises each example on its own).
* ``head(θ, features) -> logit``: an MLP (SELU by default) on ``u = [θ̃, features]`` (θ̃ the
  bounded z(θ) below), plus, with ``quadratic=True``, the quadratic terms in θ of the same input:
  ``f(θ, x) = MLP(u) + θ̃ᵀ A u`` (``A`` a ``(d, p)`` matrix, zero at initialisation, p = d + number
  of features), i.e. every product ``θ̃_i θ̃_j`` and ``θ̃_i u_k``. A linear-Gaussian simulator's
  log-ratio is exactly quadratic in ``(θ, x)``, and wherever the likelihood concentrates
  (Bernstein–von Mises) it is nearly quadratic in θ with a centre that moves with x. An MLP has to
  build the products ``θ_i x_j`` of that coupling from its ridge functions, and a SELU MLP (linear
  for positive inputs) flattens them where the training data thin out, so its posterior means
  shrink towards the prior mean as |x| grows; ``θ̃ᵀ A u`` holds the coupling exactly, for ``d·p``
  multiply-adds per evaluation. The products of x with x are left to the MLP: they cancel in the
  posterior, and a full ``uᵀ Q u`` (p² parameters) overfits high-dimensional raw observations
  (see benchmarks/README.md "Choosing the defaults").

Inputs are z-scored inside the estimator with statistics of the training bank, so users pass raw
θ and x: ``z(θ) = (θ - θ_loc) / θ_scale``, ``z(x) = (x - x_loc) / x_scale`` (elementwise).
The head then sees ``z(θ) / √(1 + (z(θ)/b)²)`` with ``b = theta_bound`` (10 by default): nearly the
identity where the training data lie (|z| ≤ 4 moves by less than 8 %), but bounded by ``b``, so the
logit (its quadratic terms included) stays bounded as |θ| → ∞ and ``p(θ) r̂(x|θ)`` is a proper
density whenever the prior is. Without the bound a network that is linear in θ far from the data
can outgrow a heavy-tailed prior (a log-normal one, say) and MCMC chains run off to infinity.

The statistics (:class:`Standardization`, from :func:`standardization_from`) also keep the range
``[x_min, x_max]`` of the training x, which :mod:`aalr_jax.ood` uses to flag observations outside it.

The module is split once (``nnx.split``) into a static graph, cached per :class:`NetworkConfig`,
and a parameter pytree. :class:`RatioEstimator` carries ``(config, params, standardization)`` as a
JAX pytree whose config is static, so it passes straight through ``jax.jit`` and every function
downstream is pure: ``estimator.log_ratio(theta, x)``. This is the only module importing Flax.

:class:`RatioEnsemble` holds M estimators of one architecture, their arrays stacked on a leading
``(M,)`` axis, and averages their logits: ``log r̂(x|θ) = (1/M) Σ_m f_m(θ, x)`` (a geometric mean of
the ratios; Lakshminarayanan et al. 2017 for deep ensembles). Its ``embed`` returns
``(M, ..., num_features)``, which its ``head`` consumes, so it goes wherever an estimator goes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "ACTIVATIONS",
    "EMBEDDINGS",
    "NetworkConfig",
    "RatioEnsemble",
    "RatioEstimator",
    "Standardization",
    "init_estimator",
    "parameter_template",
    "standardization_from",
]

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """ELU as ``α (exp(x) − 1)`` for ``x ≤ 0``: within 1e-7 of ``jax.nn.elu``.

    ``jax.nn.elu`` calls ``expm1``, which is only more accurate relative to tiny outputs (|x| below
    float32's resolution of 1) and costs XLA on CPU several more operations per element, a sizeable
    share of the sampler's time (see benchmarks/README.md "Speed targets").
    """
    return jnp.where(x > 0, x, alpha * (jnp.exp(jnp.where(x > 0, 0.0, x)) - 1.0))


def selu(x: jax.Array) -> jax.Array:
    """SELU (Klambauer et al. 2017), ``λ · elu(x, α)`` with :func:`elu`'s cheaper exponential."""
    return _SELU_SCALE * elu(x, _SELU_ALPHA)


ACTIVATIONS = {
    "selu": selu,
    "elu": elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


class NetworkConfig(NamedTuple):
    """Static, JSON-serialisable description of the network (hashable: it keys the graph cache).

    ``theta_dim`` and ``x_shape`` may be left ``None`` in a config handed to
    :func:`aalr_jax.train.fit`, which takes them from the bank; every other use needs them.

    Attributes:
        theta_dim: d, the parameter dimension.
        x_shape: shape of one observation.
        hidden_features: widths of the head's hidden layers.
        activation: a key of :data:`ACTIVATIONS`.
        embedding: a key of :data:`EMBEDDINGS`.
        embedding_features: output width of a learned embedding (ignored by ``"flatten"``).
        theta_bound: ``b`` of the head's bounded θ input (see the module docstring); ``None``
            feeds ``z(θ)`` unbounded (estimator files without the key load that way).
        quadratic: add the learned quadratic terms in θ, ``θ̃ᵀ A u``, to the logit (see the module
            docstring). None (the default) leaves the choice to :func:`aalr_jax.train.fit`, which
            decides on held-out loss and stores True or False in the estimator's config; a network
            built from None directly (:func:`init_estimator`) has no terms. Estimator files
            without the key load without them.
    """

    theta_dim: int | None = None
    x_shape: tuple | None = None
    hidden_features: tuple = (128, 128, 128)
    activation: str = "selu"
    embedding: str = "flatten"
    embedding_features: int = 64
    theta_bound: float | None = 10.0
    quadratic: bool | None = None

    def validate(self) -> "NetworkConfig":
        """``self`` if every field is usable, else a ``ValueError`` naming the field."""
        if not _is_int(self.theta_dim) or self.theta_dim < 1:
            raise ValueError(f"theta_dim must be a positive integer, got {self.theta_dim!r}")
        if not isinstance(self.x_shape, tuple) or not all(_is_int(s) and s >= 1 for s in self.x_shape):
            raise ValueError(f"x_shape must be a tuple of positive integers, got {self.x_shape!r}")
        widths = self.hidden_features
        if not isinstance(widths, tuple) or not widths or not all(_is_int(h) and h >= 1 for h in widths):
            raise ValueError(f"hidden_features must be a non-empty tuple of positive widths, got {widths!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {sorted(EMBEDDINGS)}, got {self.embedding!r}")
        if not _is_int(self.embedding_features) or self.embedding_features < 1:
            raise ValueError(f"embedding_features must be a positive integer, got {self.embedding_features!r}")
        bound = self.theta_bound
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                  or not math.isfinite(bound) or bound <= 0):
            raise ValueError(f"theta_bound must be a positive finite number or None, got {bound!r}")
        if self.quadratic is not None and not isinstance(self.quadratic, bool):
            raise ValueError(f"quadratic must be True, False or None (fit chooses), got {self.quadratic!r}")
        return self


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Standardization(NamedTuple):
    """Statistics of the training bank kept with the estimator.

    ``theta_loc, theta_scale: (d,)`` and ``x_loc, x_scale: x_shape`` z-score the inputs;
    ``x_min, x_max: x_shape`` are the per-component range of the training x in raw units, read by
    :mod:`aalr_jax.ood` (``None`` for estimators saved without them).
    """

    theta_loc: jax.Array
    theta_scale: jax.Array
    x_loc: jax.Array
    x_scale: jax.Array
    x_min: jax.Array | None = None
    x_max: jax.Array | None = None


def _moments(a: jax.Array, name: str, min_scale: float) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of ``a (n, *shape)`` over axis 0, overflow-safe in float32.

    Each component is divided by the power of two ``2^e`` nearest above its largest magnitude
    before the sums (exact: it moves only the exponent), so the squares cannot overflow and the
    result equals the unscaled computation wherever that one is finite. A component whose
    standard deviation is at most ``min_scale`` times its largest magnitude (constant to float32
    precision) gets scale 1.
    """
    peak = jnp.max(jnp.abs(a), axis=0)
    _, exponent = jnp.frexp(peak)
    unit = jnp.ldexp(jnp.ones_like(peak), exponent)
    loc, scale = (a / unit).mean(0), (a / unit).std(0)
    loc, scale = loc * unit, scale * unit
    if not bool(jnp.all(jnp.isfinite(scale))):
        where = tuple(int(i) for i in jnp.argwhere(~jnp.isfinite(scale))[0])
        raise ValueError(f"{name} component {where} spreads beyond float32's range (its standard deviation "
                         "overflows); rescale it, e.g. divide it by a constant or take its logarithm")
    return loc, jnp.where(scale > min_scale * peak, scale, 1.0)


def standardization_from(theta: jax.Array, x: jax.Array, *, min_scale: float = 1e-6) -> Standardization:
    """z-scoring statistics and the range of x of a bank (float32, overflow-safe).

    Args:
        theta: ``(n, d)``.
        x: ``(n, *x_shape)``.
        min_scale: components whose standard deviation is at most ``min_scale`` times their
            largest magnitude count as constant and get scale 1.

    Returns:
        Mean and standard deviation over the leading axis of ``theta`` and ``x``, and the
        componentwise ``x_min`` and ``x_max``. Raises ``ValueError`` naming the component when a
        standard deviation exceeds float32's range.
    """
    theta, x = jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32)
    return Standardization(*_moments(theta, "theta", min_scale), *_moments(x, "x", min_scale),
                           x.min(0), x.max(0))


class Flatten(nnx.Module):
    """Identity embedding: ``(..., *x_shape) -> (..., prod(x_shape))`` (``num_features`` is ignored)."""

    def __init__(self, x_shape: tuple, *, num_features: int | None = None, rngs: nnx.Rngs):
        del num_features, rngs
        self.x_ndim = len(x_shape)
        self.num_features = math.prod(x_shape)

    def __call__(self, x):
        return x.reshape(x.shape[: x.ndim - self.x_ndim] + (self.num_features,))


def _layout(x_shape: tuple, spatial_ndim: int, name: str) -> tuple[tuple, int]:
    """``(spatial shape, channels)`` of one observation; a missing channel axis means 1 channel."""
    x_shape = tuple(int(s) for s in x_shape)
    if len(x_shape) == spatial_ndim:
        return x_shape, 1
    if len(x_shape) == spatial_ndim + 1:
        return x_shape[:-1], x_shape[-1]
    kind = "(H, W) or (H, W, C)" if spatial_ndim == 2 else "(T,) or (T, C)"
    raise ValueError(f"the {name!r} embedding takes x_shape {kind}, got {x_shape}")


def _pad_same(x, kernel: tuple):
    """Zero-pad the spatial axes of ``(b, *spatial, C)`` by ``(k - 1) / 2`` on both sides."""
    return jnp.pad(x, ((0, 0),) + tuple(((k - 1) // 2, (k - 1) // 2) for k in kernel) + ((0, 0),))


def _conv_dims(ndim: int) -> tuple:
    s = "HWD"[:ndim]
    return ("N" + s + "C", s + "IO", "N" + s + "C")


@jax.custom_vjp
def conv_same(x, w):
    """Stride-1 "SAME" convolution: ``x (b, *spatial, C)``, ``w (*kernel, C, O)`` (odd kernel) ->
    ``(b, *spatial, O)``, for 1 or 2 spatial axes.

    The values are those of ``lax.conv_general_dilated``. The custom VJP writes the input gradient
    as a forward convolution with the flipped, transposed kernel and the kernel gradient as one dot
    per kernel offset, ``dw[δ] = Σ_{b,s} x_pad[b, s + δ] ⊗ dy[b, s]``. Why: inside ``lax.scan``
    (where :func:`aalr_jax.train.build_trainer` runs its steps) XLA:CPU runs the convolutions of
    JAX's default transpose rules an order of magnitude slower than outside, while this rule runs
    at the unrolled speed (``benchmarks/embedding_throughput.py``). Reverse mode only: forward-mode derivatives (``jvp``)
    with respect to ``x`` or ``w`` are not defined; none is needed for θ, which enters the head only.
    """
    return jax.lax.conv_general_dilated(x, w, (1,) * (x.ndim - 2), "SAME", dimension_numbers=_conv_dims(x.ndim - 2))


def _conv_same_fwd(x, w):
    return conv_same(x, w), (x, w)


def _conv_same_bwd(residuals, dy):
    x, w = residuals
    kernel, spatial = w.shape[:-2], x.shape[1:-1]
    w_flipped = jnp.swapaxes(jnp.flip(w, tuple(range(len(kernel)))), -1, -2)
    dx = conv_same(dy, w_flipped)
    xp = _pad_same(x, kernel)
    dw = jnp.stack(
        [
            jnp.tensordot(xp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, spatial))], dy,
                          axes=(tuple(range(x.ndim - 1)), tuple(range(x.ndim - 1))))
            for offset in itertools.product(*(range(k) for k in kernel))
        ]
    ).reshape(w.shape)
    return dx, dw


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


class Conv(nnx.Module):
    """Stride-1 "SAME" convolution layer with bias over channels-last inputs (see :func:`conv_same`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, spatial_ndim: int, *, rngs: nnx.Rngs):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        shape = (kernel_size,) * spatial_ndim + (in_channels, out_channels)
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_channels,)))

    def __call__(self, h):
        return conv_same(h, self.kernel[...]) + self.bias[...]


class _ConvEmbedding(nnx.Module):
    """Shared plumbing of the convolutional embeddings.

    ``(..., *x_shape)`` is reshaped to ``(b, *spatial, C)`` (channels last, batch dims flattened),
    run through ``self.body``, flattened and mapped linearly to ``(..., num_features)``.
    Subclasses set ``spatial_ndim`` (2: images, 1: series), call :meth:`_setup` from ``__init__``
    (it builds that linear map and returns the input channels) and define ``body``.
    """

    spatial_ndim = 2

    def _setup(self, x_shape: tuple, num_features: int, num_downsamplings: int, out_channels: int, rngs):
        self.x_ndim = len(x_shape)
        self.spatial, self.in_channels = _layout(x_shape, self.spatial_ndim, type(self).__name__)
        out_spatial = list(self.spatial)
        for _ in range(num_downsamplings):  # SAME padding, stride 2: ceil(s / 2)
            out_spatial = [-(-s // 2) for s in out_spatial]
        self.proj = nnx.Linear(math.prod(out_spatial) * out_channels, num_features, rngs=rngs)
        self.num_features = num_features
        return self.in_channels

    def body(self, h):
        raise NotImplementedError

    def __call__(self, x):
        batch = x.shape[: x.ndim - self.x_ndim]
        h = x.reshape((-1,) + self.spatial + (self.in_channels,))
        h = self.body(h)
        return self.proj(h.reshape(h.shape[0], -1)).reshape(batch + (self.num_features,))


def _downsample(h, spatial_ndim: int):
    """2× average pooling over the spatial axes of ``(b, *spatial, C)`` (SAME padding)."""
    window = (2,) * spatial_ndim
    return nnx.avg_pool(h, window, strides=window, padding="SAME")


class CNN(_ConvEmbedding):
    """Plain CNN for images ``(H, W[, C])``: per stage ``conv k×k -> SiLU -> 2× avg-pool``.

    Output ``(..., num_features)`` from a linear map of the last, ``ceil(H/2^s) × ceil(W/2^s)``,
    feature map (flattened, so positions are kept).
    """

    spatial_ndim = 2
    kernel_size = 3

    def __init__(self, x_shape: tuple, *, num_features: int = 64, channels: tuple = (16, 32, 64), rngs: nnx.Rngs):
        c = self._setup(x_shape, num_features, len(channels), channels[-1], rngs)
        widths = (c,) + tuple(channels)
        k, nd = self.kernel_size, self.spatial_ndim
        self.convs = nnx.List([Conv(a, b, k, nd, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])

    def body(self, h):
        for conv in self.convs:
            h = _downsample(jax.nn.silu(conv(h)), self.spatial_ndim)
        return h


class Conv1D(CNN):
    """1-D CNN for series ``(T[, C])``: per stage ``conv 5 -> SiLU -> 2× avg-pool``."""

    spatial_ndim = 1
    kernel_size = 5


class ResidualBlock(nnx.Module):
    """Pre-activation residual block: ``h + conv(σ(GN(conv(σ(GN(h))))))``, shape preserved."""

    def __init__(self, channels: int, spatial_ndim: int, kernel_size: int, *, rngs: nnx.Rngs):
        groups = math.gcd(channels, 8)
        self.norm1 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.conv1 = Conv(channels, channels, kernel_size, spatial_ndim, rngs=rngs)
        self.norm2 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.conv2 = Conv(channels, channels, kernel_size, spatial_ndim, rngs=rngs)

    def __call__(self, h):
        r = self.conv1(jax.nn.silu(self.norm1(h)))
        return h + self.conv2(jax.nn.silu(self.norm2(r)))


class ResNet(_ConvEmbedding):
    """ResNet-style embedding for images ``(H, W[, C])`` (He et al. 2016, pre-activation form).

    ``stem conv -> 2× avg-pool -> [residual block × blocks_per_stage, conv to the next width, 2×
    avg-pool] per stage -> GroupNorm -> SiLU -> flatten -> linear``: stage ``i`` runs at resolution
    ``/2^(i+1)`` with ``channels[i]`` channels; the last map is ``/2^len(channels)``, as in
    :class:`CNN`. GroupNorm only: the output for one example never depends on others.
    """

    spatial_ndim = 2
    kernel_size = 3

    def __init__(
        self,
        x_shape: tuple,
        *,
        num_features: int = 64,
        channels: tuple = (16, 32, 64),
        blocks_per_stage: int = 1,
        rngs: nnx.Rngs,
    ):
        c = self._setup(x_shape, num_features, len(channels), channels[-1], rngs)
        nd, k = self.spatial_ndim, self.kernel_size
        self.stem = Conv(c, channels[0], k, nd, rngs=rngs)
        self.stages = nnx.List(
            [
                nnx.List([ResidualBlock(width, nd, k, rngs=rngs) for _ in range(blocks_per_stage)])
                for width in channels
            ]
        )
        self.downs = nnx.List([Conv(a, b, k, nd, rngs=rngs) for a, b in zip(channels[:-1], channels[1:])])
        self.norm = nnx.GroupNorm(channels[-1], num_groups=math.gcd(channels[-1], 8), rngs=rngs)

    def body(self, h):
        h = _downsample(self.stem(h), self.spatial_ndim)
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                h = block(h)
            if i < len(self.downs):
                h = _downsample(self.downs[i](h), self.spatial_ndim)
        return jax.nn.silu(self.norm(h))


class ResNet1D(ResNet):
    """ResNet-style embedding for series ``(T[, C])`` (kernel 5)."""

    spatial_ndim = 1
    kernel_size = 5


#: name -> embedding class, built as ``cls(x_shape, num_features=config.embedding_features, rngs=rngs)``;
#: the instance has an int attribute ``num_features`` and maps ``(..., *x_shape) -> (..., num_features)``.
EMBEDDINGS = {"flatten": Flatten, "cnn": CNN, "resnet": ResNet, "conv1d": Conv1D, "resnet1d": ResNet1D}


class MLP(nnx.Module):
    """Fully connected layers with an activation between them and a linear scalar output."""

    def __init__(self, in_features: int, hidden: tuple, activation: str, *, rngs: nnx.Rngs):
        widths = (in_features,) + tuple(hidden)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.out = nnx.Linear(widths[-1], 1, rngs=rngs)
        self.activation = activation

    def __call__(self, h):
        act = ACTIVATIONS[self.activation]
        for layer in self.layers:
            h = act(layer(h))
        return self.out(h)[..., 0]


class RatioNetwork(nnx.Module):
    """``embed(z(x)) -> features``; ``head(z(θ), features) -> logit``."""

    def __init__(self, config: NetworkConfig, *, rngs: nnx.Rngs):
        self.embedding = EMBEDDINGS[config.embedding](
            tuple(config.x_shape), num_features=config.embedding_features, rngs=rngs
        )
        self.head = MLP(
            config.theta_dim + self.embedding.num_features,
            tuple(config.hidden_features),
            config.activation,
            rngs=rngs,
        )
        self.quadratic = bool(config.quadratic)
        if config.quadratic:  # A of θᵀ A u, zero at first: training starts from the plain MLP
            p = config.theta_dim + self.embedding.num_features
            self.quad = nnx.Linear(p, config.theta_dim, use_bias=False, kernel_init=nnx.initializers.zeros,
                                   rngs=rngs)

    def embed(self, x):
        return self.embedding(x)

    def logit(self, theta, features):
        batch = jnp.broadcast_shapes(theta.shape[:-1], features.shape[:-1])
        theta = jnp.broadcast_to(theta, batch + theta.shape[-1:])
        features = jnp.broadcast_to(features, batch + features.shape[-1:])
        u = jnp.concatenate([theta, features], axis=-1)
        logit = self.head(u)
        if self.quadratic:
            logit = logit + jnp.sum(theta * self.quad(u), axis=-1)
        return logit


@functools.lru_cache(maxsize=64)
def _abstract(config: NetworkConfig) -> tuple:
    """``(graphdef, parameter state with ShapeDtypeStruct leaves)`` of ``config``; nothing is computed."""
    return nnx.split(nnx.eval_shape(lambda: RatioNetwork(config, rngs=nnx.Rngs(0))))


def _graphdef(config: NetworkConfig):
    return _abstract(config)[0]


def parameter_template(config: NetworkConfig) -> nnx.State:
    """The parameter pytree of ``config`` with ``jax.ShapeDtypeStruct`` leaves: the names, shapes
    and dtypes that :func:`init_estimator` produces, for readers of saved estimators."""
    return _abstract(config.validate())[1]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["params", "standardization"],
    meta_fields=["config"],
)
@dataclasses.dataclass(frozen=True)
class RatioEstimator:
    """A ratio estimator as a pytree: static ``config``, array ``params`` and ``standardization``.

    Shapes broadcast over leading dimensions: one θ with many x, many θ with one x, or both.
    """

    config: NetworkConfig
    params: nnx.State
    standardization: Standardization

    def _network(self) -> RatioNetwork:
        return nnx.merge(_graphdef(self.config), self.params)

    def embed(self, x: jax.Array) -> jax.Array:
        """Features of raw observations: ``(..., *x_shape) -> (..., num_features)``."""
        s = self.standardization
        return self._network().embed((jnp.asarray(x, jnp.float32) - s.x_loc) / s.x_scale)

    def head(self, theta: jax.Array, features: jax.Array) -> jax.Array:
        """Logit from raw θ ``(..., d)`` and features ``(..., num_features)``: ``(...,)``."""
        s = self.standardization
        z = (jnp.asarray(theta, jnp.float32) - s.theta_loc) / s.theta_scale
        if self.config.theta_bound is not None:
            z = z * jax.lax.rsqrt(1.0 + (z / self.config.theta_bound) ** 2)
        return self._network().logit(z, features)

    def log_ratio(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        """``log r̂(x|θ)`` for θ ``(..., d)`` and x ``(..., *x_shape)``: ``(...,)``."""
        return self.head(theta, self.embed(x))

    @property
    def theta_dim(self) -> int:
        return self.config.theta_dim

    @property
    def x_shape(self) -> tuple:
        return tuple(self.config.x_shape)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["members"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class RatioEnsemble:
    """M ratio estimators of one ``config`` whose logits are averaged.

    ``members`` is one :class:`RatioEstimator` whose ``params`` and ``standardization`` carry a
    leading ``(M,)`` axis; :meth:`stack` builds it from a list of estimators.
    """

    members: RatioEstimator

    @classmethod
    def stack(cls, estimators) -> "RatioEnsemble":
        """An ensemble of ``estimators`` (a non-empty sequence of same-config :class:`RatioEstimator`)."""
        estimators = list(estimators)
        if not estimators or not all(isinstance(e, RatioEstimator) for e in estimators):
            raise TypeError("estimators must be a non-empty sequence of RatioEstimator")
        configs = {e.config for e in estimators}
        if len(configs) != 1:
            raise ValueError(f"ensemble members must share one network config, got {sorted(map(str, configs))}")
        return cls(jax.tree.map(lambda *a: jnp.stack(a), *estimators))

    @property
    def num_members(self) -> int:
        return int(jax.tree.leaves(self.members.standardization)[0].shape[0])

    def member(self, i: int) -> RatioEstimator:
        """Member ``i`` as a plain :class:`RatioEstimator`."""
        return jax.tree.map(lambda a: a[i], self.members)

    def embed(self, x: jax.Array) -> jax.Array:
        """Every member's features: ``(..., *x_shape) -> (M, ..., num_features)``."""
        return jax.vmap(lambda m: m.embed(x))(self.members)

    def head(self, theta: jax.Array, features: jax.Array) -> jax.Array:
        """Mean member logit from raw θ ``(..., d)`` and features ``(M, ..., num_features)``: ``(...,)``."""
        return jax.vmap(lambda m, f: m.head(theta, f))(self.members, features).mean(0)

    def log_ratio(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        """``(1/M) Σ_m f_m(θ, x)`` for θ ``(..., d)`` and x ``(..., *x_shape)``: ``(...,)``."""
        return self.head(theta, self.embed(x))

    @property
    def config(self) -> NetworkConfig:
        return self.members.config

    @property
    def theta_dim(self) -> int:
        return self.members.theta_dim

    @property
    def x_shape(self) -> tuple:
        return self.members.x_shape


def init_estimator(rng_key: jax.Array, config: NetworkConfig, standardization: Standardization) -> RatioEstimator:
    """A freshly initialised estimator (weights drawn from ``rng_key``); ``quadratic=None`` in
    ``config`` builds it without the quadratic terms (its config then says False)."""
    config = config.validate()
    config = config._replace(quadratic=bool(config.quadratic))
    seed = jax.random.randint(rng_key, (), 0, 2**31 - 1)
    _, params = nnx.split(RatioNetwork(config, rngs=nnx.Rngs(params=int(seed))))
    return RatioEstimator(config, params, standardization)
