import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import as_float_array
from ._base import AbstractMeasure, coordinate_vector, split_groups, total_size


class Gaussian(AbstractMeasure):
    """Independent normal coordinates: θ_c ~ N(mean_c, std_c²).

    **Arguments:**

    - `mean`: a scalar, or one value per coordinate of θ (all groups, in the flow's order).
    - `std`: a non-negative scalar, or one value per coordinate. `std = 0` places every particle at `mean`.
    """

    mean: Float[Array, "..."]
    std: Float[Array, "..."]

    def __init__(self, mean=0.0, std=1.0):
        self.mean = as_float_array(mean, "mean", "Gaussian")
        self.std = as_float_array(std, "std", "Gaussian", nonnegative=True)

    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Array]:
        p = total_size(groups)
        mean = coordinate_vector(self.mean, p, "Gaussian", "mean")
        std = coordinate_vector(self.std, p, "Gaussian", "std")
        theta = mean + std * jax.random.normal(key, (n, p), dtype=mean.dtype)
        return split_groups(theta, groups)

    def log_density(self, theta, groups):
        p = total_size(groups)
        mean = coordinate_vector(self.mean, p, "Gaussian", "mean")
        std = coordinate_vector(self.std, p, "Gaussian", "std")
        z = (theta - mean) / std
        return jnp.sum(-0.5 * z**2 - jnp.log(std), axis=-1) - 0.5 * p * math.log(2 * math.pi)
