from .._checks import as_float_array
from ._base import AbstractMeasure


class DiverseFeatures(AbstractMeasure):
    """The minimum-norm initialisation of a feature flow (docs/flows/feature-flows.md), which avoids the degeneracy of i.i.d. middle
    weights: w_1 ~ N(0, first_std² I) (default first_std² = 1/d), then layer by layer target features
    θ_{ℓ+1,j} ~ N(0, K_ℓ), K_ℓ = (1/m_ℓ) Σ_i h(θ_{ℓ,i}) h(θ_{ℓ,i})ᵀ, reached by the minimum-norm weights

        w_{ℓ+1,ij} = h(θ_{ℓ,i})ᵀ K_ℓ^{−1} (θ_{ℓ+1,j} − s θ_{ℓ,j})      (s = 1 for a Res-Net's skip, else 0),

    so that the consistency θ_{ℓ+1,j} = s θ_{ℓ,j} + (1/m_ℓ) Σ_i w_{ℓ+1,ij} h(θ_{ℓ,i}) holds exactly. K_ℓ is n × n
    (n training points): it is invertible only with m_ℓ ≥ n units. Output weights are N(0, output_std²).

    Built by the flow (`flows.FeatureDNN`, `flows.FeatureResNet`), since the features depend on its architecture.

    **Arguments:**

    - `output_std`: standard deviation of the output weights (default 0: the network starts at f = 0).
    - `first_std`: standard deviation of the first-layer weights (default 1/√d).
    """

    output_std: object
    first_std: object

    def __init__(self, output_std=0.0, first_std=None):
        self.output_std = as_float_array(output_std, "output_std", "DiverseFeatures", nonnegative=True)
        self.first_std = None if first_std is None else as_float_array(first_std, "first_std", "DiverseFeatures", nonnegative=True)

    def sample(self, key, n, groups):
        raise TypeError("DiverseFeatures is an initial measure for feature flows (flows.FeatureDNN, flows.FeatureResNet), "
                        "solved by solvers.Units.")
