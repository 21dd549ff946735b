import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import as_float_array
from ._base import AbstractMeasure


class IIDLayers(AbstractMeasure):
    """A neuronal embedding with i.i.d. weights: every entry of layer ℓ is N(mean_ℓ, std_ℓ²), independently.

    Sampling is *coupled across widths*: entry (i, j) of a layer depends on (key, layer, i, j) only, so networks of
    widths N, 2N, 4N, … share their first units exactly — the setting of width-convergence studies. Row i has its own
    key and its entries are one draw along the row, whose first entries do not depend on its length under JAX's
    partitionable Threefry (the default, `jax_threefry_partitionable`); with that flag off, every entry gets its own
    key instead (the same coupling, other values, more memory).

    **Arguments:**

    - `std`: a scalar, or one value per layer of weights (w1, w2, …, wL).
    - `mean`: likewise (default 0).
    """

    std: Array
    mean: Array

    def __init__(self, std=1.0, mean=0.0):
        self.std = as_float_array(std, "std", "IIDLayers", nonnegative=True)
        self.mean = as_float_array(mean, "mean", "IIDLayers")

    def _per_layer(self, value, index, count, argument):
        if value.ndim == 0:
            return value
        if value.shape != (count,):
            raise ValueError(f"`{argument}` of IIDLayers must be a scalar or have one entry per layer ({count}).")
        return value[index]

    def sample(self, key: PRNGKeyArray, n, groups):
        raise TypeError("IIDLayers is an initial measure for layered flows (e.g. flows.Multilayer), solved by solvers.Units.")

    def sample_layers(self, key: PRNGKeyArray, shapes: dict[str, tuple[int, int]]) -> dict[str, Array]:
        """Weight matrices of the given shapes. Rows of `w1` and of the last layer are units; entries of middle layers
        are indexed by (unit of the previous layer, unit of this layer)."""
        out = {}
        for index, (name, (rows, cols)) in enumerate(shapes.items()):
            layer_key = jax.random.fold_in(key, index)
            row_keys = jax.vmap(lambda i: jax.random.fold_in(layer_key, i))(jnp.arange(rows))
            if jax.config.jax_threefry_partitionable:
                z = jax.vmap(lambda k: jax.random.normal(k, (cols,), self.std.dtype))(row_keys)
            else:
                entry_keys = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(cols)))(row_keys)
                z = jax.vmap(jax.vmap(lambda k: jax.random.normal(k, dtype=self.std.dtype)))(entry_keys)
            std = self._per_layer(self.std, index, len(shapes), "std")
            mean = self._per_layer(self.mean, index, len(shapes), "mean")
            out[name] = mean + std * z
        return out
