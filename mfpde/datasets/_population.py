import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from .._population import Population, Teacher
from ._teacher import _key


def gaussian(d: int, *, teacher: Teacher | None = None, mean=None, covariance=None, noise: float = 0.0,
             quadrature: int | None = None) -> Population:
    """Gaussian inputs x ~ N(mean, covariance) (N(0, I_d) by default) labelled by `teacher` (zero labels without one).

    **Arguments:**

    - `d`: input dimension.
    - `teacher`: the target network f*, a `Teacher`.
    - `mean`, `covariance`: of the inputs, shapes (d,) and (d, d).
    - `noise`: standard deviation of the label noise.
    - `quadrature`: Gauss–Hermite order for activations without a closed-form kernel.
    """
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"`d` must be a positive integer, got {d!r}.")
    mean = np.zeros(d) if mean is None else np.asarray(mean, dtype=float)
    if mean.shape != (d,):
        raise ValueError(f"`mean` must have shape ({d},), got {mean.shape}.")
    covariance = np.eye(d) if covariance is None else np.asarray(covariance, dtype=float)
    if covariance.shape != (d, d):
        raise ValueError(f"`covariance` must have shape ({d}, {d}), got {covariance.shape}.")
    return Population(mean[None], covariance[None], teacher=teacher, noise=noise, quadrature=quadrature,
                      name=f"gaussian(d={d})" if teacher is None else f"gaussian(d={d}) teacher({teacher.activation})")


def isotropic_gaussians(d: int, delta: float, *, quadrature: int | None = None) -> Population:
    """The isotropic-Gaussians classification problem of Mei–Montanari–Nguyen (2018): labels y = ±1 with probability
    ½ each, x | y ~ N(0, (1 + y Δ)² I_d). Rotation invariant; with squared loss the Bayes risk is reached by radial
    networks.

    **Arguments:**

    - `d`: input dimension.
    - `delta`: Δ ∈ (0, 1), the relative difference of the two scales.
    - `quadrature`: Gauss–Hermite order for activations without a closed-form kernel.
    """
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"`d` must be a positive integer, got {d!r}.")
    if not 0 < delta < 1:
        raise ValueError(f"`delta` must lie in (0, 1), got {delta!r}.")
    covariances = np.stack([(1 + delta) ** 2 * np.eye(d), (1 - delta) ** 2 * np.eye(d)])
    return Population(np.zeros((2, d)), covariances, labels=[1.0, -1.0], quadrature=quadrature,
                      name=f"isotropic_gaussians(d={d}, delta={delta})")


def teacher_population(key: PRNGKeyArray | int, d: int = 10, activation: str = "tanh", *, width: int = 4, k: int = 1,
                       noise: float = 0.0, quadrature: int | None = None) -> Population:
    """The distribution that `datasets.teacher` samples from, with the same key:

        x ~ N(0, I_d),   y = (1/width) Σ_j a_j σ(v_j · x) + noise · ξ,   v_j ~ N(0, I_d / d),  a_j ~ N(0, I_k).

    `datasets.teacher(key, n, d, activation, width=width, k=k, noise=noise)` draws n points of it (to rounding).

    **Arguments:**

    - `key`: PRNG key or integer seed.
    - `d`: input dimension.
    - `activation`: the teacher's activation.
    - `width`, `k`: the teacher's neurons and outputs.
    - `noise`: standard deviation of the label noise.
    - `quadrature`: Gauss–Hermite order for activations without a closed-form kernel.
    """
    for name, value in (("d", d), ("width", width), ("k", k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    kv, ka, *_ = jax.random.split(_key(key), 5)
    v = jax.random.normal(kv, (width, d)) / jnp.sqrt(d)
    a = jax.random.normal(ka, (width, k))
    return gaussian(d, teacher=Teacher(a / width, v, activation=activation), noise=noise, quadrature=quadrature)
