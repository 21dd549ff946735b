import equinox as eqx
from jaxtyping import Array, Float

from .._checks import as_float_array
from ._features import AbstractFeatureFlow


class FeatureDNN(AbstractFeatureFlow):
    """The neural feature flow of a fully connected network (Fang, Lee, Yang and Zhang; docs/flows/feature-flows.md):
    features of layer ℓ + 1 are averages over the units of layer ℓ, θ_{ℓ+1,j} = (1/m_ℓ) Σ_i w_{ℓ+1,ij} h(θ_{ℓ,i}).
    Equations, forms and observables in `AbstractFeatureFlow`. Solved by `solvers.Units(n=(m_1, …, m_L))`;
    start it from `measures.DiverseFeatures` (minimum-norm, diverse features; needs m_ℓ ≥ n) or `measures.IIDLayers`
    (i.i.d. weights, whose middle features degenerate to one as m → ∞).

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
        default=None, converter=lambda v: None if v is None else as_float_array(v, "rates", "FeatureDNN", nonnegative=True)
    )
    l2: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "l2", "FeatureDNN", nonnegative=True))
    penalty: str = eqx.field(static=True, default="weight_decay")
    smoothing: Float[Array, ""] = eqx.field(
        default=1e-3, converter=lambda v: as_float_array(v, "smoothing", "FeatureDNN", nonnegative=True)
    )
    loss: str = eqx.field(static=True, default="squared")
    temperature: Float[Array, ""] = eqx.field(default=0.0, converter=lambda v: as_float_array(v, "temperature", "FeatureDNN"))
    skip = False
