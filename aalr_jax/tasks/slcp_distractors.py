r"""SLCP with distractors (sbibm v1.1.0, Lueckmann et al. 2021; SLCP after Papamakarios et al. 2019).

Definition, θ ∈ [-3, 3]^5 and x ∈ R^100:

* prior ``θ ~ U(-3, 3)^5`` (as :mod:`aalr_jax.tasks.slcp`);
* simulator: the 8 SLCP values ``s = (x_{1,1}, x_{1,2}, ..., x_{4,2})`` (4 i.i.d. 2-D Gaussian draws
  with mean ``(θ_1, θ_2)``, standard deviations ``θ_3², θ_4²``, correlation ``tanh θ_5``, ``+10⁻⁶``
  on the covariance diagonal; see :mod:`aalr_jax.tasks.slcp`), then 92 distractors ``u`` drawn,
  independently of θ, from a fixed mixture of 20 equally weighted multivariate Student-t
  distributions with 2 degrees of freedom,

  .. math::  u = μ_c + L_c z / \sqrt{w},\quad c \sim U\{1..20\},\ z \sim N(0, I_{92}),\ w \sim χ^2_2/2,

  and the output is the fixed permutation ``x = concat(s, u)[π]``, i.e. ``x_j = concat(s, u)_{π_j}``.
  ``μ_c, L_c`` and ``π`` are sbibm's (``gmm.torch``, ``permutation_idx.torch``), stored as NumPy in
  ``aalr_jax/tasks/data/slcp_distractors.npz`` (see the README there).

Likelihood. ``p(x|θ) = p_slcp(s|θ) · p_mix(u)`` with ``(s, u)`` read back through ``π⁻¹``.
:func:`log_likelihood` returns ``log p_slcp(s|θ)`` only, i.e. the exact log-likelihood up to the
θ-independent term ``log p_mix(u)``: the posterior, likelihood ratios and every sampler are
unaffected. The omitted term is not computable in float32: the Student-t scale factors ``L_c``
have condition numbers near 10¹⁵, and rounding a float64 distractor vector to float32 moves
``log p_mix(u)`` by about 10³ nats.

Reference posterior. The posterior is SLCP's for the 8 relevant values, so
:func:`reference_posterior` is :func:`aalr_jax.tasks.slcp.reference_posterior` applied to them:
exact-likelihood MCMC (:func:`aalr_jax.sampling.sample_posterior` with an ``ExactLikelihood``),
then independent random signs of θ_3 and θ_4 (the posterior is exactly symmetric under
``θ_3 ↦ -θ_3`` and ``θ_4 ↦ -θ_4``, so the four mode weights are exact). sbibm's reference uses
SIR with 10⁸ prior simulations, then rejection sampling from a flow fitted to them.

Parameters outside the prior box. As SLCP: the simulator and :func:`log_likelihood` are
defined for every real θ; θ_3 = 0 or θ_4 = 0 give a near-singular covariance (``+10⁻⁶``). The
prior's ``log_prob`` is ``-inf`` outside the box. A θ of the wrong shape raises ``ValueError``.

Default observation: sbibm observation 1 of ``slcp_distractors`` (``observation_distractors.csv``),
whose relevant values are sbibm's SLCP observation 1, from ``θ = (-2.8581212, -0.44451332,
2.9473476, 1.2396116, 2.9712725)``. Numbers copied from ``sbibm/tasks/slcp/files/
num_observation_1`` (sbibm is MIT-licensed, © 2020 Lueckmann, Boelts, Greenberg, Gonçalves, Macke).
Note that this θ and observation differ from :mod:`aalr_jax.tasks.slcp`'s default (the paper's θ*).

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import functools
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks import slcp
from aalr_jax.tasks._common import check_theta
from aalr_jax.tasks.base import Task

__all__ = ["make", "simulator", "log_likelihood", "reference_posterior", "relevant", "constants"]

NUM_RELEVANT = 8
NUM_DISTRACTORS = 92
DIM_X = NUM_RELEVANT + NUM_DISTRACTORS

# sbibm v1.1.0, slcp_distractors, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array([-2.8581212, -0.44451332, 2.9473476, 1.2396116, 2.9712725], dtype=np.float32)
OBSERVATION = np.array([
    -60.45943, 122.823166, -67.01942, -12.581524, -22.893969, 32.517273, 67.27135, -115.6545,
    385.10355, 35.331844, -78.32788, -20.674372, -81.68816, 74.251755, -90.91423, -61.497875,
    -1.2343777, 29.395075, -42.870472, 19.187525, 3.1666663, -1.9067793, 2.3718784, 9.931435,
    -27.483328, -44.683464, -75.65134, -88.41149, 78.22429, -19.491358, -87.48924, 186.3353,
    -2.0567365, 0.49947417, 9.588209, -62.24843, -37.90078, -111.08592, 23.009779, -162.13936,
    19.562742, 80.61907, -10.436423, 17.018816, -112.77521, 80.616554, -27.125841, 2.8041465,
    -79.734665, 115.96121, 2.7012832, -67.9851, -47.83357, 54.03682, 14.431202, -112.27578,
    -12.678788, 69.45191, -62.345306, -18.428486, 83.55713, 167.05466, 36.280495, -10.09448,
    -112.102516, -6.868362, 12.451546, 1.7136912, -48.29132, -30.129011, 177.97679, 118.24041,
    -33.984577, -21.839827, 95.868256, -22.492027, -151.0377, 24.236076, 46.813725, 181.59402,
    -110.25067, 36.143417, -113.94097, 48.485554, -53.97667, -2.9170897, 58.22745, 153.59654,
    -121.075356, 128.1089, -0.09735, 61.27503, 62.488945, -8.37021, -10.590089, 49.07796,
    -35.693996, 146.29234, -45.086143, 5.237772,
], dtype=np.float32)  # fmt: skip


@functools.lru_cache(maxsize=None)
def constants() -> dict:
    """sbibm's fixed arrays (NumPy, read once from the package data):

    ``mixture_probs (20,)``, ``component_df (20,)``, ``component_loc (20, 92)``,
    ``component_scale_tril (20, 92, 92)``, ``permutation_idx (100,)`` and its inverse
    ``inverse_permutation (100,)``.
    """
    path = importlib.resources.files("aalr_jax.tasks").joinpath("data/slcp_distractors.npz")
    with path.open("rb") as f, np.load(f) as npz:
        out = {k: np.asarray(npz[k]) for k in npz.files}
    out["inverse_permutation"] = np.argsort(out["permutation_idx"])
    return out


def relevant(x: jax.Array) -> jax.Array:
    """The 8 SLCP values ``(..., 8)`` (point by point, as :mod:`slcp`) of ``x: (..., 100)``."""
    x = jnp.asarray(x)
    if x.shape[-1:] != (DIM_X,):
        raise ValueError(f"slcp_distractors: x must have shape (..., {DIM_X}), got {x.shape}")
    return x[..., constants()["inverse_permutation"][:NUM_RELEVANT]]


def _distractors(rng_key: jax.Array) -> jax.Array:
    """One draw ``(92,)`` of the Student-t mixture."""
    c = constants()
    key_c, key_z, key_w = jax.random.split(rng_key, 3)
    k = jax.random.choice(key_c, c["mixture_probs"].shape[0], p=jnp.asarray(c["mixture_probs"]))
    df = jnp.asarray(c["component_df"], jnp.float32)[k]
    loc = jnp.asarray(c["component_loc"], jnp.float32)[k]
    tril = jnp.asarray(c["component_scale_tril"], jnp.float32)[k]
    z = jax.random.normal(key_z, (NUM_DISTRACTORS,))
    w = 2.0 * jax.random.gamma(key_w, df / 2.0) / df  # χ²_df / df
    return loc + (tril @ z) * jax.lax.rsqrt(w)


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (100,)`` for ``theta: (5,)``: SLCP values and distractors, permuted."""
    theta = check_theta(theta, 5, "slcp_distractors")
    key_s, key_u = jax.random.split(rng_key)
    both = jnp.concatenate([slcp.simulator(key_s, theta), _distractors(key_u)])
    return both[constants()["permutation_idx"]]


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``log p_slcp(s|θ)`` for ``theta: (5,)``, ``x: (100,)``: exact up to a θ-independent term."""
    return slcp.log_likelihood(check_theta(theta, 5, "slcp_distractors"), relevant(x))


_PRIOR = box_uniform(-3.0, 3.0 * np.ones(5))


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int, **kwargs) -> jax.Array:
    """Reference samples ``(num_samples, 5)`` for ``x_obs: (100,)``.

    :func:`aalr_jax.tasks.slcp.reference_posterior` (exact-likelihood MCMC, then random signs of
    θ_3 and θ_4) on the 8 relevant values; keyword arguments (``num_chains``, ``num_warmup``,
    ``thin``) go to it.
    """
    return slcp.reference_posterior(rng_key, relevant(x_obs), num_samples, **kwargs)


def make() -> Task:
    """The sbibm SLCP-with-distractors task with sbibm observation 1 as default observation."""
    return Task(
        name="slcp_distractors",
        prior=_PRIOR,
        simulator=simulator,
        x_shape=(DIM_X,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(5)),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "SLCP with distractors (sbibm v1.1.0): θ ~ U(-3,3)^5; x ∈ R^100 is SLCP's 8 values "
            "and 92 θ-independent draws of a 20-component Student-t (df 2) mixture, under a fixed "
            "permutation (sbibm's constants). log_likelihood omits the θ-independent distractor "
            "density. Reference: SLCP's (exact-likelihood MCMC + sign symmetrisation). Default "
            "observation: sbibm observation 1."
        ),
    )
