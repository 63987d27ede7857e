r"""Detector calibration: infer the offset of a tracker along the beam axis from hit maps.

After the particle-physics experiment of Hermans et al. (2020), with a deliberately **simplified**
event generator written in JAX (no Pythia, no magnetic field, no material): it keeps what makes the
offset identifiable (two back-to-back jets of straight tracks from a displaced vertex) and nothing
more. Units: centimetres for lengths, radians for angles.

**Event generator** (one e⁺e⁻ collision at the Z pole, two-jet topology e⁺e⁻ → q q̄):

* thrust axis: ``cos ϑ`` with density ``(3/8)(1 + cos² ϑ)`` on ``[-1, 1]`` (the vector-coupling
  angular distribution, forward–backward asymmetry neglected), drawn exactly by inverse CDF
  (Cardano's root of ``c³ + 3c + 4 - 8u = 0``), and ``φ ~ U(0, 2π)``; the two jets point along
  ``±`` this axis, i.e. at pseudorapidity ``±η_T`` with ``η_T = artanh(cos ϑ)`` and azimuths
  ``φ, φ + π``;
* tracks: each jet has ``1 + Binomial(3, ½)`` charged tracks (2 to 8 per collision) whose
  ``(η, φ)`` are the jet's plus ``N(0, 0.1²)`` each;
* vertex: ``z_v = θ + N(0, σ_z²)`` with beam-spot length ``σ_z`` = 2 cm, where θ is the
  **offset of the interaction point from the detector centre along the beam axis** (equivalently,
  the detector is displaced by ``-θ``); prior ``θ ~ U(-30, 30)`` cm.

**Detector.** One cylindrical tracking layer of radius ``R`` = 50 cm, coaxial with the beam. A
straight track from ``(0, 0, z_v)`` with pseudorapidity η crosses it at
``z = z_v + R sinh η``, i.e. at detector pseudorapidity and azimuth

.. math::  η_{det} = \operatorname{arsinh}(z_v / R + \sinh η),\qquad φ_{det} = φ .

Hits with ``|η_det| > η_max`` = 2.5 leave through the end caps (barrel half-length
``R sinh η_max`` ≈ 3 m) and are lost; each hit is recorded with efficiency 0.95; every cell also
fires on its own with probability 10⁻³ (noise). One collision is a **binary hit map**
``x ∈ {0, 1}^{bins × bins}`` (default 32 × 32): rows are ``η_det`` bins on ``[-η_max, η_max]``,
columns ``φ_det`` bins on ``[0, 2π)``.

**Observation: a set of per-collision maps, used i.i.d.** An observation is ``n`` collisions
recorded by the same detector, ``(n, bins, bins)``, combined as ``Σ_i log r̂(x_i | θ)``
(``sample_posterior(..., iid=True)``). Why not one map accumulating all collisions: the two jets
of one collision are back to back, so their hits sit at ``z_v ± R sinh η_T`` (up to the jet
spread) and their mean locates the vertex in a single collision. Summing maps keeps only the
marginal η distribution of hits (whose shift with θ still identifies it, but weakly) and throws
this pairing away; per-collision maps keep it, the per-collision estimator is amortised over any
``n``, and the posterior narrows as ``1/√n``. (A binary map accumulating many collisions would
also saturate.) The task's default observation is one collision (``x_shape = (bins, bins)``) at
θ = 10 cm; :func:`observation_set` gives the default set of 32 collisions (seed 1).

The likelihood is intractable (``log_likelihood = reference_posterior = None``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks._common import iid_set
from aalr_jax.tasks.base import Task

__all__ = [
    "Detector",
    "TRUE_OFFSET",
    "Tracks",
    "generate_tracks",
    "hit_map",
    "make",
    "observation_set",
    "sample_cos_theta",
    "simulator",
]

TRUE_OFFSET = 10.0
PRIOR_LOW, PRIOR_HIGH = -30.0, 30.0
TRACKS_PER_JET = 4  # at most; the first is always present
JET_SPREAD = 0.1
BEAM_SPOT = 2.0


class Detector(NamedTuple):
    """Static detector settings: map bins per axis, layer radius (cm), η acceptance, efficiency, noise."""

    bins: int = 32
    radius: float = 50.0
    eta_max: float = 2.5
    efficiency: float = 0.95
    noise_occupancy: float = 1e-3


class Tracks(NamedTuple):
    """Tracks of one collision in the interaction-point frame: ``eta, phi, present: (8,)``."""

    eta: jax.Array
    phi: jax.Array
    present: jax.Array


def sample_cos_theta(rng_key: jax.Array, shape: tuple = ()) -> jax.Array:
    """``cos ϑ`` with density ``(3/8)(1 + cos² ϑ)`` on [-1, 1] by inverse CDF (exact)."""
    u = jax.random.uniform(rng_key, shape)
    q = 4.0 - 8.0 * u  # F(c) = (c³ + 3c + 4)/8 = u  <=>  c³ + 3c + q = 0
    root = jnp.sqrt(q**2 / 4.0 + 1.0)
    return jnp.clip(jnp.cbrt(-q / 2.0 + root) + jnp.cbrt(-q / 2.0 - root), -1.0, 1.0)


def generate_tracks(rng_key: jax.Array) -> Tracks:
    """One simplified two-jet e⁺e⁻ collision (see the module docstring)."""
    key_c, key_phi, key_n, key_eta, key_dphi = jax.random.split(rng_key, 5)
    cos_t = jnp.clip(sample_cos_theta(key_c), -1.0 + 1e-6, 1.0 - 1e-6)
    eta_t = jnp.arctanh(cos_t)
    phi_t = jax.random.uniform(key_phi, (), maxval=2 * math.pi)
    jet_eta = jnp.repeat(jnp.stack([eta_t, -eta_t]), TRACKS_PER_JET)
    jet_phi = jnp.repeat(jnp.stack([phi_t, phi_t + math.pi]), TRACKS_PER_JET)
    n = 2 * TRACKS_PER_JET
    present = jax.random.bernoulli(key_n, 0.5, (n,)) | (jnp.arange(n) % TRACKS_PER_JET == 0)
    eta = jet_eta + JET_SPREAD * jax.random.normal(key_eta, (n,))
    phi = jnp.mod(jet_phi + JET_SPREAD * jax.random.normal(key_dphi, (n,)), 2 * math.pi)
    return Tracks(eta, phi, present)


def hit_map(rng_key: jax.Array, tracks: Tracks, vertex_z, detector: Detector = Detector()) -> jax.Array:
    """Binary ``(bins, bins)`` map (rows η_det, columns φ) of the tracks from vertex ``(0, 0, vertex_z)``."""
    key_eff, key_noise = jax.random.split(rng_key)
    nb = detector.bins
    eta_det = jnp.arcsinh(vertex_z / detector.radius + jnp.sinh(tracks.eta))
    row = jnp.floor((eta_det + detector.eta_max) / (2 * detector.eta_max) * nb).astype(jnp.int32)
    col = jnp.clip(jnp.floor(tracks.phi / (2 * math.pi) * nb).astype(jnp.int32), 0, nb - 1)
    seen = jax.random.bernoulli(key_eff, detector.efficiency, tracks.eta.shape)
    hit = tracks.present & seen & (row >= 0) & (row < nb)
    cell = jnp.where(hit, row * nb + col, nb * nb)  # nb*nb: dropped
    image = jnp.zeros(nb * nb, jnp.float32).at[cell].max(1.0, mode="drop").reshape(nb, nb)
    noise = jax.random.bernoulli(key_noise, detector.noise_occupancy, (nb, nb))
    return jnp.maximum(image, noise.astype(jnp.float32))


def simulator(rng_key: jax.Array, theta: jax.Array, detector: Detector = Detector()) -> jax.Array:
    """Hit map ``(bins, bins)`` of one collision for ``theta = (offset,)`` in cm."""
    key_tracks, key_vertex, key_hits = jax.random.split(rng_key, 3)
    vertex_z = jnp.asarray(theta)[0] + BEAM_SPOT * jax.random.normal(key_vertex)
    return hit_map(key_hits, generate_tracks(key_tracks), vertex_z, detector)


def observation_set(
    num_collisions: int = 32, seed: int = 1, *, offset: float = TRUE_OFFSET, bins: int = 32
) -> jax.Array:
    """``(num_collisions, bins, bins)`` hit maps at one offset: an i.i.d. set for ``iid=True``.

    Deterministic in ``seed``; collision ``i`` uses ``fold_in(PRNGKey(seed), i)``.
    """
    return iid_set(simulator, jnp.full((1,), offset, jnp.float32), Detector(bins=bins), num_collisions, seed)


def make(bins: int = 32) -> Task:
    """The detector-calibration task on ``bins × bins`` hit maps (32 by default, 16 for CI)."""
    detector = Detector(bins=int(bins))
    return Task(
        name="detector",
        prior=box_uniform(PRIOR_LOW, PRIOR_HIGH),
        simulator=functools.partial(simulator, detector=detector),
        x_shape=(detector.bins, detector.bins),
        parameter_labels=("offset_cm",),
        true_theta=np.array([TRUE_OFFSET], np.float32),
        observation_seed=0,
        description=(
            "Detector calibration (simplified two-jet e+e- generator, no Pythia): θ = offset of the "
            "interaction point along the beam axis, U(-30, 30) cm; x = binary (η, φ) hit map of one "
            "collision on a cylindrical layer (R = 50 cm). Observations are sets of collisions: "
            "observation_set(n, seed) with sample_posterior(..., iid=True)."
        ),
    )
