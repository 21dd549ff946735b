from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import as_float_array
from ._base import AbstractFlow


class Potential(AbstractFlow):
    """Independent particles in an external potential V (a linear energy, no data):

        R(ρ) = ∫ V dρ = Σ_j m_j V(θ_j),   ∂_t ρ = ∇·(ρ ∇V) + τ Δρ

    whose stationary state for τ > 0 is the Gibbs measure ∝ exp(−V/τ).

    **Arguments:**

    - `potential`: V, a JAX-traceable function of one point θ ∈ R^dim returning a scalar.
    - `dim`: the dimension of θ.
    - `temperature`: τ ≥ 0.
    """

    potential: Callable[[Float[Array, " dim"]], Float[Array, ""]] = eqx.field(static=True)
    dim: int = eqx.field(static=True, default=1)
    temperature: Float[Array, ""] = eqx.field(
        converter=lambda v: as_float_array(v, "temperature", "Potential", nonnegative=True), default=0.0
    )

    convex = True  # linear in ρ

    def __check_init__(self):
        if not callable(self.potential):
            raise TypeError(f"`potential` of Potential must be callable, got {type(self.potential).__name__}.")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"`dim` of Potential must be a positive integer, got {self.dim!r}.")

    def groups(self, data):
        return {"theta": self.dim}

    def energy(self, theta, masses, data, *, chunk_size=None):
        return jnp.sum(masses * jax.vmap(self.potential)(theta))


class OrnsteinUhlenbeck(AbstractFlow):
    """The quadratic potential V(θ) = (κ/2)|θ − c|²: the Ornstein–Uhlenbeck process, solvable in closed form.

    From N(m₀, s₀² I) the measure stays Gaussian with mean c + (m₀ − c) e^{−κt} and variance
    s₀² e^{−2κt} + (τ/κ)(1 − e^{−2κt}) per coordinate (see `mean` and `variance`).

    **Arguments:**

    - `kappa`: stiffness κ > 0.
    - `dim`: the dimension of θ.
    - `temperature`: τ ≥ 0.
    - `center`: c, a scalar or a vector of length `dim`.
    """

    kappa: Float[Array, ""] = eqx.field(converter=lambda v: as_float_array(v, "kappa", "OrnsteinUhlenbeck", nonnegative=True), default=1.0)
    dim: int = eqx.field(static=True, default=1)
    temperature: Float[Array, ""] = eqx.field(
        converter=lambda v: as_float_array(v, "temperature", "OrnsteinUhlenbeck", nonnegative=True), default=0.0
    )
    center: Float[Array, "..."] = eqx.field(converter=lambda v: as_float_array(v, "center", "OrnsteinUhlenbeck"), default=0.0)

    convex = True  # linear in ρ

    def __check_init__(self):
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"`dim` of OrnsteinUhlenbeck must be a positive integer, got {self.dim!r}.")

    def groups(self, data):
        return {"theta": self.dim}

    def energy(self, theta, masses, data, *, chunk_size=None):
        return 0.5 * self.kappa * jnp.sum(masses[:, None] * (theta - self.center) ** 2)

    def mean(self, t, mean0):
        """Exact mean at time t from initial mean `mean0`."""
        return self.center + (mean0 - self.center) * jnp.exp(-self.kappa * t)

    def variance(self, t, variance0):
        """Exact per-coordinate variance at time t from initial variance `variance0`."""
        decay = jnp.exp(-2 * self.kappa * t)
        return variance0 * decay + self.temperature / self.kappa * (1 - decay)
