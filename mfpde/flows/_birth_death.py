import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import as_float_array
from ._base import AbstractFlow


class BirthDeath(AbstractFlow):
    """A flow with birth and death of mass (the Wasserstein–Fisher–Rao gradient flow of its energy; Rotskoff,
    Jelassi, Bruna and Vanden-Eijnden 2019; Chizat 2022): mass moves with the flow's velocity and, at rate `rate`,
    grows where the first variation Φ[ρ] = δR/δρ is below its mean and shrinks where it is above,

        ∂_t ρ = ∇·(ρ ∇Φ[ρ]) − α (Φ[ρ] − Φ̄) ρ,        Φ̄ = ∫Φ[ρ] dρ / ∫dρ   (`conserve=True`),
        ∂_t ρ = ∇·(ρ ∇Φ[ρ]) − α Φ[ρ] ρ                                     (`conserve=False`).

    On particles ρ = Σ_j m_j δ_{θ_j} the masses become part of the state, θ̇_j = −∇Φ(θ_j) and ṁ_j = −α (Φ(θ_j) − Φ̄) m_j
    with Φ(θ_j) = ∂R/∂m_j; on a grid it is a reaction term. Both decrease R: dR/dt = −∫|∇Φ|² dρ − α ∫(Φ − Φ̄)² dρ.
    Without conservation R must be defined on all non-negative measures (a two-layer network's is). The energy,
    coordinates and observables are those of `flow`; only τ = 0 is supported.

    **Arguments:**

    - `flow`: the flow whose energy drives both parts, e.g. `flows.TwoLayer(...)`.
    - `rate`: α ≥ 0, the rate of birth and death (0 gives back `flow`'s transport alone, with masses carried).
    - `conserve`: keep the total mass (the default) or let it change.
    """

    flow: AbstractFlow
    rate: Float[Array, ""] = eqx.field(converter=lambda v: as_float_array(v, "rate", "BirthDeath", nonnegative=True),
                                       default=1.0)
    conserve: bool = eqx.field(static=True, default=True)

    evolves_masses = True

    def __check_init__(self):
        if not isinstance(self.flow, AbstractFlow):
            raise TypeError(f"`flow` of BirthDeath must be a flow on measures (flows.AbstractFlow), got "
                            f"{type(self.flow).__name__}.")
        if jnp.ndim(self.rate) != 0:
            raise ValueError(f"`rate` of BirthDeath must be a scalar, got shape {jnp.shape(self.rate)}.")

    @property
    def temperature(self):
        return self.flow.temperature

    @property
    def convex(self):
        return self.flow.convex

    def groups(self, data):
        return self.flow.groups(data)

    def check_data(self, data):
        self.flow.check_data(data)

    def trainable(self, data):
        return self.flow.trainable(data)

    def energy(self, theta, masses, data, *, chunk_size=None):
        return self.flow.energy(theta, masses, data, chunk_size=chunk_size)

    def velocity(self, t, theta, masses, data, *, chunk_size=None):
        return self.flow.velocity(t, theta, masses, data, chunk_size=chunk_size)

    def mass_rate(self, potential: Float[Array, " N"], masses: Float[Array, " N"]) -> Float[Array, " N"]:
        """ṁ_j = −α (Φ_j − Φ̄) m_j (or −α Φ_j m_j without conservation), from Φ_j = ∂R/∂m_j."""
        if self.conserve:
            potential = potential - jnp.sum(masses * potential) / jnp.sum(masses)
        return -self.rate * potential * masses

    def observables(self, theta, masses, data, *, chunk_size=None):
        return self.flow.observables(theta, masses, data, chunk_size=chunk_size)

    def describe(self, data):
        return self.flow.describe(data)

    def homogeneous(self, data):
        return self.flow.homogeneous(data)

    def second_moment_bound(self, energy, data):
        return self.flow.second_moment_bound(energy, data)
