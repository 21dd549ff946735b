"""Activation functions σ of the neurons, by name: a flow's `activation="tanh"` (or `activations=(...)`) is looked up
in `ACTIVATIONS`, which holds

- `"tanh"`: σ(z) = tanh z;
- `"relu"`: σ(z) = max(z, 0) (the velocity has kinks: the adaptive solver then picks Bosh3);
- `"sigmoid"`: σ(z) = 1 / (1 + e^{−z});
- `"erf"`: σ(z) = erf z;
- `"identity"`: σ(z) = z (a linear network);
- `"softplus"`: σ(z) = log(1 + e^z);
- `"step"`: σ(z) = 1 for z > 0, else 0 (Heaviside; zero gradient almost everywhere);
- `"sign"`: σ(z) = sign z (zero gradient almost everywhere).

`get(name)` returns one, with an error listing these names for an unknown one.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp


def identity(z):
    """σ(z) = z."""
    return z


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{−z})."""
    return jax.nn.sigmoid(z)


def softplus(z):
    """σ(z) = log(1 + e^z)."""
    return jax.nn.softplus(z)


def erf(z):
    """σ(z) = erf(z)."""
    return jsp.erf(z)


def step(z):
    """σ(z) = 1 for z > 0, else 0 (Heaviside). Its gradient is zero almost everywhere: w moves only under a
    `Population`, whose kernels are smooth in w."""
    return (z > 0).astype(jnp.result_type(z, float))


def sign(z):
    """σ(z) = sign(z) (zero gradient almost everywhere, like `step`)."""
    return jnp.sign(z)


ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": sigmoid,
    "erf": erf,
    "identity": identity,
    "softplus": softplus,
    "step": step,
    "sign": sign,
}


def get(name: str, argument: str = "activation") -> Callable:
    """The activation called `name`; a ValueError naming `argument` for an unknown one."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `{argument}` {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None
