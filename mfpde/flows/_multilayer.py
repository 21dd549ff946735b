from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import activations, losses
from .._checks import as_float_array
from .._dataset import Dataset
from ._base import AbstractLayeredFlow


def _layer_names(depth: int) -> tuple[str, ...]:
    return tuple(f"w{ell}" for ell in range(1, depth + 1))


class Multilayer(AbstractLayeredFlow):
    """Mean-field multilayer network (Nguyen and Pham; docs/flows/multilayer.md), L = len(activations) + 1
    layers of weights:

        H_1(x, c_1) = w_1(c_1) · x
        H_ℓ(x, c_ℓ) = (1/N_{ℓ−1}) Σ_{c_{ℓ−1}} w_ℓ(c_{ℓ−1}, c_ℓ) σ_{ℓ−1}(H_{ℓ−1}(x, c_{ℓ−1}))      ℓ = 2..L−1
        ŷ(x)       = (1/N_{L−1}) Σ_{c_{L−1}} w_L(c_{L−1}) σ_{L−1}(H_{L−1}(x, c_{L−1}))
        J          = E_i ℓ(ŷ(x_i), y_i) + (λ/2) Σ_ℓ mean over entries of w_ℓ²

    Gradient flow with every weight of layer ℓ moving at rate N_{ℓ−1}·N_ℓ·ξ_ℓ(t) (N_0 = N_L = 1), so that each
    weight moves O(1) per unit time and the limit N → ∞ does not depend on the widths:

        ∂_t w_ℓ = −N_{ℓ−1} N_ℓ ξ_ℓ(t) ∂J/∂w_ℓ.

    The state is the dict of weight matrices `w1` (N_1, d), `w2` (N_1, N_2), …, `wL` (N_{L−1}, k): the units of each
    layer are its particles. The widths are the discretisation, chosen by the algorithm (`solvers.Units`).

    **Arguments:**

    - `activations`: the activation σ_ℓ of each hidden layer, ℓ = 1..L−1 (names of `mfpde.activations`); L ≥ 3
      means at least two hidden layers.
    - `rates`: the constant learning-rate multipliers ξ_ℓ of the L layers (default 1; 0 freezes a layer).
    - `schedule`: optional ξ(t), a function of time returning the L multipliers (replaces `rates`).
    - `l2`: weight decay λ ≥ 0.
    - `loss`: "squared" or "logistic".
    """

    activations: tuple[str, ...] = eqx.field(static=True, converter=tuple)
    rates: Float[Array, " L"] | None = eqx.field(
        default=None, converter=lambda v: None if v is None else as_float_array(v, "rates", "Multilayer", nonnegative=True)
    )
    schedule: Callable | None = eqx.field(static=True, default=None)
    l2: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "l2", "Multilayer", nonnegative=True))
    loss: str = eqx.field(static=True, default="squared")
    temperature: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "temperature", "Multilayer"))

    def __check_init__(self):
        if len(self.activations) < 2:
            raise ValueError(f"`activations` of Multilayer needs at least two hidden layers (L ≥ 3), got {self.activations}.")
        for name in self.activations:
            activations.get(name, "activations")
        losses.get(self.loss)
        if self.rates is not None and self.rates.shape != (self.depth,):
            raise ValueError(f"`rates` of Multilayer must have one entry per layer ({self.depth}), got shape {self.rates.shape}.")
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError("`schedule` of Multilayer must be a function of time returning the L multipliers.")
        if isinstance(self.temperature, jax.Array) and not isinstance(self.temperature, jax.core.Tracer) and float(self.temperature) != 0.0:
            raise ValueError("`temperature` of Multilayer must be 0: the multilayer flow is deterministic.")

    @property
    def depth(self) -> int:
        """L, the number of weight layers."""
        return len(self.activations) + 1

    def check_data(self, data):
        if not isinstance(data, Dataset):
            raise TypeError(f"`data` of a Multilayer flow must be an mfpde.Dataset, got {type(data).__name__}.")
        losses.check_labels(self.loss, data, "Multilayer")

    def shapes(self, widths: tuple[int, ...], data: Dataset) -> dict[str, tuple[int, int]]:
        """Shapes of the weight matrices for hidden widths N_1..N_{L−1}."""
        if len(widths) != self.depth - 1:
            raise ValueError(f"`n` (of Units or Convex) must give one width per hidden layer ({self.depth - 1}), got {widths}.")
        sizes = (data.d, *widths, data.k)
        return {name: (sizes[i], sizes[i + 1]) if i else (sizes[1], sizes[0]) for i, name in enumerate(_layer_names(self.depth))}

    def features(self, state: dict, X: Float[Array, "n d"]) -> list[Array]:
        """Pre-activations H_ℓ(x_i, ·) of the hidden layers, each of shape (n, N_ℓ)."""
        names = _layer_names(self.depth)
        H = [X @ state[names[0]].T]
        for ell in range(1, self.depth - 1):
            sigma = activations.get(self.activations[ell - 1])
            H.append(sigma(H[-1]) @ state[names[ell]] / H[-1].shape[1])
        return H

    def predict(self, state: dict, X) -> Float[Array, "n k"]:
        """ŷ(x_i) at the rows of X."""
        H = self.features(state, X)[-1]
        sigma = activations.get(self.activations[-1])
        return sigma(H) @ state[f"w{self.depth}"] / H.shape[1]

    def energy(self, state: dict, data: Dataset):
        """J: the data term plus (λ/2) Σ_ℓ mean(w_ℓ²)."""
        data_term = jnp.mean(losses.get(self.loss)(self.predict(state, data.X), data.y))
        return data_term + 0.5 * self.l2 * sum(jnp.mean(w**2) for w in state.values())

    def multipliers(self, t, state: dict) -> dict[str, Array]:
        """N_{ℓ−1} N_ℓ ξ_ℓ(t) per layer: the rates of ∂_t w_ℓ = −N_{ℓ−1} N_ℓ ξ_ℓ(t) ∂J/∂w_ℓ (`velocity`)."""
        names = _layer_names(self.depth)
        xi = self.schedule(t) if self.schedule is not None else (self.rates if self.rates is not None else jnp.ones(self.depth))
        widths = [1, state[names[0]].shape[0], *(state[name].shape[1] for name in names[1:-1]), 1]
        return {name: widths[i] * widths[i + 1] * xi[i] for i, name in enumerate(names)}

    def balance(self, state: dict, rates) -> list[Array]:
        """For each hidden unit j of layer ℓ: Σ_in w²/r_ℓ − Σ_out w²/r_{ℓ+1} with r the per-layer rates
        N_{ℓ−1}N_ℓξ_ℓ. Conserved by the flow for 1-homogeneous activations (ReLU) without weight decay."""
        names = _layer_names(self.depth)
        out = []
        for ell in range(self.depth - 1):
            w_in, w_out = state[names[ell]], state[names[ell + 1]]
            r_in, r_out = rates[names[ell]], rates[names[ell + 1]]
            # A frozen layer (ξ = 0) drops out of the balance.
            incoming = jnp.sum(w_in**2, axis=1 if ell == 0 else 0) / jnp.where(r_in > 0, r_in, jnp.inf)
            outgoing = jnp.sum(w_out**2, axis=1) / jnp.where(r_out > 0, r_out, jnp.inf)
            out.append(incoming - outgoing)
        return out

    def observables(self, t, state: dict, data: Dataset) -> dict[str, Array]:
        f = self.predict(state, data.X)
        ell = losses.get(self.loss)
        H = self.features(state, data.X)
        out = {
            "loss": jnp.mean(ell(f, data.y)),
            "risk": self.energy(state, data),
            "prediction": f,
            # Spread of the units' features across a layer: 0 when every unit computes the same feature.
            "unit_spread": jnp.stack([jnp.mean(jnp.var(h, axis=1)) for h in H]),
            "w1_mean": jnp.mean(state["w1"], axis=0),
            "w1_cov": jnp.cov(state["w1"], rowvar=False, bias=True).reshape(data.d, data.d),
        }
        if data.X_test is not None:
            out["test_loss"] = jnp.mean(ell(self.predict(state, data.X_test), data.y_test))
        for i, b in enumerate(self.balance(state, self.multipliers(t, state)), start=1):
            out[f"balance_{i}"] = b
        return out

    def describe(self, data: Dataset) -> dict:
        out = {
            "loss": ((), {"long_name": f"training loss E_i ℓ(ŷ(x_i), y_i), ℓ = {self.loss}", "units": "1"}),
            "risk": ((), {"long_name": "objective J: training loss plus weight decay", "units": "1"}),
            "prediction": (("sample", "output"), {"long_name": "network output ŷ(x_i) on the training points", "units": "1"}),
            "unit_spread": (("layer",), {"long_name": "E_i Var_j H_ℓ(x_i, c_j): spread of features across units", "units": "1"}),
            "w1_mean": (("input",), {"long_name": "mean of first-layer weights over units", "units": "1"}),
            "w1_cov": (("input", "input2"), {"long_name": "covariance of first-layer weights over units", "units": "1"}),
            "test_loss": ((), {"long_name": f"test loss, ℓ = {self.loss}", "units": "1"}),
        }
        for i in range(1, self.depth):
            out[f"balance_{i}"] = ((f"unit_{i}",), {
                "long_name": f"balancedness of layer-{i} units: Σ_in w²/r_in − Σ_out w²/r_out (conserved for ReLU, λ = 0)",
                "units": "1"})
        return out
