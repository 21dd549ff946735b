"""Training data of a flow."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _as_matrix(name: str, value, n: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a numeric array, got {type(value).__name__}.") from e
    if array.ndim == 1 and name.startswith("y"):
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d){' or (n,)' if name.startswith('y') else ''}, got {array.shape}.")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"`{name}` has {array.shape[0]} rows but the inputs have {n}.")
    if array.shape[0] == 0:
        raise ValueError(f"`{name}` has no rows.")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"`{name}` contains {int(bad.sum())} NaN or infinite values (first at row {int(np.argwhere(bad)[0, 0])}).")
    return array


class Dataset(eqx.Module):
    """Training (and optional test) points (x_i, y_i), i = 1..n, x_i ∈ R^d, y_i ∈ R^k.

    **Arguments:**

    - `X`: inputs, shape (n, d).
    - `y`: targets, shape (n,) or (n, k); stored as (n, k). For the logistic loss, labels in {-1, +1}.
    - `X_test`, `y_test`: optional held-out points of the same widths, reported as `test_loss`.
    - `name`: a label recorded in results.

    Shapes are checked and NaN or infinite values rejected at construction, before anything is compiled.
    """

    X: Float[Array, "n d"]
    y: Float[Array, "n k"]
    X_test: Float[Array, "n_test d"] | None = None
    y_test: Float[Array, "n_test k"] | None = None
    name: str = eqx.field(static=True, default="data")

    def __init__(self, X, y, X_test=None, y_test=None, name: str = "data"):
        X_np = _as_matrix("X", X)
        y_np = _as_matrix("y", y, X_np.shape[0])
        self.X = jnp.asarray(X_np)
        self.y = jnp.asarray(y_np)
        if (X_test is None) != (y_test is None):
            raise ValueError("`X_test` and `y_test` must be given together.")
        if X_test is not None:
            Xt = _as_matrix("X_test", X_test)
            yt = _as_matrix("y_test", y_test, Xt.shape[0])
            if Xt.shape[1] != X_np.shape[1]:
                raise ValueError(f"`X_test` has {Xt.shape[1]} columns but `X` has {X_np.shape[1]}.")
            if yt.shape[1] != y_np.shape[1]:
                raise ValueError(f"`y_test` has {yt.shape[1]} outputs but `y` has {y_np.shape[1]}.")
            self.X_test, self.y_test = jnp.asarray(Xt), jnp.asarray(yt)
        else:
            self.X_test = self.y_test = None
        self.name = str(name)

    @property
    def n(self) -> int:
        """Number of training points."""
        return self.X.shape[0]

    @property
    def d(self) -> int:
        """Input dimension."""
        return self.X.shape[1]

    @property
    def k(self) -> int:
        """Output dimension."""
        return self.y.shape[1]
