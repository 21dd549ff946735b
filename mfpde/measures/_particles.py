import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ._base import AbstractMeasure


class Particles(AbstractMeasure):
    """An explicit empirical measure Σ_j m_j δ_{θ_j} (m_j = 1/N unless `masses` are given), as arrays keyed by the
    flow's group names.

    **Arguments:**

    - `masses`: the masses m_j ≥ 0 of the particles, shape (N,), with a positive total (kept as given: a flow with
      birth and death may carry any total mass); None for 1/N each.
    - `**arrays`: for `flows.TwoLayer`, `u` of shape (N,) or (N, k), `w` of shape (N, d), `b` of shape (N,).

    Sampling returns these arrays unchanged (the key is unused), so a run is exactly reproducible.
    """

    arrays: dict[str, Array]
    masses: Array | None

    def __init__(self, masses=None, **arrays):
        if not arrays:
            raise ValueError("Particles needs arrays, e.g. Particles(u=u0, w=W0).")
        out, n = {}, None
        for name, value in arrays.items():
            a = np.asarray(value, dtype=float)
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2:
                raise ValueError(f"`{name}` of Particles must have shape (N,) or (N, size), got {a.shape}.")
            if n is not None and a.shape[0] != n:
                raise ValueError(f"`{name}` of Particles has {a.shape[0]} particles, the others {n}.")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"`{name}` of Particles contains NaN or infinite values.")
            n = a.shape[0]
            out[name] = jnp.asarray(a)
        self.arrays = out
        if masses is not None:
            m = np.asarray(masses, dtype=float)
            if m.shape != (n,):
                raise ValueError(f"`masses` of Particles must have shape ({n},), one per particle, got {m.shape}.")
            if not np.all(np.isfinite(m)) or np.any(m < 0):
                raise ValueError("`masses` of Particles must be finite and non-negative.")
            if m.sum() <= 0:
                raise ValueError("`masses` of Particles must have a positive total mass, got 0.")
            masses = jnp.asarray(m)
        self.masses = masses

    @property
    def n(self) -> int:
        """Number of particles."""
        return next(iter(self.arrays.values())).shape[0]

    def sample(self, key: PRNGKeyArray, n: int, groups: dict[str, int]) -> dict[str, Array]:
        if n != self.n:
            raise ValueError(f"`n` is {n} but the explicit Particles measure has {self.n} particles.")
        if set(groups) != set(self.arrays):
            raise ValueError(f"Particles has arrays {sorted(self.arrays)} but the flow has groups {list(groups)}.")
        for name, size in groups.items():
            if self.arrays[name].shape[1] != size:
                raise ValueError(f"`{name}` of Particles has {self.arrays[name].shape[1]} columns, the flow needs {size}.")
        return {name: self.arrays[name] for name in groups}
