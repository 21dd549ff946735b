import math

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jaxtyping import Array, Float


def knn_entropy(x: Float[Array, "N p"], row_chunk: int = 512) -> Float[Array, ""]:
    """Kozachenko–Leonenko estimate of the differential entropy H = −∫ ρ log ρ from N samples of ρ in R^p:

        H ≈ ψ(N) − ψ(1) + log V_p + (p/N) Σ_j log ε_j

    with ε_j the distance from sample j to its nearest neighbour and V_p the volume of the unit ball.
    Consistent as N → ∞; its bias is O(N^{−1/p}). Memory O(chunk·N). Needs N ≥ 2: a single sample has no neighbour
    (its estimate would be +∞, and a free energy F = R − τH of −∞).
    """
    N, p = x.shape
    if N < 2:
        raise ValueError(f"The k-NN entropy estimate needs at least 2 samples, got {N}.")
    index = jnp.arange(N)

    def nearest(args):  # the squared distance from one sample to its nearest other sample
        row, i = args
        d2 = jnp.sum((row[None, :] - x) ** 2, axis=-1)
        return jnp.min(jnp.where(index == i, jnp.inf, d2))

    d2 = jax.lax.map(nearest, (x, index), batch_size=row_chunk)
    log_eps = 0.5 * jnp.log(jnp.maximum(d2, jnp.finfo(x.dtype).tiny))
    log_unit_ball = 0.5 * p * math.log(math.pi) - jsp.gammaln(0.5 * p + 1)
    return jsp.digamma(jnp.asarray(N, x.dtype)) - jsp.digamma(jnp.asarray(1.0, x.dtype)) + log_unit_ball + p * jnp.mean(log_eps)
