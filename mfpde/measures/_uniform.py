import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import as_float_array
from ._base import AbstractMeasure, coordinate_vector, split_groups, total_size


class Uniform(AbstractMeasure):
    """Independent uniform coordinates: θ_c ~ U[low_c, high_c].

    **Arguments:**

    - `low`, `high`: scalars or one value per coordinate, `low < high`.
    """

    low: Float[Array, "..."]
    high: Float[Array, "..."]

    def __init__(self, low=-1.0, high=1.0):
        self.low = as_float_array(low, "low", "Uniform")
        self.high = as_float_array(high, "high", "Uniform")
        if not isinstance(self.high, jax.core.Tracer) and bool(jnp.any(self.high <= self.low)):
            raise ValueError(f"`high` of Uniform must exceed `low`, got low={low}, high={high}.")

    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Array]:
        p = total_size(groups)
        low = coordinate_vector(self.low, p, "Uniform", "low")
        high = coordinate_vector(self.high, p, "Uniform", "high")
        theta = jax.random.uniform(key, (n, p), dtype=low.dtype, minval=low, maxval=high)
        return split_groups(theta, groups)

    def log_density(self, theta, groups):
        p = total_size(groups)
        low = coordinate_vector(self.low, p, "Uniform", "low")
        high = coordinate_vector(self.high, p, "Uniform", "high")
        inside = jnp.all((theta >= low) & (theta <= high), axis=-1)
        return jnp.where(inside, -jnp.sum(jnp.log(high - low)), -jnp.inf)
