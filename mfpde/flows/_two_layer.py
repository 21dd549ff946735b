from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import activations, losses
from .._checks import as_float_array
from .._dataset import Dataset
from .._gaussian import HOMOGENEOUS
from .._population import Population
from ._base import AbstractFlow
from ._population_risk import check_population, population_loss, uses_quadrature


def _float(argument: str, *, nonnegative: bool = False):
    return lambda value: as_float_array(value, argument, "TwoLayer", nonnegative=nonnegative)


def chunked_map(fn, X: Float[Array, "n d"], chunk_size: int | None) -> Array:
    """`fn(X)` evaluated on chunks of `chunk_size` rows (rematerialised under autodiff), concatenated.

    Keeps the memory of a layer of N neurons at O(N·chunk) instead of O(N·n), also for gradients. Written out rather
    than `jax.lax.map(row function, X, batch_size=chunk_size)`, which vmaps a function of one row: that velocity
    measured 1.7× slower (N = n = 4096, chunks of 1024; benchmarks/RESULTS.md, "Chunked maps").
    """
    n = X.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(X)
    n_chunks = -(-n // chunk_size)
    padded = jnp.concatenate([X, jnp.zeros((n_chunks * chunk_size - n, X.shape[1]), X.dtype)])
    out = jax.lax.map(jax.checkpoint(fn), padded.reshape(n_chunks, chunk_size, X.shape[1]))
    return out.reshape(n_chunks * chunk_size, *out.shape[2:])[:n]


class TwoLayer(AbstractFlow):
    """Mean-field two-layer network (Mei, Montanari and Nguyen; Chizat and Bach; docs/flows/two-layer.md).

        f(x; ρ) = α Σ_j m_j u_j σ(w_j · x + b_j),   θ_j = (u_j, w_j, b_j), u_j ∈ R^k
        R(ρ) = E_i ℓ(f(x_i; ρ), y_i) + ½ Σ_j m_j Σ_c λ_c θ_{jc}²

    with λ_c = `l2` on the trained coordinates (`l2_output` on u when given) and 0 on fixed ones.

    **Arguments:**

    - `activation`: one of `mfpde.activations.ACTIVATIONS` ("tanh", "relu", "sigmoid", "erf", "identity",
      "softplus", "step", "sign").
    - `alpha`: output scale α.
    - `bias`: whether neurons carry a bias b_j.
    - `train_output`: whether the output weights u_j move (False keeps them at their initial values).
    - `l2`: weight decay λ ≥ 0 of the trained coordinates.
    - `l2_output`: weight decay of u, if it differs from `l2`.
    - `temperature`: τ ≥ 0 of the entropy term (noisy training when τ > 0).
    - `loss`: "squared" (½|f − y|²) or "logistic" (log(1 + e^{−y f}), labels y ∈ {−1, +1}; others are refused).

    Coordinate groups: `u` (k), `w` (d), and `b` (1) when `bias`.

    Neural feature repopulation (docs/flows/two-layer.md) is this flow, not a separate one: its two-level model
    (features θ = (w, b) carrying importances u(θ), regularisers on both, entropy on ρ) has exactly the energy above
    with `train_output=True`, `l2_output` on u, `l2` on θ and `temperature` τ, so a second flow class would duplicate
    the energy. The learned feature distribution ρ and importance u(θ) are the particles' `w`/`b` and `u` coordinates
    (`theta` of a solution saved with `save_state=True`); `mfpde.repopulate` draws features from them and refits
    the output layer.
    """

    activation: str = eqx.field(static=True, default="tanh")
    alpha: Float[Array, ""] = eqx.field(converter=_float("alpha"), default=1.0)
    bias: bool = eqx.field(static=True, default=False)
    train_output: bool = eqx.field(static=True, default=True)
    l2: Float[Array, ""] = eqx.field(converter=_float("l2", nonnegative=True), default=0.0)
    l2_output: Float[Array, ""] | None = eqx.field(
        converter=lambda v: None if v is None else as_float_array(v, "l2_output", "TwoLayer", nonnegative=True),
        default=None,
    )
    temperature: Float[Array, ""] = eqx.field(converter=_float("temperature", nonnegative=True), default=0.0)
    loss: Literal["squared", "logistic"] = eqx.field(static=True, default="squared")

    convex = True  # f is linear in ρ, ℓ convex in f, the weight decay linear in ρ

    def __check_init__(self):
        activations.get(self.activation)
        losses.get(self.loss)
        for name in ("alpha", "l2", "temperature"):
            if jnp.ndim(getattr(self, name)) != 0:
                raise ValueError(f"`{name}` of TwoLayer must be a scalar, got shape {jnp.shape(getattr(self, name))}.")

    def groups(self, data: Dataset | None) -> dict[str, int]:
        self.check_data(data)
        groups = {"u": data.k, "w": data.d}
        if self.bias:
            groups["b"] = 1
        return groups

    def check_data(self, data):
        if isinstance(data, Population):
            check_population(self.activation, data, self.loss)
        elif not isinstance(data, Dataset):
            raise TypeError(f"`data` of a TwoLayer flow must be an mfpde.Dataset or mfpde.Population, got {type(data).__name__}.")
        else:
            losses.check_labels(self.loss, data, "TwoLayer")

    def trainable(self, data):
        mask = np.ones(sum(self.groups(data).values()), dtype=bool)
        mask[: data.k] = self.train_output
        return mask

    def homogeneous(self, data):
        return HOMOGENEOUS.get(self.activation) == 1 and self.train_output

    def second_moment_bound(self, energy, data):
        """2R/min_c λ_c: R ≥ ½ Σ_c λ_c ∫θ_c² dρ, the loss being ≥ 0."""
        lam = jnp.min(self.weight_decay(data, jnp.result_type(energy, float)))
        return jnp.where(lam > 0, 2 * energy / jnp.where(lam > 0, lam, 1.0), jnp.inf)

    def predict(self, theta, masses, X, data, *, chunk_size=None) -> Float[Array, "n k"]:
        """f(x_i; ρ) = α Σ_j m_j u_j σ(w_j · x_i + b_j) at the rows of `X`."""
        k, d = data.k, data.d
        u, w = theta[:, :k], theta[:, k : k + d]
        sigma = activations.get(self.activation)
        weighted_u = self.alpha * masses[:, None] * u

        def layer(x):
            pre = x @ w.T
            return sigma(pre + theta[:, k + d] if self.bias else pre) @ weighted_u

        return chunked_map(layer, X, chunk_size)

    def weight_decay(self, data, dtype) -> Float[Array, " p"]:
        """λ_c per coordinate of θ: `l2_output` (or `l2`) on u, `l2` on w and b, 0 on fixed coordinates."""
        lam = jnp.full(sum(self.groups(data).values()), self.l2, dtype=dtype)
        if self.l2_output is not None:
            lam = lam.at[: data.k].set(self.l2_output)
        return lam * jnp.asarray(self.trainable(data), dtype)

    def loss_value(self, theta, masses, data, *, chunk_size=None, quadrature=None):
        """The data term E ℓ(f(x; ρ), y): a mean over the training points, or over a `Population` (in closed form or
        by quadrature, see `mfpde.flows._population_risk.population_loss`; `quadrature` overrides its order)."""
        if isinstance(data, Population):
            return population_loss(theta, masses, data, activation=self.activation, alpha=self.alpha, bias=self.bias,
                                   chunk_size=chunk_size, quadrature=quadrature)
        f = self.predict(theta, masses, data.X, data, chunk_size=chunk_size)
        return jnp.mean(losses.get(self.loss)(f, data.y))

    def energy(self, theta, masses, data, *, chunk_size=None):
        data_term = self.loss_value(theta, masses, data, chunk_size=chunk_size)
        return data_term + 0.5 * jnp.sum(masses[:, None] * self.weight_decay(data, theta.dtype) * theta**2)

    def observables(self, theta, masses, data, *, chunk_size=None):
        if isinstance(data, Population):
            loss = self.loss_value(theta, masses, data, chunk_size=chunk_size)
            out = {"loss": loss}
            if uses_quadrature(self.activation, data):
                finer = self.loss_value(theta, masses, data, chunk_size=chunk_size, quadrature=2 * data.quadrature)
                out["quadrature_error"] = jnp.abs(finer - loss)
            return out
        ell = losses.get(self.loss)
        f = self.predict(theta, masses, data.X, data, chunk_size=chunk_size)
        out = {"loss": jnp.mean(ell(f, data.y)), "prediction": f}
        if data.X_test is not None:
            f_test = self.predict(theta, masses, data.X_test, data, chunk_size=chunk_size)
            out["test_loss"] = jnp.mean(ell(f_test, data.y_test))
        return out

    def describe(self, data):
        if isinstance(data, Population):
            out = {"loss": ((), {"long_name": "population loss E ℓ(f(x), y) over the data distribution", "units": "1"})}
            if uses_quadrature(self.activation, data):
                out["quadrature_error"] = ((), {"long_name": "estimated quadrature error of the population loss "
                                                f"(order {data.quadrature} against {2 * data.quadrature})", "units": "1"})
            return out
        out = {
            "loss": ((), {"long_name": f"training loss E_i ℓ(f(x_i), y_i), ℓ = {self.loss}", "units": "1"}),
            "prediction": (("sample", "output"), {"long_name": "network output f(x_i) on the training points", "units": "1"}),
        }
        if data.X_test is not None:
            out["test_loss"] = ((), {"long_name": f"test loss E ℓ(f(x), y), ℓ = {self.loss}", "units": "1"})
        return out
