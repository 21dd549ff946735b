"""Activation functions σ of the neurons, by name."""

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


ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": sigmoid,
    "erf": erf,
    "identity": identity,
    "softplus": softplus,
}


def get(name: str, argument: str = "activation") -> Callable:
    """The activation called `name`; a ValueError naming `argument` for an unknown one."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `{argument}` {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None
