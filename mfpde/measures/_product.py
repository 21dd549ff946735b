import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ._base import AbstractMeasure, split_groups


class Product(AbstractMeasure):
    """Independent groups: ρ₀ = ⊗_g ρ₀^g, one measure per coordinate group of the flow.

    **Arguments:**

    - `**groups`: a measure for each group name of the flow, e.g. `Product(u=Gaussian(std=0.0), w=Gaussian())`.
    """

    groups: dict[str, AbstractMeasure]

    def __init__(self, **groups: AbstractMeasure):
        if not groups:
            raise ValueError("Product needs at least one group, e.g. Product(u=Gaussian(), w=Gaussian()).")
        for name, measure in groups.items():
            if not isinstance(measure, AbstractMeasure):
                raise TypeError(f"`{name}` of Product must be a measure, got {type(measure).__name__}.")
        self.groups = dict(groups)

    def _check(self, groups: dict[str, int]):
        missing, extra = set(groups) - set(self.groups), set(self.groups) - set(groups)
        if missing or extra:
            raise ValueError(f"Product has groups {sorted(self.groups)} but the flow has {list(groups)}.")

    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Array]:
        self._check(groups)
        keys = jax.random.split(key, len(groups))
        return {name: self.groups[name].sample(k, n, {name: size})[name] for k, (name, size) in zip(keys, groups.items())}

    def log_density(self, theta, groups):
        self._check(groups)
        parts = split_groups(theta, groups)
        return sum(self.groups[name].log_density(parts[name], {name: size}) for name, size in groups.items())
