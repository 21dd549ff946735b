"""Infinite data: a distribution of (x, y) instead of a finite training set."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from . import activations
from ._checks import is_concrete
from ._dataset import Dataset


def _matrix(name: str, value, shape_hint: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a numeric array, got {type(value).__name__}.") from e
    if array.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {shape_hint}, got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return array


class Teacher(eqx.Module):
    """A finite teacher network, f*(x) = Σ_t a_t σ*(v_t · x + b_t).

    **Arguments:**

    - `weights`: the output weights a_t, shape (M, k) (or (M,) for k = 1).
    - `directions`: the input weights v_t, shape (M, d).
    - `biases`: b_t, shape (M,); zeros when omitted.
    - `activation`: σ*, a name of `mfpde.activations`.
    """

    weights: Float[Array, "M k"]
    directions: Float[Array, "M d"]
    biases: Float[Array, " M"]
    activation: str = eqx.field(static=True)
    centred: bool = eqx.field(static=True)

    def __init__(self, weights, directions, biases=None, activation: str = "tanh"):
        activations.get(activation)
        v = _matrix("directions", directions, "(M, d)", 2)
        a = np.asarray(weights, dtype=float)
        a = _matrix("weights", a[:, None] if a.ndim == 1 else a, "(M, k)", 2)
        if a.shape[0] != v.shape[0]:
            raise ValueError(f"Teacher `weights` has {a.shape[0]} neurons but `directions` has {v.shape[0]}.")
        b = np.zeros(v.shape[0]) if biases is None else _matrix("biases", biases, "(M,)", 1)
        if b.shape[0] != v.shape[0]:
            raise ValueError(f"Teacher `biases` has {b.shape[0]} entries but `directions` has {v.shape[0]} neurons.")
        self.weights, self.directions, self.biases = jnp.asarray(a), jnp.asarray(v), jnp.asarray(b)
        self.activation = activation
        self.centred = not np.any(b)

    @property
    def d(self) -> int:
        return self.directions.shape[1]

    @property
    def k(self) -> int:
        return self.weights.shape[1]

    def __call__(self, X: Float[Array, "n d"]) -> Float[Array, "n k"]:
        """f*(x_i) at the rows of `X`."""
        return activations.get(self.activation)(X @ self.directions.T + self.biases) @ self.weights


class Population(eqx.Module):
    """The data distribution of a population (infinite-data) risk: a Gaussian mixture with labels

        x ~ Σ_c π_c N(μ_c, Σ_c),    y = y_c + f*(x) + noise · ξ   given the component c,   ξ ~ N(0, I_k),

    where y_c is a constant label of component c and f* an optional `Teacher`. With squared loss the risk of a
    two-layer network is a quadratic form in ρ, R(ρ) = R₀ + ∫V dρ + ½∬U dρ dρ, evaluated from Gaussian kernels in
    closed form or by quadrature (docs/flows/population.md). Use it wherever an `mfpde.Dataset` goes.

    **Arguments:**

    - `means`: μ_c, shape (C, d).
    - `covariances`: Σ_c, shape (C, d, d), symmetric positive definite; identity matrices when omitted.
    - `weights`: mixture weights π_c ≥ 0 summing to 1; uniform when omitted.
    - `labels`: y_c, shape (C, k) or (C,); zeros when omitted.
    - `teacher`: a `Teacher` added to the labels, or None.
    - `noise`: standard deviation of the label noise (it adds k·noise²/2 to the risk).
    - `quadrature`: Gauss–Hermite order for activations without a closed-form kernel (tanh, sigmoid, softplus);
      None accepts only the closed forms.
    - `name`: a label recorded in results.
    """

    means: Float[Array, "C d"]
    covariances: Float[Array, "C d d"]
    cholesky: Float[Array, "C d d"]
    weights: Float[Array, " C"]
    labels: Float[Array, "C k"]
    teacher: Teacher | None
    noise: Float[Array, ""]
    quadrature: int | None = eqx.field(static=True)
    centred: bool = eqx.field(static=True)
    scales: tuple[float, ...] | None = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(self, means, covariances=None, weights=None, labels=None, teacher: Teacher | None = None,
                 noise: float = 0.0, quadrature: int | None = None, name: str = "population"):
        mu = _matrix("means", means, "(C, d)", 2)
        C, d = mu.shape
        cov = np.broadcast_to(np.eye(d), (C, d, d)) if covariances is None else _matrix("covariances", covariances, "(C, d, d)", 3)
        if cov.shape != (C, d, d):
            raise ValueError(f"`covariances` must have shape {(C, d, d)} to match `means`, got {cov.shape}.")
        chol = np.empty_like(cov)
        for c in range(C):
            if not np.allclose(cov[c], cov[c].T, rtol=1e-12, atol=1e-14):
                raise ValueError(f"`covariances[{c}]` is not symmetric.")
            try:
                chol[c] = np.linalg.cholesky(cov[c])
            except np.linalg.LinAlgError:
                low = float(np.linalg.eigvalsh(cov[c])[0])
                raise ValueError(f"`covariances[{c}]` is not positive definite (smallest eigenvalue {low:.3g}).") from None
        pi = np.full(C, 1.0 / C) if weights is None else _matrix("weights", weights, "(C,)", 1)
        if pi.shape != (C,) or np.any(pi < 0) or abs(pi.sum() - 1) > 1e-9:
            raise ValueError(f"`weights` must be {C} non-negative numbers summing to 1, got {pi.tolist()}.")
        if teacher is not None and not isinstance(teacher, Teacher):
            raise TypeError(f"`teacher` must be an mfpde.datasets.Teacher or None, got {type(teacher).__name__}.")
        if teacher is not None and teacher.d != d:
            raise ValueError(f"`teacher` has input dimension {teacher.d} but the inputs have d = {d}.")
        k = teacher.k if teacher is not None else 1
        if labels is None:
            y = np.zeros((C, k))
        else:
            y = np.asarray(labels, dtype=float)
            y = _matrix("labels", y[:, None] if y.ndim == 1 else y, "(C, k) or (C,)", 2)
            if y.shape[0] != C:
                raise ValueError(f"`labels` has {y.shape[0]} rows but there are {C} components.")
            if teacher is not None and y.shape[1] != teacher.k:
                raise ValueError(f"`labels` have {y.shape[1]} outputs but `teacher` has k = {teacher.k}.")
        if not np.isfinite(noise) or noise < 0:
            raise ValueError(f"`noise` must be a non-negative number, got {noise!r}.")
        if quadrature is not None and (not isinstance(quadrature, int) or isinstance(quadrature, bool) or quadrature < 2):
            raise ValueError(f"`quadrature` must be an integer order ≥ 2 or None, got {quadrature!r}.")
        self.means, self.covariances, self.cholesky = jnp.asarray(mu), jnp.asarray(cov), jnp.asarray(chol)
        self.weights, self.labels, self.teacher = jnp.asarray(pi), jnp.asarray(y), teacher
        self.noise = jnp.asarray(float(noise))
        self.quadrature, self.name = quadrature, str(name)
        self.centred = is_concrete(self.means) and not np.any(mu)
        isotropic = is_concrete(self.covariances) and all(np.array_equal(cov[c], cov[c, 0, 0] * np.eye(d)) for c in range(C))
        self.scales = tuple(float(np.sqrt(cov[c, 0, 0])) for c in range(C)) if isotropic else None

    @property
    def d(self) -> int:
        """Input dimension."""
        return self.means.shape[1]

    @property
    def k(self) -> int:
        """Output dimension."""
        return self.labels.shape[1]

    @property
    def components(self) -> int:
        """Number of mixture components C."""
        return self.means.shape[0]

    def target(self, X: Float[Array, "n d"], component: Array) -> Float[Array, "n k"]:
        """The noiseless label y_c + f*(x) of inputs `X` drawn from components `component`."""
        y = self.labels[component]
        return y if self.teacher is None else y + self.teacher(X)

    def sample(self, key: PRNGKeyArray | int, n: int, *, n_test: int = 0) -> Dataset:
        """A finite training set of `n` independent draws (and `n_test` held-out draws with noiseless labels)."""
        for name, value, least in (("n", n, 1), ("n_test", n_test, 0)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` must be an integer ≥ {least}, got {value!r}.")
        key = jax.random.key(key) if isinstance(key, int) else key
        train, test = jax.random.split(key)

        def draw(key, n, noisy):
            kc, kx, kn = jax.random.split(key, 3)
            c = jax.random.choice(kc, self.components, (n,), p=self.weights)
            xi = jax.random.normal(kx, (n, self.d), self.means.dtype)
            X = self.means[c] + jnp.einsum("nij,nj->ni", self.cholesky[c], xi)
            y = self.target(X, c)
            return X, y + self.noise * jax.random.normal(kn, y.shape, y.dtype) if noisy else y

        X, y = draw(train, n, True)
        held_out = dict(zip(("X_test", "y_test"), draw(test, n_test, False))) if n_test else {}
        return Dataset(X, y, **held_out, name=f"{self.name} (n = {n})")
