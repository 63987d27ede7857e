r"""Strong gravitational lensing: infer the Einstein radius from an image (Hermans et al. 2020, §5).

One simulation is a ``size × size`` image (default 32 × 32) of a lensed galaxy, in counts per
pixel. Angles are in arcseconds; the field of view is ``fov`` = 8″ wide, centred on the origin,
pixel scale ``s = fov / size``; pixel ``[i, j]`` (row, column) is centred at
``(x, y) = ((j + ½ - size/2) s, (i + ½ - size/2) s)``.

**Lens** (parameter of interest: the Einstein radius ``θ_E``). A singular isothermal ellipsoid
(SIE) of axis ratio ``q``, position angle ``φ`` and centre ``(x_0, y_0)``. In the lens frame
(rotated by ``φ``, centred), with ``b = θ_E √q`` and ``ψ = √(q² x² + y²)``,

.. math::  κ = \frac{b}{2ψ},\quad
           α_x = \frac{b}{\sqrt{1-q^2}} \arctan\frac{\sqrt{1-q^2}\,x}{ψ},\quad
           α_y = \frac{b}{\sqrt{1-q^2}} \operatorname{artanh}\frac{\sqrt{1-q^2}\,y}{ψ}

(Kormann et al. 1994; Keeton 2001; ``∇·α = 2κ`` is checked in the tests). With this ``b`` the
tangential critical curve, the isodensity ellipse ``κ = ½``, encloses the area ``π θ_E²`` for every ``q``; ``q → 1`` is the singular isothermal sphere ``α = θ_E x/|x|``, used
where ``1 - q² < 10⁻⁴``. External shear ``(γ_1, γ_2)`` adds ``α = (γ_1 x + γ_2 y, γ_2 x - γ_1 y)``
about the lens centre. The lens equation maps each image-plane point to the source plane:
``β = x - α(x)``.

**Source.** An elliptical Sérsic profile of amplitude ``I_e`` (counts per pixel at ``R_e``),
effective radius ``R_e``, index ``n``, axis ratio ``q_s``, angle ``φ_s`` and centre ``β_0``:

.. math::  I(β) = I_e \exp\bigl(-b_n [(R/R_e)^{1/n} - 1]\bigr),\quad R = \sqrt{q_s u^2 + v^2/q_s},

``(u, v)`` the rotated offsets from ``β_0`` and ``b_n = 2n - 1/3 + 4/(405 n) + 46/(25515 n²)``
(Ciotti & Bertin 1999). Lensing conserves surface brightness, so the noiseless lensed image is
``I(β(x))``, averaged over ``supersample²`` sub-pixels per pixel. No lens light.

**Instrument.** A circular Gaussian PSF of ``psf_fwhm`` = 0.4″ applied as ``K · image · Kᵀ`` with
``K`` the normalised circulant 1-D Gaussian (periodic boundaries), which conserves the total flux
exactly; a flat sky ``B`` = 10 counts per pixel; noise: the Gaussian approximation of Poisson
counts, ``x = m + √m · ε``, ``ε ~ N(0, 1)``, with ``m = PSF ⊗ I(β(·)) + B`` (variance = counts).

**Priors.** ``θ_E ~ U(0.5, 3.0)″`` is the task's θ (1-D). The nuisance parameters are drawn
inside the simulator, so a ratio estimator trained on ``(θ_E, x)`` marginalises them implicitly:

==========================  ==========================================
lens axis ratio ``q``       U(0.6, 1.0)
lens angle ``φ``            U(0, π)
lens centre ``x_0, y_0``    N(0, 0.1²)″ each
external shear ``γ_1, γ_2`` N(0, 0.05²) each
source centre ``β_0``       U(-0.4, 0.4)″ per axis
source ``R_e``              U(0.1, 0.4)″
Sérsic index ``n``          U(0.5, 3.0)
source ``q_s``, ``φ_s``     U(0.5, 1.0), U(0, π)
amplitude ``I_e``           log-uniform on [10, 50] counts per pixel
==========================  ==========================================

**Observations.** The task's default observation is one image at ``θ_E = 1.5″`` (seed 0,
regenerated deterministically). A population of lenses sharing ``θ_E`` but not the nuisance
parameters is an i.i.d. set: :func:`population_observation` returns ``(n, size, size)`` images
(default 9, as in the paper), sampled with ``sample_posterior(..., iid=True)``, i.e.
``log p(θ_E | X) = log p(θ_E) + Σ_i log r̂(x_i | θ_E)``.

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
    "Nuisance",
    "Optics",
    "TRUE_EINSTEIN_RADIUS",
    "blur",
    "expected_counts",
    "make",
    "noisy",
    "pixel_grid",
    "population_observation",
    "psf_matrix",
    "sample_nuisance",
    "sersic",
    "shear_deflection",
    "sie_deflection",
    "simulator",
]

TRUE_EINSTEIN_RADIUS = 1.5
PRIOR_LOW, PRIOR_HIGH = 0.5, 3.0


class Optics(NamedTuple):
    """Static image settings: pixels per side, field of view (″), PSF FWHM (″), sky (counts), sub-pixels."""

    size: int = 32
    fov: float = 8.0
    psf_fwhm: float = 0.4
    sky: float = 10.0
    supersample: int = 2

    @property
    def pixel_scale(self) -> float:
        return self.fov / self.size


class Nuisance(NamedTuple):
    """Lens and source parameters other than θ_E (scalars; see the module docstring for priors)."""

    lens_q: jax.Array
    lens_phi: jax.Array
    lens_x: jax.Array
    lens_y: jax.Array
    shear_1: jax.Array
    shear_2: jax.Array
    source_x: jax.Array
    source_y: jax.Array
    source_re: jax.Array
    source_n: jax.Array
    source_q: jax.Array
    source_phi: jax.Array
    source_amplitude: jax.Array


def sample_nuisance(rng_key: jax.Array) -> Nuisance:
    """One draw of the nuisance parameters from their priors."""
    key_u, key_z = jax.random.split(rng_key)
    u = jax.random.uniform(key_u, (9,))
    z = jax.random.normal(key_z, (4,))
    lerp = lambda t, a, b: a + (b - a) * t
    return Nuisance(
        lens_q=lerp(u[0], 0.6, 1.0),
        lens_phi=lerp(u[1], 0.0, math.pi),
        lens_x=0.1 * z[0],
        lens_y=0.1 * z[1],
        shear_1=0.05 * z[2],
        shear_2=0.05 * z[3],
        source_x=lerp(u[2], -0.4, 0.4),
        source_y=lerp(u[3], -0.4, 0.4),
        source_re=lerp(u[4], 0.1, 0.4),
        source_n=lerp(u[5], 0.5, 3.0),
        source_q=lerp(u[6], 0.5, 1.0),
        source_phi=lerp(u[7], 0.0, math.pi),
        source_amplitude=jnp.exp(lerp(u[8], math.log(10.0), math.log(50.0))),
    )


def _rotate(x, y, phi):
    """Coordinates ``(x, y)`` expressed in a frame rotated by ``phi``."""
    c, s = jnp.cos(phi), jnp.sin(phi)
    return c * x + s * y, -s * x + c * y


def sie_deflection(x, y, theta_e, q, phi, x0, y0):
    """SIE deflection ``(α_x, α_y)`` at image-plane points ``x, y: (...)`` (″), same shapes."""
    u, v = _rotate(x - x0, y - y0, phi)
    b = theta_e * jnp.sqrt(q)
    psi = jnp.sqrt(q**2 * u**2 + v**2 + 1e-12)
    e2 = 1.0 - q**2
    round_ = e2 < 1e-4
    e = jnp.sqrt(jnp.where(round_, 1.0, e2))  # safe where: no 0/0 on the round branch
    au = jnp.where(round_, b * u / psi, b / e * jnp.arctan(e * u / psi))
    av = jnp.where(round_, b * v / psi, b / e * jnp.arctanh(jnp.clip(e * v / psi, -1 + 1e-7, 1 - 1e-7)))
    return _rotate(au, av, -phi)


def shear_deflection(x, y, gamma_1, gamma_2, x0, y0):
    """External-shear deflection ``(γ_1 dx + γ_2 dy, γ_2 dx - γ_1 dy)`` about ``(x0, y0)``."""
    dx, dy = x - x0, y - y0
    return gamma_1 * dx + gamma_2 * dy, gamma_2 * dx - gamma_1 * dy


def sersic(x, y, amplitude, re, n, q, phi, x0, y0):
    """Elliptical Sérsic surface brightness at ``x, y: (...)`` (counts per pixel)."""
    u, v = _rotate(x - x0, y - y0, phi)
    r = jnp.sqrt(q * u**2 + v**2 / q)
    b_n = 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)
    return amplitude * jnp.exp(-b_n * ((r / re) ** (1.0 / n) - 1.0))


def pixel_grid(size: int, fov: float, supersample: int = 1):
    """Centres ``(x, y)``, each ``(size·k, size·k)`` with ``k = supersample``, of the (sub-)pixels."""
    n = size * supersample
    c = (np.arange(n) + 0.5 - n / 2) * (fov / n)
    x, y = np.meshgrid(c, c)  # x varies along columns, y along rows
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def psf_matrix(size: int, pixel_scale: float, fwhm: float) -> jax.Array:
    """``(size, size)`` circulant Gaussian blur ``K`` with unit column sums; ``K·A·Kᵀ`` blurs A."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / pixel_scale
    i = np.arange(size)
    d = np.abs(i[:, None] - i[None, :])
    d = np.minimum(d, size - d)  # periodic distance
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return jnp.asarray(k / k.sum(0, keepdims=True), jnp.float32)


def blur(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """Separable circular convolution ``K · image · Kᵀ`` of ``(size, size)``; preserves the sum."""
    return kernel @ image @ kernel.T


def expected_counts(theta_e, nuisance: Nuisance, optics: Optics = Optics()) -> jax.Array:
    """Noiseless image ``m = PSF ⊗ I(β(x)) + sky``: ``(size, size)`` counts per pixel."""
    x, y = pixel_grid(optics.size, optics.fov, optics.supersample)
    p = nuisance
    ax, ay = sie_deflection(x, y, theta_e, p.lens_q, p.lens_phi, p.lens_x, p.lens_y)
    sx, sy = shear_deflection(x, y, p.shear_1, p.shear_2, p.lens_x, p.lens_y)
    bx, by = x - ax - sx, y - ay - sy
    fine = sersic(bx, by, p.source_amplitude, p.source_re, p.source_n, p.source_q, p.source_phi, p.source_x, p.source_y)
    k, n = optics.supersample, optics.size
    image = fine.reshape(n, k, n, k).mean((1, 3))
    return blur(image, psf_matrix(n, optics.pixel_scale, optics.psf_fwhm)) + optics.sky


def noisy(rng_key: jax.Array, counts: jax.Array) -> jax.Array:
    """Gaussian approximation of Poisson noise: ``counts + √counts · ε``."""
    return counts + jnp.sqrt(counts) * jax.random.normal(rng_key, counts.shape, counts.dtype)


def simulator(rng_key: jax.Array, theta: jax.Array, optics: Optics = Optics()) -> jax.Array:
    """One noisy image ``(size, size)`` for ``theta = (θ_E,)``; nuisance drawn from its priors."""
    key_nuisance, key_noise = jax.random.split(rng_key)
    counts = expected_counts(jnp.asarray(theta)[0], sample_nuisance(key_nuisance), optics)
    return noisy(key_noise, counts)


def population_observation(
    num_lenses: int = 9, seed: int = 1, *, size: int = 32, einstein_radius: float = TRUE_EINSTEIN_RADIUS
) -> jax.Array:
    """``(num_lenses, size, size)`` images sharing ``θ_E`` (independent nuisances): an i.i.d. set.

    Deterministic in ``seed``; lens ``i`` uses ``fold_in(PRNGKey(seed), i)``, so the first n
    lenses of a larger population are the population of n.
    """
    return iid_set(simulator, jnp.full((1,), einstein_radius, jnp.float32), Optics(size=size), num_lenses, seed)


def make(size: int = 32) -> Task:
    """The lensing task on ``size × size`` images (32 by default; 64 for finer pixels, 16 for CI)."""
    optics = Optics(size=int(size))
    return Task(
        name="lensing",
        prior=box_uniform(PRIOR_LOW, PRIOR_HIGH),
        simulator=functools.partial(simulator, optics=optics),
        x_shape=(optics.size, optics.size),
        parameter_labels=("einstein_radius",),
        true_theta=np.array([TRUE_EINSTEIN_RADIUS], np.float32),
        observation_seed=0,
        description=(
            f"Strong lensing ({optics.size}x{optics.size} px, {optics.fov}\" field): SIE + external "
            "shear lens, Sérsic source, Gaussian PSF, sky and Poisson-like noise. θ = Einstein radius "
            "~ U(0.5, 3.0)\"; lens and source nuisances drawn inside the simulator (marginalised). "
            "Populations: population_observation(n, seed) with sample_posterior(..., iid=True)."
        ),
    )
