import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import activations, losses
from .._checks import is_concrete
from .._dataset import Dataset
from ..measures._diverse import DiverseFeatures
from ._base import AbstractLayeredFlow

FORMS = ("weights", "features")
PENALTIES = ("weight_decay", "convex")


class AbstractFeatureFlow(AbstractLayeredFlow):
    """The neural feature flow (docs/flows/feature-flows.md) of a network with L = len(activations) hidden layers of widths m_ℓ, on
    n training points. The *feature* of unit j of layer ℓ is its vector of pre-activations θ_{ℓ,j} ∈ R^n:

        θ_{1,j}   = X w_{1,j}
        θ_{ℓ+1,j} = s θ_{ℓ,j} + (1/m_ℓ) Σ_i w_{ℓ+1,ij} h_ℓ(θ_{ℓ,i})          ℓ = 1..L−1
        f         = (1/m_L) Σ_i w_{L+1,i} h_L(θ_{L,i}) ∈ R^{n×k}

    with s = 0 for a plain network and s = 1 for a Res-Net (`skip`). The objective is J = E_i ℓ(f_i, y_i) + R(w) with
    one of two penalties (`penalty`), written with the units' empirical measures p_ℓ (mass 1/m_ℓ each):

    - "weight_decay": R = (λ/2) Σ_ℓ ∫∫ |w_ℓ|² dp_{ℓ−1} dp_ℓ, so weight decay is −λ w in every velocity;
    - "convex": R = (λ/2) [∫ |w_1|² dp_1 + Σ_{ℓ=1}^{L−1} ∫ (∫ |w_{ℓ+1}(θ̄, θ)| dp_ℓ(θ̄))² dp_{ℓ+1}(θ) + ∫ |w_{L+1}|² dp_L],
      the ℓ_{1,2} path norm whose perspective form is jointly convex (docs/algorithms/convex.md; r = 2): the regulariser to use
      when comparing with `solvers.Convex`. Its velocity uses |w| smoothed as √(w² + ε²) − ε (`smoothing` ε), which
      keeps the ODE from chattering where weights reach 0; the reported objective uses |w|.

    Backward signals, vectors in R^n:

        δ_{L+1} = (1/n) ∂_f ℓ(f, y),   δ_L = (w_{L+1} δ_{L+1}) ⊙ h_L'(θ_L),
        δ_ℓ     = s δ_{ℓ+1} + [(1/m_{ℓ+1}) Σ_j w_{ℓ+1,·j} δ_{ℓ+1,j}] ⊙ h_ℓ'(θ_ℓ),

    and the weights move by ∂_t w_1 = −ξ_1 (X^T δ_1 + λ w_1), ∂_t w_{ℓ+1,ij} = −ξ_{ℓ+1} (⟨δ_{ℓ+1,j}, h(θ_{ℓ,i})⟩ + λ w),
    ∂_t w_{L+1,i} = −ξ_{L+1} (h(θ_{L,i})^T δ_{L+1} + λ w): at finite widths, exactly gradient flow of J with each
    weight of layer ℓ moving at rate m_{ℓ−1} m_ℓ ξ_ℓ (m_0 = m_{L+1} = 1), ∂_t w_ℓ = −m_{ℓ−1} m_ℓ ξ_ℓ ∂J/∂w_ℓ, which form
    "weights" takes by autodiff of J (`energy`, with the smoothed |w|). The features move with the chain rule,

        ∂_t θ_1 = ∂_t w_1 X^T = −ξ_1 (X X^T δ_1 + λ θ_1),
        ∂_t θ_{ℓ+1} = s ∂_t θ_ℓ + (1/m_ℓ) Σ_i [∂_t w_{ℓ+1,i·} h(θ_{ℓ,i}) + w_{ℓ+1,i·} h'(θ_{ℓ,i}) ⊙ ∂_t θ_{ℓ,i}],

    whose data part is −K_ℓ δ_{ℓ+1} with K_ℓ = (1/m_ℓ) Σ_i h(θ_{ℓ,i}) h(θ_{ℓ,i})^T — the neural feature flow.

    Two forms, which must agree (`form`):

    - "weights": the state is the weights `w1`…`w{L+1}`; features come from a forward pass.
    - "features": the state is the weights and the features `theta1`…`thetaL`, integrated together with the velocities
      above. The features are then independent state and the consistency residual
      (the RMS over units and training points of θ_{ℓ+1} − s θ_ℓ − (1/m_ℓ) Σ_i w_{ℓ+1,i·} h(θ_{ℓ,i}), `consistency_residual`) measures how well the
      integration keeps them on the network's constraint.
    """

    activations: eqx.AbstractVar[tuple[str, ...]]
    form: eqx.AbstractVar[str]
    rates: eqx.AbstractVar[Float[Array, " L1"] | None]
    l2: eqx.AbstractVar[Float[Array, ""]]
    penalty: eqx.AbstractVar[str]
    smoothing: eqx.AbstractVar[Float[Array, ""]]
    loss: eqx.AbstractVar[str]
    skip: eqx.AbstractClassVar[bool]

    def __check_init__(self):
        owner = type(self).__name__
        if len(self.activations) < 1:
            raise ValueError(f"`activations` of {owner} needs one activation per hidden layer, got {self.activations}.")
        for name in self.activations:
            activations.get(name, "activations")
        losses.get(self.loss)
        if self.form not in FORMS:
            raise ValueError(f"`form` of {owner} must be one of {FORMS}, got {self.form!r}.")
        if self.penalty not in PENALTIES:
            raise ValueError(f"`penalty` of {owner} must be one of {PENALTIES}, got {self.penalty!r}.")
        if self.rates is not None and self.rates.shape != (self.depth + 1,):
            raise ValueError(f"`rates` of {owner} must have one entry per weight layer ({self.depth + 1}), "
                             f"got shape {self.rates.shape}.")
        if is_concrete(self.temperature) and float(self.temperature) != 0.0:
            raise ValueError(f"`temperature` of {owner} must be 0: the feature flow is deterministic.")

    @property
    def depth(self) -> int:
        """L, the number of hidden layers (L + 1 layers of weights)."""
        return len(self.activations)

    def check_data(self, data):
        if not isinstance(data, Dataset):
            raise TypeError(f"`data` of a {type(self).__name__} flow must be an mfpde.Dataset, got {type(data).__name__}.")
        losses.check_labels(self.loss, data, type(self).__name__)

    def _weight_names(self) -> list[str]:
        return [f"w{ell}" for ell in range(1, self.depth + 2)]

    def _feature_names(self) -> list[str]:
        return [f"theta{ell}" for ell in range(1, self.depth + 1)]

    def shapes(self, widths: tuple[int, ...], data: Dataset) -> dict[str, tuple[int, int]]:
        """`w1` (m_1, d), `w{ℓ+1}` (m_ℓ, m_{ℓ+1}), `w{L+1}` (m_L, k); with form="features" also `thetaℓ` (m_ℓ, n)."""
        owner = type(self).__name__
        if len(widths) != self.depth:
            raise ValueError(f"`n` (of Units or Convex) must give one width per hidden layer of {owner} ({self.depth}), got {widths}.")
        if self.skip and len(set(widths)) > 1:
            raise ValueError(f"`widths` of a {owner} must all be equal (units keep their index through the skip "
                             f"connections), got {widths}.")
        out = {"w1": (widths[0], data.d)}
        for ell in range(1, self.depth):
            out[f"w{ell + 1}"] = (widths[ell - 1], widths[ell])
        out[f"w{self.depth + 1}"] = (widths[-1], data.k)
        if self.form == "features":
            out.update({name: (m, data.n) for name, m in zip(self._feature_names(), widths)})
        return out

    def activation(self, ell: int):
        """h of hidden layer ℓ + 1 (0-based `ell`), an element-wise function."""
        return activations.get(self.activations[ell])

    def _propagate(self, ell: int, theta, w):
        """θ_{ℓ+1} = s θ_ℓ + (1/m_ℓ) w^T h_ℓ(θ_ℓ) (0-based `ell`)."""
        out = w.T @ self.activation(ell)(theta) / theta.shape[0]
        return theta + out if self.skip else out

    def _output(self, theta, w):
        """f = (1/m_L) Σ_i w_{L+1,i} h_L(θ_{L,i}), shape (n, k)."""
        return self.activation(self.depth - 1)(theta).T @ w / theta.shape[0]

    def forward(self, weights: list, X) -> tuple[list, Array]:
        """Features θ_1..θ_L (each (m_ℓ, n_X)) and outputs f (n_X, k) of the network with `weights` at the rows of X."""
        thetas = [weights[0] @ X.T]
        for ell in range(self.depth - 1):
            thetas.append(self._propagate(ell, thetas[-1], weights[ell + 1]))
        return thetas, self._output(thetas[-1], weights[-1])

    def _unpack(self, state: dict, data: Dataset) -> tuple[list, list]:
        weights = [state[name] for name in self._weight_names()]
        if self.form == "features":
            return weights, [state[name] for name in self._feature_names()]
        return weights, self.forward(weights, data.X)[0]

    def regulariser(self, weights: list, smoothing=None) -> Array:
        """R(w) of the chosen `penalty` (class docstring); with `smoothing` ε, |w| → √(w² + ε²) − ε."""
        dtype = weights[0].dtype
        lam = self.l2.astype(dtype)
        if self.penalty == "weight_decay":
            return lam * sum(_mean_field_half_norm(w, ell, self.depth) for ell, w in enumerate(weights))
        smoothing = None if smoothing is None else smoothing.astype(dtype)
        middle = [jnp.mean(jnp.mean(_abs(w, smoothing), axis=0) ** 2) for w in weights[1:-1]]
        ends = _mean_field_half_norm(weights[0], 0, self.depth) + _mean_field_half_norm(weights[-1], self.depth, self.depth)
        return lam * (ends + 0.5 * sum(middle))

    def _rates(self, dtype) -> Array:
        """ξ_ℓ for the L + 1 weight layers, in the state's dtype."""
        return (self.rates if self.rates is not None else jnp.ones(self.depth + 1)).astype(dtype)

    def _multipliers(self, weights: list) -> list:
        """m_{ℓ−1} m_ℓ ξ_ℓ for the L + 1 weight layers."""
        widths = [1, *(w.shape[0] for w in weights[1:]), 1]
        xi = self._rates(weights[0].dtype)
        return [widths[ell] * widths[ell + 1] * xi[ell] for ell in range(self.depth + 1)]

    def multipliers(self, t, state: dict) -> dict[str, Array]:
        """m_{ℓ−1} m_ℓ ξ_ℓ for the weights of the L + 1 layers (the features' speeds follow from them)."""
        names = self._weight_names()
        return dict(zip(names, self._multipliers([state[name] for name in names])))

    def _signals(self, thetas: list, weights: list, data: Dataset):
        """Outputs f, the backward signals δ_{L+1} (n, k) and δ_1..δ_L (each (m_ℓ, n)), h_ℓ(θ_ℓ) and h_ℓ'(θ_ℓ)."""
        f = self._output(thetas[-1], weights[-1])
        delta_out = jax.grad(lambda f: jnp.mean(losses.get(self.loss)(f, data.y)))(f)
        deltas, hs, slopes = [None] * self.depth, [None] * self.depth, [None] * self.depth
        back = weights[-1] @ delta_out.T
        for ell in reversed(range(self.depth)):
            # h(θ) and h'(θ), as the tangent of the element-wise activation along ones.
            hs[ell], slopes[ell] = jax.jvp(self.activation(ell), (thetas[ell],), (jnp.ones_like(thetas[ell]),))
            deltas[ell] = slopes[ell] * back
            if self.skip and ell < self.depth - 1:
                deltas[ell] = deltas[ell] + deltas[ell + 1]
            if ell > 0:
                back = weights[ell] @ deltas[ell] / deltas[ell].shape[0]
        return f, delta_out, deltas, hs, slopes

    def _velocities(self, thetas: list, weights: list, data: Dataset) -> tuple[list, list]:
        """∂_t w_1..w_{L+1} and ∂_t θ_1..θ_L, by hand-written backpropagation through the features `thetas`."""
        # Written by hand for form "features" (and the feature speeds of the observables): ∂_t θ is not a gradient
        # but the chain rule through ∂_t w, and the weights' signals come from the state's features, not from a
        # forward pass, so autodiff of `energy` gives neither. benchmarks/deep_flows.py part 1: FeatureDNN(form=
        # "features") 1.26× / 1.33× a bare jax.grad (float64 / float32), the same velocity written by hand in plain
        # JAX 1.25× / 1.40× (row "features-form velocity written by hand"; benchmarks/RESULTS.md, "Deep flows").
        _, delta_out, deltas, hs, slopes = self._signals(thetas, weights, data)
        data_grads = [deltas[0] @ data.X, *(hs[ell] @ deltas[ell + 1].T for ell in range(self.depth - 1)), hs[-1] @ delta_out]
        reg_grads = jax.grad(self.regulariser)(weights, self.smoothing)
        rates = self._multipliers(weights)
        xi = self._rates(weights[0].dtype)
        # In the state's dtype, also where the data are wider (a float32 state under jax_enable_x64).
        dw = [-(xi[ell] * g + rates[ell] * r).astype(w.dtype) for ell, (g, r, w) in enumerate(zip(data_grads, reg_grads, weights))]
        dtheta = [(dw[0] @ data.X.T).astype(thetas[0].dtype)]
        for ell in range(self.depth - 1):
            hdot = slopes[ell] * dtheta[ell]
            step = (self._weight_velocity_term(ell, dw, deltas, hs, thetas, xi) +
                    weights[ell + 1].T @ hdot / hdot.shape[0]).astype(thetas[ell].dtype)
            dtheta.append(dtheta[ell] + step if self.skip else step)
        return dw, dtheta

    def _weight_velocity_term(self, ell: int, dw: list, deltas: list, hs: list, thetas: list, xi):
        """(1/m_ℓ) Σ_i ∂_t w_{ℓ+1,i·} h(θ_{ℓ,i}), the part of ∂_t θ_{ℓ+1} moved by the weights (0-based `ell`).

        With weight decay it is −ξ (K_ℓ δ_{ℓ+1} + λ (θ_{ℓ+1} − s θ_ℓ)): the kernel K_ℓ = (1/m_ℓ) Σ_i h h^T costs
        (m_ℓ + m_{ℓ+1}) n² against m_ℓ m_{ℓ+1} n for the product, and is used where that is cheaper. The decay term
        takes θ_{ℓ+1} − s θ_ℓ from the state, equal to (1/m_ℓ) w_{ℓ+1}^T h(θ_ℓ) on the consistency constraint; off it,
        it pulls the residual back at rate ξλ instead of leaving it as it is.
        """
        h = hs[ell]
        (m, n), m_next = h.shape, deltas[ell + 1].shape[0]
        if self.penalty != "weight_decay" or n * (m + m_next) >= m * m_next:
            return dw[ell + 1].T @ h / m
        lam = self.l2.astype(h.dtype)
        increment = thetas[ell + 1] - thetas[ell] if self.skip else thetas[ell + 1]
        return -xi[ell + 1] * (deltas[ell + 1] @ (h.T @ h / m) + lam * increment)

    def energy(self, state: dict, data: Dataset, smoothing=None):
        """J = E_i ℓ(f_i, y_i) + R(w), with f from the state's last-layer features in form "features"; with
        `smoothing` ε, R's |w| → √(w² + ε²) − ε (the J whose gradient the velocity follows)."""
        weights, thetas = self._unpack(state, data)
        f = self._output(thetas[-1], weights[-1])
        return jnp.mean(losses.get(self.loss)(f, data.y)) + self.regulariser(weights, smoothing)

    def velocity(self, t, state: dict, data: Dataset) -> dict:
        """Form "weights": ∂_t w_ℓ = −m_{ℓ−1} m_ℓ ξ_ℓ ∂J/∂w_ℓ, the gradient of `energy` (with `smoothing`) by autodiff,
        in the state's dtype. Form "features": weights and features moved together (class docstring, `_velocities`)."""
        names = self._weight_names()
        if self.form == "weights":  # not the base's velocity: J's gradient with the smoothed |w|
            grads = jax.grad(self.energy)(state, data, self.smoothing)
            rates = self.multipliers(t, state)
            return {name: -(rates[name] * grads[name]).astype(state[name].dtype) for name in names}
        weights, thetas = self._unpack(state, data)
        dw, dtheta = self._velocities(thetas, weights, data)
        return dict(zip(names, dw)) | dict(zip(self._feature_names(), dtheta))

    def consistency(self, state: dict, data: Dataset) -> Array:
        """The distance of the features from the network's forward pass, per layer ℓ = 1..L, as a root mean square
        over the units j and training points i (so that widths compare):

            r_ℓ = (mean_{j,i} |θ_{ℓ,j}(x_i) − s θ_{ℓ−1,j}(x_i) − (1/m) Σ_k w_{ℓ,kj} h(θ_{ℓ−1,k}(x_i))|²)^{1/2},

        with θ_0 ≡ X (the first layer's reference is X w_1)."""
        weights, thetas = self._unpack(state, data)
        implied = [weights[0] @ data.X.T] + [self._propagate(ell, thetas[ell], weights[ell + 1]) for ell in range(self.depth - 1)]
        return jnp.stack([jnp.sqrt(jnp.mean((theta - ref) ** 2)) for theta, ref in zip(thetas, implied)])

    def initial_state(self, init, key, shapes: dict, data: Dataset) -> dict:
        """Weights from `init` — `measures.DiverseFeatures` (minimum-norm, diverse features) or a layered measure
        such as `measures.IIDLayers` — and, in form "features", the features by a forward pass."""
        names = self._weight_names()
        if isinstance(init, DiverseFeatures):
            weights = self._minimum_norm_weights(init, key, [shapes[name] for name in names], data)
        else:
            sampled = super().initial_state(init, key, {name: shapes[name] for name in names}, data)
            weights = [sampled[name] for name in names]
        state = dict(zip(names, weights))
        if self.form == "features":
            state.update(zip(self._feature_names(), self.forward(weights, data.X)[0]))
        return state

    def _minimum_norm_weights(self, init: DiverseFeatures, key, shapes: list, data: Dataset) -> list:
        keys = jax.random.split(key, self.depth + 1)
        dtype = data.X.dtype
        first_std = 1.0 / np.sqrt(data.d) if init.first_std is None else init.first_std.astype(dtype)
        weights = [first_std * jax.random.normal(keys[0], shapes[0], dtype)]
        theta = weights[0] @ data.X.T
        for ell in range(self.depth - 1):
            m, n = theta.shape
            if m < n:
                raise ValueError(
                    f"measures.DiverseFeatures needs m ≥ n: at least as many units as training points in every hidden "
                    f"layer that feeds another, but layer {ell + 1} has m = {m} units for n = {n} training points. Use "
                    f"wider layers, fewer points, or measures.IIDLayers.")
            h = self.activation(ell)(theta)
            gram = h.T @ h / m
            eigenvalues, vectors = jnp.linalg.eigh(gram)
            if is_concrete(eigenvalues):
                condition = float(eigenvalues[-1] / eigenvalues[0]) if float(eigenvalues[0]) > 0 else np.inf
                if condition > 1.0 / np.sqrt(np.finfo(dtype).eps):
                    warnings.warn(
                        f"K_{ell + 1}, the Gram matrix of layer {ell + 1}'s features, is ill-conditioned (condition number "
                        f"{condition:.3g}): the minimum-norm weights reach their target features only to about "
                        f"{condition * np.finfo(dtype).eps:.1g} relative accuracy.", RuntimeWarning, stacklevel=2)
            z = jax.random.normal(keys[ell + 1], (shapes[ell + 1][1], n), dtype)
            target = (z * jnp.sqrt(jnp.clip(eigenvalues, 0.0))) @ vectors.T  # rows ~ N(0, K_ℓ)
            increment = target - theta if self.skip else target
            weights.append(h @ ((vectors / eigenvalues) @ (vectors.T @ increment.T)))
            theta = target
        weights.append(init.output_std.astype(dtype) * jax.random.normal(keys[-1], shapes[-1], dtype))
        return weights

    def observables(self, t, state: dict, data: Dataset) -> dict[str, Array]:
        weights, thetas = self._unpack(state, data)
        f = self._output(thetas[-1], weights[-1])
        ell = losses.get(self.loss)
        dw, dtheta = self._velocities(thetas, weights, data)
        hs = [self.activation(i)(theta) for i, theta in enumerate(thetas)]
        grams = [h.T @ h / h.shape[0] for h in hs]
        spectra = jnp.stack([jnp.linalg.eigvalsh(K)[::-1] for K in grams])
        out = {
            "loss": jnp.mean(ell(f, data.y)),
            "risk": self.energy(state, data),
            "prediction": f,
            "gram_eigenvalues": spectra,
            "effective_rank": jnp.sum(spectra, axis=1) ** 2 / jnp.sum(spectra**2, axis=1),
            "unit_spread": jnp.stack([jnp.mean(jnp.var(theta, axis=0)) for theta in thetas]),
            "weight_speed": jnp.stack([jnp.sqrt(2.0 * _mean_field_half_norm(v, i, self.depth)) for i, v in enumerate(dw)]),
            "feature_speed": jnp.stack([jnp.sqrt(jnp.sum(v**2) / v.shape[0]) for v in dtheta]),
        }
        if self.form == "features":
            out["consistency_residual"] = self.consistency(state, data)
        if data.X_test is not None:
            out["test_loss"] = jnp.mean(ell(self.forward(weights, data.X_test)[1], data.y_test))
        return out

    def describe(self, data: Dataset) -> dict:
        return {
            "loss": ((), {"long_name": f"training loss E_i ℓ(f_i, y_i), ℓ = {self.loss}", "units": "1"}),
            "risk": ((), {"long_name": "objective J: training loss plus regulariser", "units": "1"}),
            "prediction": (("sample", "output"), {"long_name": "network output f on the training points", "units": "1"}),
            "gram_eigenvalues": (("layer", "eigen"), {"long_name": "eigenvalues of K_ℓ = (1/m) Σ h(θ) h(θ)^T, descending",
                                                      "units": "1"}),
            "effective_rank": (("layer",), {"long_name": "effective rank (tr K_ℓ)² / tr K_ℓ²", "units": "1"}),
            "unit_spread": (("layer",), {"long_name": "E_i Var_j θ_{ℓ,j}(x_i): spread of features across units", "units": "1"}),
            "weight_speed": (("weight_layer",), {"long_name": "stationarity residual ‖∂_t w_ℓ‖ (mean-field L² norm)",
                                                  "units": "1"}),
            "feature_speed": (("layer",), {"long_name": "stationarity residual ‖∂_t θ_ℓ‖ (L²(p_ℓ) norm)", "units": "1"}),
            "consistency_residual": (("layer",), {"long_name": "RMS over units and training points of "
                                                               "θ_ℓ − s θ_{ℓ−1} − (1/m) Σ w_ℓ h(θ_{ℓ−1})", "units": "1"}),
            "test_loss": ((), {"long_name": f"test loss, ℓ = {self.loss}", "units": "1"}),
        }

    def describe_state(self, widths, data) -> dict:
        units = [f"unit_{ell}" for ell in range(1, self.depth + 1)]
        dims = [("unit_1", "input"), *zip(units[:-1], units[1:]), (units[-1], "output")]
        out = {name: (d, {"long_name": f"weights of layer {i}", "units": "1"}) for i, (name, d) in
               enumerate(zip(self._weight_names(), dims), start=1)}
        if self.form == "features":
            out.update({name: ((unit, "sample"), {"long_name": f"features θ_{i} (pre-activations on the training points)",
                                                   "units": "1"})
                        for i, (name, unit) in enumerate(zip(self._feature_names(), units), start=1)})
        return out

    def dimension_sizes(self, widths, data) -> dict[str, int]:
        return super().dimension_sizes(widths, data) | {"weight_layer": self.depth + 1, "eigen": data.n}


def _abs(w, smoothing):
    """|w|, or √(w² + ε²) − ε with a gradient that is 0 (not NaN) at w = 0 when ε = 0."""
    if smoothing is None:
        return jnp.abs(w)
    r = w**2 + smoothing**2
    return jnp.where(r > 0, jnp.sqrt(jnp.where(r > 0, r, 1.0)), 0.0) - smoothing


def _mean_field_half_norm(w, ell: int, depth: int):
    """½ Σ |w|² divided by the number of units the layer connects (its mean-field squared norm / 2)."""
    return 0.5 * jnp.sum(w**2) / (w.shape[0] * (w.shape[1] if 0 < ell < depth else 1))
