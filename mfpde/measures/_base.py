import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractMeasure(eqx.Module):
    """A probability measure ρ₀ over the coordinates θ of one neuron (or feature).

    A flow describes θ as named *groups* of coordinates, e.g. `{"u": 1, "w": d, "b": 1}` for a two-layer network;
    a measure draws particles for those groups.
    """

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Float[Array, "n _"]]:
        """Draw `n` particles: a dict from each group name to an array of shape (n, size of the group)."""

    def log_density(self, theta: Float[Array, "... p"], groups: dict[str, int]) -> Float[Array, "..."]:
        """log ρ₀(θ) at points θ whose last axis runs over all coordinates, groups in order."""
        raise NotImplementedError(f"{type(self).__name__} has no density.")


def split_groups(theta: Float[Array, "... p"], groups: dict[str, int]) -> dict[str, Array]:
    """Split the last axis of `theta` into the named groups, in order."""
    out, start = {}, 0
    for name, size in groups.items():
        out[name] = theta[..., start : start + size]
        start += size
    return out


def total_size(groups: dict[str, int]) -> int:
    return sum(groups.values())


def coordinate_vector(value, p: int, name: str, argument: str):
    """`value` as one entry per coordinate, shape (p,): a scalar is broadcast; another shape is a ValueError naming
    `argument` of `name`."""
    value = jnp.asarray(value)
    if value.ndim == 0:
        return jnp.broadcast_to(value, (p,))
    if value.shape != (p,):
        raise ValueError(f"`{argument}` of {name} must be a scalar or have one entry per coordinate ({p}), got shape {value.shape}.")
    return value
