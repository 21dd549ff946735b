import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ._base import AbstractMeasure


class Layers(AbstractMeasure):
    """An explicit layered state: the weight matrices of a network, keyed by the flow's names (`w1`, `w2`, …),
    e.g. a trained network to continue from, or the support that `mfpde.certify` hands to `solvers.Convex`.
    Sampling returns these arrays unchanged (the key is unused).

    **Arguments:**

    - `**arrays`: the weight matrices, each two-dimensional.
    """

    arrays: dict[str, Array]

    def __init__(self, **arrays):
        if not arrays:
            raise ValueError("Layers needs arrays, e.g. Layers(w1=W1, w2=W2, w3=W3).")
        out = {}
        for name, value in arrays.items():
            a = np.asarray(value, dtype=float)
            if a.ndim != 2:
                raise ValueError(f"`{name}` of Layers must be a matrix, got shape {a.shape}.")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"`{name}` of Layers contains NaN or infinite values.")
            out[name] = jnp.asarray(a)
        self.arrays = out

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden widths: the number of rows of every matrix but the first."""
        names = sorted(self.arrays, key=lambda name: int(name[1:]) if name[1:].isdigit() else name)
        return tuple(self.arrays[name].shape[0] for name in names[1:])

    def sample(self, key: PRNGKeyArray, n, groups):
        raise TypeError("Layers is an initial measure for layered flows (e.g. flows.FeatureResNet), solved by "
                        "solvers.Units.")

    def sample_layers(self, key: PRNGKeyArray, shapes: dict[str, tuple[int, ...]]) -> dict[str, Array]:
        if set(shapes) != set(self.arrays):
            raise ValueError(f"Layers has arrays {sorted(self.arrays)} but the flow needs {list(shapes)}.")
        for name, shape in shapes.items():
            if self.arrays[name].shape != tuple(shape):
                raise ValueError(f"`{name}` of Layers has shape {self.arrays[name].shape}, the flow needs {tuple(shape)}.")
        return {name: self.arrays[name] for name in shapes}
