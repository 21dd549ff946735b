import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from .. import activations
from .._dataset import Dataset


def _key(key):
    return jax.random.key(key) if isinstance(key, int) else key


def teacher(
    key: PRNGKeyArray | int,
    n: int = 256,
    d: int = 10,
    activation: str = "tanh",
    *,
    width: int = 4,
    k: int = 1,
    noise: float = 0.0,
    n_test: int = 0,
) -> Dataset:
    """A random teacher network and inputs x ~ N(0, I_d):

        y = (1/width) Σ_j a_j σ(v_j · x) + noise · ξ,   v_j ~ N(0, I_d / d),  a_j ~ N(0, I_k),  ξ ~ N(0, I_k).

    **Arguments:**

    - `key`: PRNG key or integer seed.
    - `n`, `d`: number of training points and input dimension.
    - `activation`: the teacher's activation (a name of `mfpde.activations`).
    - `width`: the teacher's number of neurons.
    - `k`: outputs.
    - `noise`: standard deviation of the label noise.
    - `n_test`: number of held-out points (noiseless labels), 0 for none.
    """
    for name, value, least in (("n", n, 1), ("d", d, 1), ("width", width, 1), ("k", k, 1), ("n_test", n_test, 0)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"`{name}` must be an integer ≥ {least}, got {value!r}.")
    if noise < 0:
        raise ValueError(f"`noise` must be non-negative, got {noise}.")
    sigma = activations.get(activation)
    kv, ka, kx, kn, kt = jax.random.split(_key(key), 5)
    v = jax.random.normal(kv, (width, d)) / jnp.sqrt(d)
    a = jax.random.normal(ka, (width, k))

    def f(x):
        return sigma(x @ v.T) @ a / width

    X = jax.random.normal(kx, (n, d))
    y = f(X) + noise * jax.random.normal(kn, (n, k))
    test = {}
    if n_test:
        X_test = jax.random.normal(kt, (n_test, d))
        test = dict(X_test=X_test, y_test=f(X_test))
    return Dataset(X, y, **test, name=f"teacher({activation}, width={width}, d={d})")


TEACHER_2D_DIRECTIONS = ((2.0, 0.0), (1.0, 2.0), (2.0, 1.0), (0.0, 2.0))


def teacher_student_2d(key: PRNGKeyArray | int, n: int = 10_000, *, noise: float = 0.1, scale: float = 100.0,
                       n_test: int = 10_000) -> Dataset:
    """The 2-D teacher–student task (notebooks/teacher_student_2d.ipynb):

        f*(x) = ¼ Σ_{k=1..4} sigmoid(a_k · x),  a_k ∈ {(2,0), (1,2), (2,1), (0,2)},  x ~ N(0, scale² I₂),
        y = f*(x) + N(0, noise²);  test labels are noiseless.

    **Arguments:**

    - `key`: a PRNG key or an integer seed (inputs, label noise and test inputs come from three splits of it).
    - `n`: the number of training points.
    - `noise`: the standard deviation of the label noise.
    - `scale`: the standard deviation of each input coordinate.
    - `n_test`: the number of (noiseless) test points.
    """
    a = jnp.asarray(TEACHER_2D_DIRECTIONS)
    kx, kn, kt = jax.random.split(_key(key), 3)

    def f(x):
        return jnp.mean(jax.nn.sigmoid(x @ a.T), axis=1)

    X = scale * jax.random.normal(kx, (n, 2))
    X_test = scale * jax.random.normal(kt, (n_test, 2))
    y = f(X) + noise * jax.random.normal(kn, (n,))
    return Dataset(X, y, X_test=X_test, y_test=f(X_test), name="teacher_student_2d")
