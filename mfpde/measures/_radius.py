import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import as_float_array, is_concrete
from ._base import AbstractMeasure, split_groups, total_size


class GaussianRadius(AbstractMeasure):
    """The law of the radius r = |w| of a Gaussian vector w ~ N(0, std² I_dim): std times a chi variable with `dim`
    degrees of freedom, density

        ρ₀(r) = 2 r^{dim−1} exp(−r²/(2 std²)) / ((2 std²)^{dim/2} Γ(dim/2)),   r ≥ 0.

    The initial measure of a radial flow (`flows.RadialTwoLayer`) whose full network starts from
    `measures.Gaussian(std=std)` in its `dim` input weights. For a flow with one coordinate (`r`), or as the `r`
    factor of a `measures.Product`.

    **Arguments:**

    - `dim`: the dimension d of w (a positive integer).
    - `std`: the standard deviation of each coordinate of w (positive).
    """

    dim: int = eqx.field(static=True)
    std: Float[Array, ""]

    def __init__(self, dim: int, std=1.0):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"`dim` of GaussianRadius must be a positive integer, got {dim!r}.")
        self.dim = int(dim)
        self.std = as_float_array(std, "std", "GaussianRadius", nonnegative=True)
        if is_concrete(self.std) and (self.std.ndim != 0 or not float(self.std) > 0):
            raise ValueError(f"`std` of GaussianRadius must be a positive scalar, got {std!r}.")

    def _check(self, groups: dict[str, int]) -> None:
        if total_size(groups) != 1:
            raise ValueError(f"GaussianRadius is a measure of one coordinate (a radius); the flow has groups {groups}: "
                             f"use it as one factor of a measures.Product.")

    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Array]:
        self._check(groups)
        w = jax.random.normal(key, (n, self.dim), dtype=self.std.dtype)
        return split_groups(self.std * jnp.linalg.norm(w, axis=1, keepdims=True), groups)

    def log_density(self, theta, groups):
        self._check(groups)
        r = theta[..., 0]
        half = 0.5 * self.dim
        log = (math.log(2.0) + (self.dim - 1) * jnp.log(r) - 0.5 * (r / self.std) ** 2
               - half * jnp.log(2 * self.std**2) - math.lgamma(half))
        return jnp.where(r > 0, log, -jnp.inf)

    def cdf(self, r) -> np.ndarray:
        """P(radius ≤ r) = P(dim/2, r²/(2 std²)), the regularised lower incomplete gamma function."""
        r = np.maximum(np.asarray(r, dtype=float), 0.0)
        return scipy.special.gammainc(0.5 * self.dim, 0.5 * (r / float(self.std)) ** 2)
