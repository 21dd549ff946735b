import equinox as eqx
from jaxtyping import Array, Float

from .._checks import as_float_array
from ._features import AbstractFeatureFlow


class FeatureResNet(AbstractFeatureFlow):
    """The neural feature flow of a residual network (docs/flows/feature-flows.md): every hidden layer has the same width m and unit j
    keeps its index through the skip connection, θ_{ℓ+1,j} = θ_{ℓ,j} + (1/m) Σ_i w_{ℓ+1,ij} h(θ_{ℓ,i}); the measure
    is over whole feature trajectories Θ_j = (θ_{1,j}, …, θ_{L,j}). Equations, forms and observables in
    `AbstractFeatureFlow`. Solved by `solvers.Units(n=(m,) * L)`. With zero-mean i.i.d. middle weights
    (`measures.IIDLayers`) every layer inherits the diversity of θ_1 — no degeneracy; `measures.DiverseFeatures`
    draws fresh diverse features per layer instead.

    **Arguments:**

    - `activations`: the activation h_ℓ of each hidden layer, ℓ = 1..L (names of `mfpde.activations`).
    - `form`: "weights" (weights as state, features by a forward pass) or "features" (features and weights as
      coupled state, with the consistency residual as an observable).
    - `rates`: learning-rate multipliers ξ_ℓ of the L + 1 weight layers (default 1; 0 freezes a layer).
    - `l2`: the regularisation strength λ ≥ 0.
    - `penalty`: "weight_decay" (the mean-field squared norm) or "convex" (the ℓ_{1,2} path norm of the convex
      reformulation, for comparisons with `solvers.Convex`).
    - `smoothing`: ε of the smoothed |w| in the velocity of the "convex" penalty.
    - `loss`: "squared" or "logistic".
    """

    activations: tuple[str, ...] = eqx.field(static=True, converter=tuple)
    form: str = eqx.field(static=True, default="weights")
    rates: Float[Array, " L1"] | None = eqx.field(
        default=None, converter=lambda v: None if v is None else as_float_array(v, "rates", "FeatureResNet", nonnegative=True)
    )
    l2: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "l2", "FeatureResNet", nonnegative=True))
    penalty: str = eqx.field(static=True, default="weight_decay")
    smoothing: Float[Array, ""] = eqx.field(
        default=1e-3, converter=lambda v: as_float_array(v, "smoothing", "FeatureResNet", nonnegative=True)
    )
    loss: str = eqx.field(static=True, default="squared")
    temperature: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "temperature", "FeatureResNet"))
    skip = True
