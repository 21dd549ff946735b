import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Scalar

from .._dataset import Dataset


class AbstractMeanFieldFlow(eqx.Module):
    """What every flow is: the gradient flow of an energy J on a state, each part of the state moving at its
    mean-field rate, so that the dynamics has a limit as the number of particles (units) grows,

        ∂_t state = −multipliers ⊙ ∂J/∂state,

    plus the temperature τ ≥ 0 of an entropy term. `velocity` takes the gradient by autodiff of `energy` by default;
    flows that are not gradient flows override it, their `energy` still being what the results report as `risk`.
    The two kinds of state: a measure's particles (`AbstractFlow`, solved by `Particles`, `Grid` and the stationary
    solvers) and the weight matrices between the units of consecutive layers (`AbstractLayeredFlow`, solved by
    `Units`).
    """

    temperature: eqx.AbstractVar[Float[Array, ""]]

    @abc.abstractmethod
    def energy(self, *args, **kwargs) -> Scalar:
        """J of a state (arguments: see the subclass), reported as `risk`."""

    @abc.abstractmethod
    def velocity(self, t, *args, **kwargs):
        """∂_t of the state at time t (arguments: see the subclass)."""

    def check_data(self, data) -> None:
        """Raise a ValueError naming `data` when this flow cannot use it."""

    def describe(self, data) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
        """For each observable: its dims (beyond `time`) and its CF attributes (`long_name`, `units`)."""
        return {}


class AbstractFlow(AbstractMeanFieldFlow):
    """The dynamics of a measure ρ over the coordinates θ of a neuron (or feature), given by an energy.

    A flow is defined by its energy R evaluated on a weighted empirical measure ρ = Σ_j m_j δ_{θ_j}
    (`energy`), plus the temperature τ ≥ 0 of the entropy term of F = R + τ ∫ ρ log ρ. Every discretisation derives
    its dynamics from that one function by autodiff: particles move with θ̇_j = −(1/m_j) ∂R/∂θ_j (`velocity`), grid
    masses follow the potential Φ_k = ∂R/∂m_k. Flows that are not gradient flows override `velocity`.

    Coordinates come in named groups (`groups`), e.g. `{"u": 1, "w": d}`; the state of N particles is an (N, p)
    array with the groups side by side in that order.
    """

    @abc.abstractmethod
    def groups(self, data: Dataset | None) -> dict[str, int]:
        """The coordinate groups of θ and their sizes, in state order."""

    @abc.abstractmethod
    def energy(
        self, theta: Float[Array, "N p"], masses: Float[Array, " N"], data: Dataset | None, *, chunk_size: int | None = None
    ) -> Scalar:
        """R(ρ) for ρ = Σ_j m_j δ_{θ_j} (the entropy term is not included).

        **Arguments:**

        - `theta`: particle positions, shape (N, p).
        - `masses`: particle masses m_j ≥ 0, Σ m_j = 1.
        - `data`: the training data (None for data-free flows).
        - `chunk_size`: evaluate the data term in chunks of this many training points (memory O(N·chunk)).
        """

    convex: ClassVar[bool] = False
    """Whether R is convex in ρ; then R(ρ*) ≥ R(ρ) + ∫Φ[ρ] d(ρ* − ρ) for every ρ*, the bound `mfpde.certify` computes."""

    def homogeneous(self, data: Dataset | None) -> bool:
        """Whether every first variation is 2-homogeneous in θ, Φ[ρ](cθ) = c² Φ[ρ](θ) for c > 0 (then its infimum is
        0 or −∞, and `mfpde.certify` searches the unit sphere instead)."""
        return False

    def second_moment_bound(self, energy: Scalar, data: Dataset | None) -> Scalar:
        """An upper bound on ∫|θ|² dρ* over every ρ* with R(ρ*) ≤ `energy` (∞ when none is known)."""
        return jnp.inf

    evolves_masses: ClassVar[bool] = False
    """Whether the particles' masses change in time too (`mass_rate`), as with birth and death (`flows.BirthDeath`)."""

    def mass_rate(self, potential: Float[Array, " N"], masses: Float[Array, " N"]) -> Float[Array, " N"]:
        """ṁ_j from the first variation at the particles, Φ_j = ∂R/∂m_j, for flows that evolve their masses."""
        raise NotImplementedError(f"{type(self).__name__} keeps its masses fixed.")

    def coordinates(self, data: Dataset | None) -> tuple[str, ...]:
        """Names of the p coordinates of θ: the group name, or `name_i` for a group of several."""
        names = []
        for group, size in self.groups(data).items():
            names += [group] if size == 1 else [f"{group}_{i}" for i in range(size)]
        return tuple(names)

    def trainable(self, data: Dataset | None) -> np.ndarray:
        """A boolean mask over the p coordinates: False for coordinates the flow keeps fixed."""
        return np.ones(sum(self.groups(data).values()), dtype=bool)

    def velocity(self, t, theta: Float[Array, "N p"], masses: Float[Array, " N"], data, *, chunk_size=None):
        """The mean-field velocity at the particles, v_j = −(1/m_j) ∂R/∂θ_j = −∇_θ (δR/δρ)(θ_j)."""
        grad = jax.grad(self.energy)(theta, masses, data, chunk_size=chunk_size)
        mask = jnp.asarray(self.trainable(data), dtype=theta.dtype)
        return -grad / jnp.where(masses > 0, masses, 1.0)[:, None] * mask  # a massless particle feels no force

    def observables(self, theta, masses, data, *, chunk_size=None) -> dict[str, Array]:
        """Model-specific observables of ρ (e.g. training loss, predictions). See `describe` for their dims."""
        return {}


class AbstractLayeredFlow(AbstractMeanFieldFlow):
    """A flow whose state is a dict of weight matrices between the units of consecutive layers (units are the
    particles of each layer), for multilayer mean-field limits. Solved by `solvers.Units`, whose widths are the
    discretisation. Each array moves at its own mean-field rate (`multipliers`, e.g. N_{ℓ−1} N_ℓ ξ_ℓ for the weights
    of layer ℓ): ∂_t w = −multiplier · ∂J/∂w (`velocity`, by autodiff of `energy`).
    """

    @abc.abstractmethod
    def shapes(self, widths: tuple[int, ...], data: Dataset) -> dict[str, tuple[int, ...]]:
        """The shapes of the state's arrays for the given hidden widths."""

    @abc.abstractmethod
    def energy(self, state: dict, data: Dataset) -> Scalar:
        """The objective J of the weights, reported as `risk`."""

    @abc.abstractmethod
    def multipliers(self, t, state: dict) -> dict[str, Array]:
        """The mean-field rate of each array of the state at time t (a scalar, or an array that broadcasts)."""

    def velocity(self, t, state: dict, data: Dataset) -> dict:
        """∂_t w = −multiplier · ∂J/∂w for every array w of the state, in the state's dtype."""
        grads = jax.grad(self.energy)(state, data)
        rates = self.multipliers(t, state)
        return {name: -jnp.asarray(rates[name], g.dtype) * g for name, g in grads.items()}

    @abc.abstractmethod
    def observables(self, t, state: dict, data: Dataset) -> dict[str, Array]:
        """Observables at time t (including `risk`); `describe` gives their dims and CF attributes."""

    def initial_state(self, init, key, shapes: dict[str, tuple[int, ...]], data: Dataset) -> dict:
        """The state at t = 0 drawn from the initial measure `init` (by default its `sample_layers`)."""
        if not hasattr(init, "sample_layers"):
            raise TypeError(f"`init` must be a layered measure such as measures.IIDLayers, got {type(init).__name__}.")
        return init.sample_layers(key, shapes)

    def describe_state(self, widths: tuple[int, ...], data: Dataset) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
        """Dims and CF attributes of the state's arrays (saved with `save_state`). By default the state is the weight
        matrices: rows of the first and columns of the others are units (`unit_ℓ`), then `input` and `output`."""
        names = list(self.shapes(widths, data))
        dims = ["input"] + [f"unit_{i}" for i in range(1, len(names))] + ["output"]
        return {name: ((dims[1], dims[0]) if i == 0 else (dims[i], dims[i + 1]), {"long_name": f"weights of layer {i + 1}", "units": "1"})
                for i, name in enumerate(names)}

    def dimension_sizes(self, widths: tuple[int, ...], data: Dataset) -> dict[str, int]:
        """Sizes of the dims used by the observables and the state, beyond `time` (coordinates 0.., `layer` 1..)."""
        sizes = {"input": data.d, "input2": data.d, "output": data.k, "sample": data.n, "layer": len(widths)}
        sizes.update({f"unit_{i}": w for i, w in enumerate(widths, start=1)})
        return sizes
